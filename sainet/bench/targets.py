"""The two reference servers `sainet bench` measures the service against, on the same HTTP stack
(FastAPI + uvicorn, the service's request model, validation, body limit and response model):

- `floor`: parses and validates the /score payload and answers C zeros (no Redis, no model): the
  most any /score server on this stack can do;
- `naive`: the same API with no batching and no ONNX Runtime: one Redis read and one PyTorch eager
  forward per request, on the event loop (what a first hand-rolled server does).

Run one with `python -m sainet.bench.targets --kind floor|naive --model-dir ARTIFACT_VERSION_DIR`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request

from service.app import RequestGuard, score_response
from service.errors import ServiceError
from service.http_errors import error_response
from service.requests import RequestModels
from service.settings import Settings


def _service_http(app: FastAPI, settings: Settings) -> RequestModels:
    """The service's own body guard, error answers and request models, on another app."""
    app.add_middleware(RequestGuard, max_bytes=settings.max_body_bytes, timeout_seconds=settings.body_timeout_seconds)
    app.add_exception_handler(ServiceError, lambda request, error: error_response(error))
    return RequestModels.for_settings(settings)


def create_floor_app(artifact_dir: Path, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    meta = json.loads((artifact_dir / "meta.json").read_text())
    scenarios = set(meta["scenarios"])
    name, version = meta["name"], str(meta["version"])
    app = FastAPI(title="framework floor")
    bodies = _service_http(app, settings)

    @app.post("/score")
    async def score(request: Request):
        _, _, candidates, _ = bodies.score(await request.body(), scenarios)
        return score_response([0.0] * len(candidates), name, version, 0, True, False)

    return app


def create_naive_app(artifact_dir: Path, redis_url: str, settings: Settings | None = None) -> FastAPI:
    import numpy as np
    import torch

    from model.batch import Batch
    from model.data.schema import FeatureSchema
    from model.models import build_model
    from service.artifact import Artifact
    from service.store import RedisFeatureStore

    settings = settings or Settings()
    artifact = Artifact(artifact_dir)
    checkpoint = torch.load(artifact_dir / artifact.meta["source_checkpoint"], map_location="cpu", weights_only=True)
    model = build_model(checkpoint["model_name"], FeatureSchema.from_dict(checkpoint["schema"]),
                        **checkpoint["model_config"])
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    torch.set_num_threads(1)
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["store"] = RedisFeatureStore(redis_url, artifact.history_length,
                                           timeout_seconds=settings.redis_timeout_ms / 1000)
        try:
            yield
        finally:
            await state["store"].close()

    app = FastAPI(title="naive PyTorch server", lifespan=lifespan)
    bodies = _service_http(app, settings)

    @app.post("/score")
    async def score(request: Request):
        user_id, scenario, candidates, features = bodies.score(await request.body(), artifact.scenario_index,
                                                                artifact.numeric_feature_names)
        (user,) = await state["store"].fetch([user_id], artifact.history_length)
        encoded = artifact.encode([scenario], [user.history], [{**user.features, **features}], [candidates])
        with torch.inference_mode():
            logits = model(Batch(*(torch.from_numpy(np.ascontiguousarray(encoded.inputs[name]))
                                   for name in Batch._fields)))
        scores = torch.sigmoid(logits)[0].numpy()
        return score_response(scores, artifact.name, artifact.version, len(user.history), not user.history, False)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=["floor", "naive"], required=True)
    parser.add_argument("--model-dir", required=True, help="one artifact version directory")
    parser.add_argument("--redis-url", help="naive: the feature store")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, help="pin the server to one CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    import uvicorn

    artifact_dir = Path(args.model_dir)
    app = (create_floor_app(artifact_dir) if args.kind == "floor"
           else create_naive_app(artifact_dir, args.redis_url))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
