"""In-process ONNX Runtime throughput: the compute limit the service is measured against, and the
replicated variant (history encoded once per candidate instead of once per request)."""

from __future__ import annotations

import statistics
import time

import numpy as np

from sainet.contract import OUTPUT_NAME
from service.artifact import Artifact
from service.inference import make_session
from service.store import Behaviour


def request_inputs(artifact: Artifact, requests: int, candidates: int, history: int, seed: int = 0
                   ) -> dict[str, np.ndarray]:
    """Model inputs for `requests` requests, each with a full history and `candidates` known items."""
    rng = np.random.default_rng(seed)
    items = list(artifact.item_index)
    scenarios = artifact.scenarios
    histories = [[Behaviour(items[rng.integers(len(items))], scenarios[rng.integers(len(scenarios))], 0.0)
                  for _ in range(history)] for _ in range(requests)]
    cands = [[items[i] for i in rng.integers(len(items), size=candidates)] for _ in range(requests)]
    return artifact.encode([scenarios[r % len(scenarios)] for r in range(requests)], histories,
                           [{} for _ in range(requests)], cands).inputs


def replicate_history(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same scores computed the way a model without a shared user part must: one row (history,
    features, one candidate) per candidate, so the history is encoded C times."""
    b, c = inputs["cand_items"].shape
    per_request = ("hist_items", "hist_scenarios", "target_scenario", "request_features")
    out = {name: np.repeat(inputs[name], c, axis=0) for name in per_request}
    out["cand_items"] = inputs["cand_items"].reshape(b * c, 1)
    out["cand_features"] = inputs["cand_features"].reshape(b * c, 1, -1)
    return out


def time_runs(session, inputs: dict[str, np.ndarray], min_seconds: float, min_runs: int = 5) -> float:
    """Median seconds of one session.run over repeated runs (after one warm-up run)."""
    session.run([OUTPUT_NAME], inputs)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        session.run([OUTPUT_NAME], inputs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compute_limit(artifact: Artifact, candidates: int, history: int, batch_sizes: tuple[int, ...],
                  threads: int, seconds_per_point: float, replicated_batch: int, precision: str = "auto") -> dict:
    """Requests/s and candidates/s of raw ONNX Runtime per batch size R (R requests x C candidates),
    and the shared-history speedup against the replicated variant at R = `replicated_batch`, on the
    graph the service serves on this CPU with that `precision` setting."""
    chosen = artifact.choose_precision(precision, on_gpu=False)
    session = make_session(artifact.graph_path(chosen), require_gpu=False, intra_op_threads=threads,
                           inter_op_threads=1)
    points = []
    for requests in batch_sizes:
        seconds = time_runs(session, request_inputs(artifact, requests, candidates, history), seconds_per_point)
        points.append({"requests": requests, "candidates": candidates, "history": history,
                       "median_ms": seconds * 1e3, "requests_per_s": requests / seconds,
                       "candidates_per_s": requests * candidates / seconds})
    shared_inputs = request_inputs(artifact, replicated_batch, candidates, history, seed=1)
    shared = time_runs(session, shared_inputs, seconds_per_point)
    replicated = time_runs(session, replicate_history(shared_inputs), seconds_per_point)
    best = max(points, key=lambda p: p["requests_per_s"])
    return {"provider": session.get_providers()[0], "precision": chosen, "threads": threads, "points": points,
            "max_requests_per_s": best["requests_per_s"], "best_batch_requests": best["requests"],
            "replicated": {"requests": replicated_batch, "shared_ms": shared * 1e3,
                           "replicated_ms": replicated * 1e3, "speedup": replicated / shared}}
