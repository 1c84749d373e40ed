import dataclasses

import pytest
import torch

from model.models import MODEL_REGISTRY, build_model, model_config
from model.testing import random_batch, seeded_model, tiny_schema

SAINET_VARIANTS = sorted(name for name in MODEL_REGISTRY if name.startswith("sainet"))
SCHEMA = tiny_schema(history_length=12, items=60, genres=7, context_feature=True)
SMALL = {"embed_dim": 16, "tower": (32, 16)}


def batch_of(batch=5, candidates=3, seed=0, empty_rows=(1,)):
    return random_batch(SCHEMA, batch=batch, candidates=candidates, seed=seed, empty_rows=empty_rows)


def make(name: str, **overrides) -> torch.nn.Module:
    return seeded_model(name, SCHEMA, **{**SMALL, **overrides})


@pytest.mark.parametrize("name", SAINET_VARIANTS)
def test_output_shape_is_requests_by_candidates(name):
    model = make(name)
    assert model(batch_of(batch=5, candidates=3)).shape == (5, 3)
    assert model(batch_of(batch=2, candidates=1)).shape == (2, 1)


@pytest.mark.parametrize("name", SAINET_VARIANTS)
def test_padding_never_changes_a_score(name):
    model = make(name)
    batch = batch_of()
    extra = 4
    pad = torch.zeros(batch.hist_items.shape[0], extra, dtype=torch.long)
    longer = batch._replace(hist_items=torch.cat([pad, batch.hist_items], 1),
                            hist_scenarios=torch.cat([pad + 3, batch.hist_scenarios], 1))
    # Scenario ids under padded items are garbage on purpose: a padded position must be inert.
    garbage = batch._replace(hist_scenarios=torch.where(batch.hist_items == 0, 4, batch.hist_scenarios))
    with torch.no_grad():
        reference = model(batch)
        torch.testing.assert_close(model(longer), reference, rtol=0, atol=1e-6)
        torch.testing.assert_close(model(garbage), reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", SAINET_VARIANTS)
def test_cold_start_is_finite_with_finite_gradients(name):
    model = make(name).train()
    batch = batch_of(empty_rows=range(5))
    assert not batch.history_mask.any()
    scores = model(batch)
    assert torch.isfinite(scores).all()
    scores.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", SAINET_VARIANTS)
def test_every_variant_trains_a_step_and_gradients_reach_every_parameter(name):
    model = make(name).train()
    batch = batch_of(batch=16, candidates=1, empty_rows=())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    labels = torch.ones(16)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch)[:, 0], labels)
    loss.backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reaches {param_name}"
    optimizer.step()
    after = torch.nn.functional.binary_cross_entropy_with_logits(model(batch)[:, 0], labels)
    assert torch.isfinite(after) and after < loss


def test_ablations_remove_exactly_their_module():
    parts = {name: {n.split(".")[0] + "." + n.split(".")[2] if n.startswith("blocks") else n.split(".")[0]
                    for n, _ in make(name).named_parameters()} for name in SAINET_VARIANTS}
    assert "blocks.sie" in parts["sainet"] and "blocks.sie" not in parts["sainet-no-sie"]
    assert "blocks.stm" in parts["sainet"] and "blocks.stm" not in parts["sainet-no-stm"]
    assert "fusion" in parts["sainet"] and "fusion" not in parts["sainet-no-tif"]
    assert isinstance(make("sainet").tower, type(make("sainet-no-sie").tower))
    assert type(make("sainet").tower).__name__ == "ScenarioAwareTower"
    assert type(make("sainet-no-sdt").tower).__name__ == "MLPTower"


def test_target_scenario_changes_scores():
    model = make("sainet")
    batch = batch_of(empty_rows=())
    with torch.no_grad():
        a = model(batch)
        b = model(batch._replace(target_scenario=(batch.target_scenario - 2 + 1) % 3 + 2))
    assert not torch.allclose(a, b)


def test_behaviour_scenario_tags_change_scores_only_with_sie():
    batch = batch_of(empty_rows=())
    retagged = batch._replace(hist_scenarios=torch.where(batch.hist_items > 0, 2, 0))
    with torch.no_grad():
        sainet = make("sainet")
        assert not torch.allclose(sainet(batch), sainet(retagged))
        no_sie = make("sainet-no-sie")
        torch.testing.assert_close(no_sie(batch), no_sie(retagged))


def test_paper_defaults_and_options():
    config = model_config("sainet")
    assert (config.blocks, config.heads, config.gamma, config.tower, config.init_std) == (2, 4, 2.0,
                                                                                          (512, 256, 128, 64), 0.05)
    for options in ({"sie": "plain"}, {"sie_residual": True, "sie_layer_norm": True}, {"stm_vector_gate": False},
                    {"tif_scaled": True}, {"sdt_gate_input": "scenario"}, {"blocks": 1, "heads": 2}):
        model = make("sainet", **options)
        assert torch.isfinite(model(batch_of())).all(), options


def test_unknown_model_or_option_fails_loudly():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("sainet-no-sei", SCHEMA)
    with pytest.raises(ValueError, match="no option"):
        build_model("sainet", SCHEMA, gama=2.0)
    with pytest.raises(ValueError, match="divisible"):
        build_model("sainet", SCHEMA, embed_dim=30, heads=4)


def test_initialisation_follows_the_paper():
    model = build_model("sainet", SCHEMA)
    weight = model.embeddings.item.weight[2:]
    assert abs(float(weight.detach().std()) - 0.05) < 0.005
    assert torch.count_nonzero(model.embeddings.item.weight[0]) == 0
    assert dataclasses.asdict(model.config)["gamma"] == 2.0
