"""The load test against a real `sainet serve` process: headless locust runs, the SLO gate's exit
code, and the CSV-to-PNG plot."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from export.onnx_export import export_run
from model.data.datasets import DataOptions, prepare_dataset
from model.data.synthetic import SyntheticConfig
from model.train import TrainConfig, train_model
from service.testing import GENEROUS_BUDGETS, free_port, settings_environment

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def running_service(tmp_path_factory):
    root = tmp_path_factory.mktemp("loadtest")
    options = DataOptions(history_length=10, synthetic=SyntheticConfig(users=100, items=60, events_per_user=20))
    train_model(prepare_dataset(options), "sainet", {"embed_dim": 16, "tower": (32, 16)},
                TrainConfig(epochs=1, batch_size=512, threads=1), root / "run", options)
    export_run(root / "run", root / "models", real_inputs=False)
    port, redis_port = free_port(), free_port()
    # Generous budgets, as for every test server: the SLO gate below allows no failure, and a CI
    # machine busy with the other test worker must not turn a healthy write into a 503.
    env = {**os.environ, **settings_environment({"embedded_redis_port": redis_port, "intra_op_threads": 1,
                                                 **GENEROUS_BUDGETS})}
    env.pop("SAINET_REDIS_URL", None)
    server = subprocess.Popen([str(BIN / "sainet"), "serve", "--model-dir", str(root / "models"),
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as answer:
                if answer.status == 200:
                    break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"sainet serve did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.3)
    yield url, root
    server.terminate()
    server.wait(timeout=30)


def run_locust(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [str(BIN / "locust"), "-f", str(REPO / "loadtest" / "locustfile.py"), "--host", url, "--headless",
               "-u", "4", "-r", "4", "-t", "4s", "--csv", str(out), "--csv-full-history", "--html",
               f"{out}.html", "--num-users", "100", "--num-items", "60", "--min-candidates", "5",
               "--max-candidates", "40", "--events-share", "0.2", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_headless_run_meets_a_loose_slo_and_writes_reports(running_service, tmp_path):
    url, _ = running_service
    result = run_locust(url, tmp_path / "run", "--slo-p99-ms", "5000", "--slo-failure-ratio", "0.0")
    assert result.returncode == 0, result.stderr[-3000:]
    stats = (tmp_path / "run_stats.csv").read_text()
    assert "/score" in stats and "/events" in stats
    assert (tmp_path / "run.html").exists()
    png = tmp_path / "run.png"
    subprocess.run([sys.executable, str(REPO / "loadtest" / "plot_history.py"),
                    str(tmp_path / "run_stats_history.csv"), str(png)], check=True, timeout=120)
    assert png.stat().st_size > 1000


def test_slo_breach_sets_a_nonzero_exit_code(running_service, tmp_path):
    url, _ = running_service
    result = run_locust(url, tmp_path / "breach", "--slo-p99-ms", "0.001")
    assert result.returncode == 1
    assert "SLO breached" in result.stderr
