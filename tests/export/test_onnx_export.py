import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export.onnx_export import ExportError, ScoringModule, export_run
from model.batch import INPUT_NAMES
from model.data.datasets import DataOptions, prepare_dataset
from model.data.synthetic import SyntheticConfig
from model.testing import random_inputs
from model.train import TrainConfig, load_run, train_model
from sainet.contract import parse_meta

TINY = DataOptions(history_length=12, synthetic=SyntheticConfig(users=200, items=50, events_per_user=20))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train_model(prepare_dataset(TINY), "sainet", {"embed_dim": 16, "tower": (32, 16)},
                TrainConfig(epochs=1, batch_size=512, threads=1), out, TINY)
    return out


def test_export_writes_a_versioned_artifact_with_parity(run_dir, tmp_path):
    first = export_run(run_dir, tmp_path)
    second = export_run(run_dir, tmp_path)
    assert (first.name, second.name, first.parent.name) == ("1", "2", "sainet")
    meta = json.loads((first / "meta.json").read_text())
    for key in ("name", "version", "created_at", "schema", "scenarios", "max_history_length", "inputs",
                "outputs", "parity", "vocabularies"):
        assert key in meta, key
    parse_meta(meta, first.name)              # what export writes is what the service accepts
    assert set(meta["parity"]["max_abs_diff"]) >= {"no_history_c1", "c1", "c500", "real_test_examples"}
    assert max(meta["parity"]["max_abs_diff"].values()) <= 1e-5
    assert (first / "vocab" / "item_id.json").exists() and (first / "model.onnx").exists()
    assert (first / meta["source_checkpoint"]).read_bytes() == (run_dir / "checkpoint.pt").read_bytes()
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]   # no staging left over


def test_onnx_has_dynamic_batch_history_and_candidates(run_dir, tmp_path):
    artifact = export_run(run_dir, tmp_path, real_inputs=False)
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    run = load_run(run_dir)
    module = ScoringModule(run.model).eval()
    for batch, length, candidates in ((1, 1, 1), (3, 40, 500), (6, 12, 2)):
        inputs = random_inputs(run.schema, batch, length, candidates, seed=batch, empty_rows=(0,))
        got = session.run(None, {k: v.numpy() for k, v in zip(INPUT_NAMES, inputs)})[0]
        with torch.no_grad():
            expected = module(*inputs).numpy()
        assert got.shape == (batch, candidates) and np.isfinite(got).all()
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_failed_parity_writes_nothing(run_dir, tmp_path):
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_run(run_dir, tmp_path, tolerance=-1.0, real_inputs=False)
    assert list((tmp_path / "sainet").iterdir()) == []


def test_int8_export_writes_both_graphs_and_judges_the_int8_one(run_dir, tmp_path):
    from service.inference import load_model

    artifact = export_run(run_dir, tmp_path, quantize="int8")
    meta = json.loads((artifact / "meta.json").read_text())
    int8 = meta["precisions"]["int8"]
    assert meta["precisions"]["fp32"]["file"] == "model.onnx" and int8["file"] == "model.int8.onnx"
    assert int8["type"] == "int8-dynamic" and 0 < max(int8["max_abs_diff"].values())
    assert max(meta["parity"]["max_abs_diff"].values()) <= 1e-5          # the fp32 graph's own check
    test = int8["test"]
    assert test["examples"] > 0 and int8["auc_change"] == pytest.approx(test["auc"]["int8"] - test["auc"]["fp32"])
    assert int8["passed"] == (abs(int8["auc_change"]) <= int8["auc_bound"]
                              and max(int8["max_abs_diff"].values()) <= int8["tolerance"]), int8
    assert (int8["why_not"] is None) == int8["passed"]
    import onnx
    ops = {node.op_type for node in onnx.load(str(artifact / "model.int8.onnx")).graph.node}
    assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}
    quantised_ops = {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}
    assert not {node.op_type for node in onnx.load(str(artifact / "model.onnx")).graph.node} & quantised_ops
    assert load_model(artifact, precision="int8").precision == "int8"   # warms up and checks finiteness
    assert load_model(artifact, precision="fp32").precision == "fp32"
    assert load_model(artifact).precision == ("int8" if int8["passed"] else "fp32")   # auto, on this CPU


def test_auto_precision_serves_int8_on_cpu_only_where_it_passed(run_dir, tmp_path):
    from service.artifact import Artifact
    from service.errors import ArtifactError

    directory = export_run(run_dir, tmp_path, quantize="int8", real_inputs=False)
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["precisions"]["int8"]["passed"] is False                 # no test AUC, no int8 by default
    assert "test split" in meta["precisions"]["int8"]["why_not"]
    assert Artifact(directory).choose_precision("auto", on_gpu=False) == "fp32"
    meta["precisions"]["int8"]["passed"] = True
    (directory / "meta.json").write_text(json.dumps(meta))
    artifact = Artifact(directory)
    assert artifact.choose_precision("auto", on_gpu=False) == "int8"
    assert artifact.choose_precision("auto", on_gpu=True) == "fp32"
    assert artifact.choose_precision("fp32", on_gpu=False) == "fp32"
    plain = export_run(run_dir, tmp_path, real_inputs=False)
    with pytest.raises(ArtifactError, match="SAINET_PRECISION=int8"):
        Artifact(plain).choose_precision("int8", on_gpu=False)
