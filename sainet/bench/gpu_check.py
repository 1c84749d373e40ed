"""GPU check of an exported model (run by loadtest/gpu_check.sh on a machine with an NVIDIA GPU):

1. the CUDA execution provider is active (exit status 1 otherwise);
2. ONNX Runtime on the GPU agrees with PyTorch on the GPU (the artifact's source checkpoint);
3. raw throughput for 1 .. 4096 candidate rows per run, in fp32 and, when its parity holds, fp16
   (weights converted with onnxruntime's float16 tool, inputs and outputs kept as they are).

Prints a short table last; writes gpu_check.json (and the fp16 model) under --out when given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROWS = (1, 4, 16, 64, 256, 1024, 4096)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True, help="model root, model folder or version folder")
    parser.add_argument("--out", help="folder for gpu_check.json")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per request in the throughput runs")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="fp32 parity tolerance on the GPU")
    parser.add_argument("--fp16-tolerance", type=float, default=1e-2)
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    from export.onnx_export import ScoringModule
    from model.batch import Batch
    from model.data.schema import FeatureSchema
    from model.models import build_model
    from sainet.bench.compute import request_inputs, time_runs
    from sainet.bench.runner import resolve_artifact_dir
    from sainet.contract import OUTPUT_NAME
    from service.artifact import Artifact
    from service.inference import CUDA, make_session

    report: dict = {"onnxruntime": ort.__version__, "torch": torch.__version__,
                    "available_providers": ort.get_available_providers()}
    if not torch.cuda.is_available():
        print("FAIL: torch sees no CUDA device", file=sys.stderr)
        return 1
    report["device"] = torch.cuda.get_device_name(0)
    artifact = Artifact(resolve_artifact_dir(Path(args.model_dir)))
    try:
        session = make_session(artifact.model_path, require_gpu=True)
    except RuntimeError as error:
        print(f"FAIL: {error}", file=sys.stderr)
        return 1
    report["provider"] = session.get_providers()[0]
    assert report["provider"] == CUDA

    checkpoint = torch.load(artifact.path / artifact.meta["source_checkpoint"], map_location="cpu",
                            weights_only=True)
    model = build_model(checkpoint["model_name"], FeatureSchema.from_dict(checkpoint["schema"]),
                        **checkpoint["model_config"])
    model.load_state_dict(checkpoint["state_dict"])
    scorer = ScoringModule(model).eval().cuda()
    parity = {}
    for name, (requests, candidates, history) in {"b8_c20": (8, 20, artifact.history_length),
                                                  "b1_c500": (1, 500, artifact.history_length),
                                                  "b4_c50_no_history": (4, 50, 0)}.items():
        inputs = request_inputs(artifact, requests, candidates, history)
        with torch.inference_mode():
            expected = scorer(Batch(*(torch.from_numpy(inputs[n]).cuda() for n in Batch._fields))).cpu().numpy()
        got = session.run([OUTPUT_NAME], inputs)[0]
        parity[name] = float(np.abs(got - expected).max())
    report["parity_fp32"] = parity
    fp32_ok = max(parity.values()) <= args.tolerance

    fp16_session, fp16_parity = None, None
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        fp16_model = convert_float_to_float16(onnx.load(str(artifact.model_path)), keep_io_types=True)
        fp16_path = Path(args.out or "/tmp") / "model.fp16.onnx"
        fp16_path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(fp16_model, str(fp16_path))
        fp16_session = ort.InferenceSession(str(fp16_path), providers=[CUDA])
        inputs = request_inputs(artifact, 8, 20, artifact.history_length)
        fp16_parity = float(np.abs(fp16_session.run([OUTPUT_NAME], inputs)[0] - session.run([OUTPUT_NAME], inputs)[0]).max())
    except Exception as error:  # the fp16 path is optional: report why it is missing
        report["fp16_error"] = repr(error)
    report["parity_fp16_vs_fp32"] = fp16_parity
    fp16_ok = fp16_parity is not None and fp16_parity <= args.fp16_tolerance

    rows_table = []
    for rows in ROWS:
        requests = max(rows // args.candidates, 1)
        candidates = rows // requests
        inputs = request_inputs(artifact, requests, candidates, artifact.history_length)
        entry = {"rows": requests * candidates, "requests": requests, "candidates": candidates,
                 "fp32_ms": time_runs(session, inputs, min_seconds=1.0, min_runs=10) * 1e3}
        if fp16_ok:
            entry["fp16_ms"] = time_runs(fp16_session, inputs, min_seconds=1.0, min_runs=10) * 1e3
        rows_table.append(entry)
    report["throughput"] = rows_table
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_check.json").write_text(json.dumps(report, indent=2))

    print(f"device {report['device']}; provider {report['provider']}; onnxruntime {ort.__version__}")
    print(f"parity fp32 (ONNX Runtime CUDA vs PyTorch CUDA): max {max(parity.values()):.2e} "
          f"({'ok' if fp32_ok else 'FAIL'}, tolerance {args.tolerance:g})")
    print(f"parity fp16 vs fp32: {'n/a' if fp16_parity is None else f'{fp16_parity:.2e}'} "
          f"({'ok' if fp16_ok else 'not used'}, tolerance {args.fp16_tolerance:g})")
    print("| rows | requests x C | fp32 ms | fp32 rows/s | fp16 ms | fp16 rows/s |")
    print("|---|---|---|---|---|---|")
    for e in rows_table:
        fp16 = (f"{e['fp16_ms']:.3f} | {e['rows'] / e['fp16_ms'] * 1e3:,.0f}" if "fp16_ms" in e else "n/a | n/a")
        print(f"| {e['rows']} | {e['requests']} x {e['candidates']} | {e['fp32_ms']:.3f} | "
              f"{e['rows'] / e['fp32_ms'] * 1e3:,.0f} | {fp16} |")
    return 0 if fp32_ok else 1


if __name__ == "__main__":
    sys.exit(main())
