"""The contract every registered model keeps (baselines and SAINet variants alike): [B, C] scores,
a training step, finite cold start, C candidates in one forward = C separate forwards, scores
that depend on the target scenario, and ONNX export parity."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export.onnx_export import ScoringModule, export_onnx
from model.batch import INPUT_NAMES
from model.layers.towers import LastDimBatchNorm
from model.models import MODEL_REGISTRY
from model.models.baseline_config import BaselineConfig
from model.models.registry import training_outputs
from model.models.sainet import SAINet
from model.testing import random_batch, random_inputs, seeded_model, tiny_schema

SCHEMA = tiny_schema(numeric=True)     # categorical and numeric features on both sides
SMALL = {"embed_dim": 8, "tower": (16, 8)}
ALL_MODELS = sorted(MODEL_REGISTRY)
BASELINES = [name for name in ALL_MODELS if MODEL_REGISTRY[name].model_class is not SAINet]


def make(name: str) -> torch.nn.Module:
    return seeded_model(name, SCHEMA, **SMALL)


def batch_of(candidates: int, empty_rows=(0,), seed=0):
    return random_batch(SCHEMA, candidates=candidates, seed=seed, empty_rows=empty_rows)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_shapes_training_step_and_cold_start(name):
    model = make(name).train()
    batch = batch_of(1, empty_rows=(0, 3))
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])

    def training_loss():  # what `train_model` minimises: BCE plus the model's auxiliary loss, if any
        logits, auxiliary = training_outputs(model, batch)
        assert logits.shape == (6, 1) and torch.isfinite(logits).all()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels)
        return bce if auxiliary is None else bce + auxiliary

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = training_loss()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    optimizer.step()
    for _ in range(30):  # a few more steps must fit six examples better than the first guess
        optimizer.zero_grad()
        after = training_loss()
        after.backward()
        optimizer.step()
    assert after < loss - 0.01
    cold = batch_of(4, empty_rows=range(6))
    assert torch.isfinite(make(name)(cold)).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_c_candidates_in_one_forward_equal_separate_forwards(name):
    model = make(name)
    batch = batch_of(5)
    with torch.no_grad():
        together = model(batch)
        for c in range(5):
            alone = model(batch._replace(cand_items=batch.cand_items[:, c:c + 1],
                                         cand_features=batch.cand_features[:, c:c + 1],
                                         cand_numeric=batch.cand_numeric[:, c:c + 1]))
            torch.testing.assert_close(alone[:, 0], together[:, c], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_changing_the_target_scenario_changes_scores(name):
    model = make(name)
    batch = batch_of(3)
    with torch.no_grad():
        before = model(batch)
        after = model(batch._replace(target_scenario=(batch.target_scenario - 2 + 1) % 3 + 2))
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_numeric_features_reach_the_scores(name):
    # through the shared input layer, on the request side and per candidate
    model = make(name)
    batch = batch_of(3)
    with torch.no_grad():
        before = model(batch)
        request = model(batch._replace(request_numeric=batch.request_numeric + 1.5))
        candidate = model(batch._replace(cand_numeric=batch.cand_numeric - 1.5))
    assert not torch.allclose(before, request) and not torch.allclose(before, candidate)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_onnx_export_parity(name, tmp_path):
    module = ScoringModule(make(name)).eval()
    export_onnx(module, SCHEMA, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for candidates, length in ((1, 10), (7, 3), (200, 10)):
        inputs = random_inputs(SCHEMA, 3, length, candidates, seed=candidates, empty_rows=(1,))
        got = session.run(None, {k: v.numpy() for k, v in zip(INPUT_NAMES, inputs)})[0]
        with torch.no_grad():
            expected = module(*inputs).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_acts_on_the_shared_baseline_settings(name):
    """A protocol (Scenario-Wise Rec) may set any `BaselineConfig` field on any baseline: each must
    change the model, none may be silently ignored."""
    assert issubclass(MODEL_REGISTRY[name].model_class.Config, BaselineConfig)
    plain = make(name)
    assert not any(isinstance(m, (LastDimBatchNorm, torch.nn.Dropout)) for m in plain.modules())
    regularised = seeded_model(name, SCHEMA, **SMALL, batch_norm=True, dropout=0.5)
    assert any(isinstance(m, LastDimBatchNorm) for m in regularised.modules())
    assert any(isinstance(m, torch.nn.Dropout) for m in regularised.modules())

    kept = ["item_id", "history", "scenario"]
    try:
        narrow = seeded_model(name, SCHEMA, **SMALL, input_fields=tuple(kept))
    except ValueError as refused:     # a model may refuse a setting it cannot honour, saying which
        assert "input_fields" in str(refused)
    else:
        assert narrow.inputs.field_names == kept
        with torch.no_grad():
            scores = narrow(batch_of(2))
        assert scores.shape == (6, 2) and torch.isfinite(scores).all()

    small_init = seeded_model(name, SCHEMA, **SMALL, embedding_init_std=1e-4)
    item_rows = small_init.inputs.embeddings.item.weight[2:].detach()
    assert 0 < float(item_rows.std()) < 1e-3
