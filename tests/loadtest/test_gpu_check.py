"""loadtest/gpu_check.sh must fail loudly where the CUDA provider is not active."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would pass")
def test_gpu_check_fails_without_cuda(tmp_path):
    answer = subprocess.run([str(ROOT / "loadtest" / "gpu_check.sh"), str(tmp_path / "no-model")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "OUT": str(tmp_path / "out")})
    assert answer.returncode == 1, answer.stderr
    assert "FAIL" in answer.stderr and "CUDA" in answer.stderr
