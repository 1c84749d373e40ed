"""Schemathesis against the live service (real uvicorn, Redis, ONNX Runtime): every built-in check
(server errors, status-code, content-type, header and response-schema conformance, auth checks and
the rest) over generated requests to every operation of the OpenAPI document the service serves."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.testing import LiveServer

TOKEN = "schemathesis-token"
EXAMPLES_PER_OPERATION = 500      # the two body-taking operations alone make over 1,000 requests


def schemathesis_binary() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if not found:
        pytest.skip("schemathesis is not installed (it is in the dev extra)")
    return found


def test_schemathesis_finds_no_failure(model_root, redis_url, settings_for, tmp_path):
    binary = schemathesis_binary()
    settings = settings_for(model_root, redis_url, admin_token=TOKEN, write_token=TOKEN, max_body_bytes=1_000_000)
    with LiveServer(settings) as live:
        result = subprocess.run(
            [binary, "run", f"{live.url}/openapi.json", "--checks", "all", "--max-examples",
             str(EXAMPLES_PER_OPERATION), "--header", f"Authorization: Bearer {TOKEN}", "--seed", "1",
             "--request-timeout", "10", "--workers", "1", "--no-color",
             "--report", "junit", "--report-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.txt").write_text(output)
    print(f"schemathesis output: {tmp_path / 'schemathesis.txt'}")
    assert result.returncode == 0, output[-6000:]
    generated = re.search(r"(\d+) generated", output)
    assert generated and int(generated.group(1)) >= 1000, output[-3000:]
