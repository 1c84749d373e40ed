"""In-process ONNX Runtime throughput: the compute limit the service is measured against, and the
replicated variant (history encoded once per candidate instead of once per request)."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

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
    per_request = ("hist_items", "hist_scenarios", "target_scenario", "request_features", "request_numeric")
    out = {name: np.repeat(inputs[name], c, axis=0) for name in per_request}
    out["cand_items"] = inputs["cand_items"].reshape(b * c, 1)
    out["cand_features"] = inputs["cand_features"].reshape(b * c, 1, -1)
    out["cand_numeric"] = inputs["cand_numeric"].reshape(b * c, 1, -1)
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


def gemm_graph(m: int, k: int, n: int, seed: int = 0):
    """A one-MatMul ONNX graph, x [m, k] @ W [k, n] with W a constant (as the model's weights are)."""
    from onnx import TensorProto, helper, numpy_helper

    weight = (np.random.default_rng(seed).standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                              [numpy_helper.from_array(weight, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def gemm_ceiling(shapes: tuple[tuple[int, int, int], ...] = ((400, 544, 512), (1024, 1024, 1024)),
                 threads: int = 1, seconds: float = 0.5) -> dict:
    """What ONNX Runtime's own kernels attain on this core for one MatMul, in fp32 and in int8
    (the same dynamic quantisation as `sainet export --quantize int8`): the measured ceiling the
    model's GFLOP/s is compared with beside the nominal peak. The first shape is the model's largest
    tower layer at R = 4, C = 100 (the 544 -> 512 gate), the second a large square one."""
    import tempfile

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    out: dict = {"threads": threads, "shapes": []}
    with tempfile.TemporaryDirectory() as folder:
        for m, k, n in shapes:
            fp32_path, int8_path = Path(folder) / f"g{m}_{k}_{n}.onnx", Path(folder) / f"g{m}_{k}_{n}.int8.onnx"
            onnx.save(gemm_graph(m, k, n), str(fp32_path))
            quiet = logging.getLogger().level
            logging.getLogger().setLevel(logging.ERROR)     # the quantiser's "consider pre-processing" warning
            try:
                quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul"])
            finally:
                logging.getLogger().setLevel(quiet)
            x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
            row = {"m": m, "k": k, "n": n, "flops": 2 * m * k * n}
            for precision, path in (("fp32", fp32_path), ("int8", int8_path)):
                session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
                run_seconds = _median_run(lambda: session.run(None, {"x": x}), seconds)
                row[f"{precision}_ms"] = run_seconds * 1e3
                row[f"{precision}_gflops"] = row["flops"] / run_seconds / 1e9
            out["shapes"].append(row)
    out["fp32_gflops"] = max(r["fp32_gflops"] for r in out["shapes"])
    out["int8_gflops"] = max(r["int8_gflops"] for r in out["shapes"])
    return out


def _median_run(run, min_seconds: float, min_runs: int = 5) -> float:
    run()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


PRECISION_ORDER = ("fp32", "int8")


def compute_limits(artifact: Artifact, candidates: int, history: int, batch_sizes: tuple[int, ...], threads: int,
                   seconds_per_point: float, replicated_batch: int, precision: str = "auto",
                   fma_units: int | None = None, ghz: float | None = None) -> dict:
    """`compute_limit` for the precision the service serves (the figure the rest of the bench is
    held against, returned at the top level as before) and for every other precision the artifact
    holds, each with its FLOPs counted from its graph (`sainet.bench.flops`), the GFLOP/s its
    best batch size achieves, and that as a fraction of the core's nominal fp32 FMA peak and of
    ONNX Runtime's measured one-MatMul ceiling on this core."""
    from sainet.bench.flops import cpu_peak, model_flops

    served = artifact.choose_precision(precision, on_gpu=False)
    peak = cpu_peak(fma_units=fma_units, ghz=ghz)
    try:
        ceiling = gemm_ceiling(threads=threads, seconds=seconds_per_point)
    except Exception as error:   # onnx or the quantiser missing: the nominal peak still stands
        ceiling = {"error": repr(error)}
    by_precision: dict[str, dict] = {}
    for name in sorted(artifact.precisions, key=lambda p: PRECISION_ORDER.index(p) if p in PRECISION_ORDER else 9):
        result = compute_limit(artifact, candidates, history, batch_sizes, threads, seconds_per_point,
                               replicated_batch, precision=name)
        result["served"] = name == served
        result["passed"] = bool(artifact.precisions[name].get("passed"))
        try:
            flops = model_flops(artifact.graph_path(name), result["best_batch_requests"], candidates, history)
        except Exception as error:   # onnx missing, or a graph its shape inference cannot read
            result["flops"] = {"error": repr(error)}
            by_precision[name] = result
            continue
        achieved = flops["flops_per_request"] * result["max_requests_per_s"] / 1e9
        result["flops"] = flops
        result["achieved_gflops"] = achieved
        result["fraction_of_fp32_peak"] = achieved / peak["fp32_peak_gflops"]
        if "fp32_gflops" in ceiling:
            result["fraction_of_measured_gemm"] = achieved / ceiling[f"{'int8' if name == 'int8' else 'fp32'}_gflops"]
        int8_macs = flops["by_kind"].get("int8", {}).get("macs_per_request", 0.0)
        if int8_macs:
            result["int8_gops"] = 2 * int8_macs * result["max_requests_per_s"] / 1e9
            result["fraction_of_int8_nominal_peak"] = result["int8_gops"] / peak["int8_peak_gops"]
        by_precision[name] = result
    top = dict(by_precision[served])
    fp32 = by_precision.get("fp32", {})
    top.update({"by_precision": by_precision, "peak": peak, "gemm_ceiling": ceiling,
                "fp32_fraction_of_peak": fp32.get("fraction_of_fp32_peak"),
                "int8_speedup_over_fp32": (by_precision["int8"]["max_requests_per_s"] / fp32["max_requests_per_s"]
                                           if "int8" in by_precision and fp32 else None)})
    return top
