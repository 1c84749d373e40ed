#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU and no network (see sainet/bench/gpu_check.py):
# CUDA provider active (fails otherwise), ONNX-vs-PyTorch parity on the GPU, raw throughput for
# 1..4096 candidate rows in fp32 and (if its parity holds) fp16. Details go under $OUT when set.
#
#   loadtest/gpu_check.sh [MODEL_DIR]      default: artifacts (built by `make model`), else a tiny
#                                          model trained here on synthetic data
# Needs a Python with this project, torch (CUDA build) and onnxruntime-gpu installed; PYTHON picks it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MODEL_DIR=${1:-artifacts}
OUT_DIR=${OUT:-}

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
  || echo "nvidia-smi not found" >&2
# Preflight, before any training: packages present, a CUDA device, the CUDA provider in onnxruntime.
"$PYTHON" - <<'PY'
import importlib.util
import sys
missing = [m for m in ("torch", "onnxruntime", "onnx", "fastapi") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"FAIL: missing Python packages {missing}; install '.[train,gpu]' first (no network here)")
import onnxruntime
import torch
if not torch.cuda.is_available():
    sys.exit("FAIL: torch sees no CUDA device")
if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
    sys.exit(f"FAIL: onnxruntime has no CUDAExecutionProvider ({onnxruntime.get_available_providers()}); "
             "install onnxruntime-gpu")
PY

if [ ! -d "$MODEL_DIR" ] || [ -z "$(find "$MODEL_DIR" -name meta.json -print -quit 2>/dev/null)" ]; then
  WORK=$(mktemp -d)
  echo "no model under $MODEL_DIR: training a small synthetic one in $WORK" >&2
  "$PYTHON" -m sainet.cli train --epochs 1 --max-train-examples 50000 --out "$WORK/run" >&2
  "$PYTHON" -m sainet.cli export --run "$WORK/run" --out "$WORK/models" >&2
  MODEL_DIR="$WORK/models"
fi

ARGS=(--model-dir "$MODEL_DIR")
[ -n "$OUT_DIR" ] && ARGS+=(--out "$OUT_DIR")
exec "$PYTHON" -m sainet.bench.gpu_check "${ARGS[@]}"
