"""`sainet bench` end to end on a tiny model (short phases), and the replicated variant's contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from export.onnx_export import export_run
from model.data.datasets import DataOptions, prepare_dataset
from model.data.synthetic import SyntheticConfig
from model.train import TrainConfig, train_model
from sainet.bench.compute import replicate_history, request_inputs
from sainet.bench.runner import TARGETS, resolve_artifact_dir
from sainet.cli import main
from service.artifact import Artifact
from service.inference import make_session

HISTORY = 8


@pytest.fixture(scope="module")
def artifact_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    options = DataOptions(history_length=HISTORY, synthetic=SyntheticConfig(users=150, items=60, events_per_user=12))
    train_model(prepare_dataset(options), "sainet", {"embed_dim": 8, "tower": (16, 8)},
                TrainConfig(epochs=1, batch_size=512, threads=1), root / "run", options)
    export_run(root / "run", root / "models", real_inputs=False)
    return root / "models"


def test_replicated_variant_gives_the_same_scores(artifact_root):
    artifact = Artifact(resolve_artifact_dir(artifact_root))
    session = make_session(artifact.model_path, require_gpu=False, intra_op_threads=1)
    inputs = request_inputs(artifact, requests=3, candidates=7, history=HISTORY)
    shared = session.run(["scores"], inputs)[0]
    replicated = session.run(["scores"], replicate_history(inputs))[0]
    assert replicated.shape == (21, 1)
    np.testing.assert_allclose(replicated.reshape(3, 7), shared, atol=1e-6)


def test_bench_writes_every_figure(artifact_root, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--model-dir", str(artifact_root), "--out", str(out), "--quick", "--seconds", "1.5",
                 "--candidates", "20", "--history", str(HISTORY), "--concurrency", "8"]) == 0
    results = json.loads((out / "bench.json").read_text())
    for key, _, _ in TARGETS.values():
        assert results[key] is not None and results[key] > 0, key
    for stage in (results["floor"], results["naive"], results["service"]["max"]):
        assert stage["ok"] > 0 and stage["failed"] == 0, stage
    assert [p["fraction"] for p in results["service"]["load_points"]] == [0.25, 0.5, 0.75]
    assert results["compute"]["max_requests_per_s"] > 0 and results["machine"]["cpus"] >= 1
    assert results["commit"] and results["rss_mb"] > 10
    table = (out / "bench.md").read_text()
    assert "framework floor" in table and "naive PyTorch" in table and "| met |" in table
    fp32 = results["compute"]["by_precision"]["fp32"]
    assert fp32["flops"]["macs_per_candidate"] > 0 and fp32["achieved_gflops"] > 0 and not fp32["flops"]["unresolved"]
    assert results["compute"]["peak"]["fp32_peak_gflops"] > 0 and "Compute limit against the core's peak" in table
    assert (out / "latency_vs_load.png").stat().st_size > 1000
    assert not (out / ".bodies.json").exists()


def test_bench_refuses_a_history_longer_than_the_model(artifact_root, tmp_path, capsys):
    assert main(["bench", "--model-dir", str(artifact_root), "--out", str(tmp_path / "b"), "--quick",
                 "--history", str(HISTORY + 1)]) == 2
    assert "exceeds the model's maximum" in capsys.readouterr().err
