"""The SAINet /score endpoint served by LitServe (https://lightning.ai/docs/litserve), a mainstream
Python serving framework, doing the same job as `sainet serve` with the framework's own documented
dynamic batching (`LitAPI(max_batch_size=..., batch_timeout=...)`):

- the same artifact, graph choice and ONNX Runtime session (`service.inference.load_model`, with
  SAINET_PRECISION / SAINET_INTRA_OP_THREADS read by `service.settings.Settings` as the service does);
- the same request validation (`service.requests.RequestModels`: the service's pydantic ScoreRequest)
  and scenario check;
- the same Redis reads: one pipelined fetch per batch through `service.store.RedisFeatureStore`
  (on an event loop owned by the inference worker), a failed or slow fetch scoring the batch as
  cold starts marked degraded, as the service's batcher does;
- the same encoding and ONNX Runtime calls (`service.batcher.DynamicBatcher._infer`: width groups,
  `Artifact.encode`, `LoadedModel.run`);
- the same answer as POST /score: {"scores", "model": {"name", "version"}, "history_length",
  "cold_start", "degraded"}.

Nothing of the service is copied: a change there changes this server too. What differs is the
framework: LitServe's HTTP process (FastAPI + uvicorn) parses the JSON and hands each request to a
separate inference worker process through its queues, which gathers up to `max_batch_size` requests
for at most `batch_timeout` seconds, then calls `predict` on the batch.

    python loadtest/framework_compare/litserve_server.py --model-dir ARTIFACT_VERSION_DIR \\
        --redis-url redis://127.0.0.1:6379 --port 8100 [--max-batch-size 64] [--batch-timeout 0.002]

Health: GET /health answers 200 once the worker has loaded the model.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

import litserve as ls
from fastapi import HTTPException
from pydantic import ValidationError

from service.batcher import DynamicBatcher
from service.inference import load_model
from service.requests import RequestModels, ScoreInputs
from service.settings import Settings
from service.store import RedisFeatureStore, UserState

log = logging.getLogger(__name__)


class SainetScoreAPI(ls.LitAPI):
    def __init__(self, artifact_dir: Path, redis_url: str, max_batch_size: int, batch_timeout: float,
                 api_path: str = "/score"):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=api_path)
        self.artifact_dir, self.redis_url = Path(artifact_dir), redis_url

    def setup(self, device):
        settings = Settings()
        self.settings = settings
        self.model = load_model(self.artifact_dir, require_gpu=False, intra_op_threads=settings.intra_op_threads,
                                inter_op_threads=settings.inter_op_threads, precision=settings.precision)
        self.bodies = RequestModels.for_settings(settings)
        self.loop = asyncio.new_event_loop()
        self.redis_timeout = settings.redis_timeout_ms / 1000
        self.store = RedisFeatureStore(self.redis_url, self.model.artifact.history_length,
                                       prefix=settings.redis_prefix, timeout_seconds=self.redis_timeout,
                                       read_connections=settings.redis_read_connections,
                                       pool_timeout_seconds=settings.redis_pool_timeout_ms / 1000)
        log.info("serving %s/%s in %s on %s", self.model.name, self.model.version, self.model.precision,
                 self.model.provider)

    def decode_request(self, request: dict) -> ScoreInputs:
        try:
            body = self.bodies.score_request.model_validate(request)
        except ValidationError as error:
            raise HTTPException(422, [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                                      for e in error.errors(include_url=False, include_input=False)]) from None
        scenario = str(body.scenario)
        if scenario not in self.model.artifact.scenario_index:
            raise HTTPException(422, f"unknown scenario {scenario!r}; valid: {self.model.artifact.scenarios}")
        return ScoreInputs(str(body.user_id), scenario, [str(c) for c in body.candidates],
                           {k: str(v) for k, v in body.features.items()})

    def _fetch(self, jobs: list[ScoreInputs]) -> list[UserState]:
        """One pipelined Redis read for the batch; the whole batch degraded should it fail."""
        try:
            return self.loop.run_until_complete(asyncio.wait_for(
                self.store.fetch([j.user_id for j in jobs], self.model.artifact.history_length), self.redis_timeout))
        except Exception as error:  # Redis down or slow: cold starts, as the service does
            log.warning("feature store unavailable, scoring %d requests as cold start: %r", len(jobs), error)
            return [UserState(degraded=True) for _ in jobs]

    def predict(self, batch: list[ScoreInputs]) -> list[tuple]:
        states = self._fetch(batch)
        scores, history_lengths, _ = DynamicBatcher._infer(self.model, batch, states)
        return [(s, h, state.degraded) for s, h, state in zip(scores, history_lengths, states)]

    def encode_response(self, output: tuple) -> dict:
        scores, history_length, degraded = output
        return {"scores": scores.tolist(), "model": {"name": self.model.name, "version": self.model.version},
                "history_length": history_length, "cold_start": history_length == 0, "degraded": degraded}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="one artifact version directory")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--max-batch-size", type=int, default=64,
                        help="LitServe's max_batch_size (the service's SAINET_MAX_BATCH_REQUESTS is 64)")
    parser.add_argument("--batch-timeout", type=float, default=0.002,
                        help="LitServe's batch_timeout in seconds (the service's SAINET_MAX_WAIT_US is 2000)")
    parser.add_argument("--fast-queue", action=argparse.BooleanOptionalAction, default=True,
                        help="LitServe's documented ZeroMQ queue between the HTTP and worker processes "
                             "(faster than its default multiprocessing queues)")
    parser.add_argument("--cpu", type=int, help="pin the server (and the processes it starts) to one CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api = SainetScoreAPI(Path(args.model_dir), args.redis_url, args.max_batch_size, args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, fast_queue=args.fast_queue, timeout=30)
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, generate_client_file=False, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
