import pytest
import torch

from model.layers.towers import DEFAULT_HIDDEN
from model.models import build_model, model_config
from model.testing import linear_widths, random_batch, seeded_model, tiny_schema

SCHEMA = tiny_schema()
TARGETS = torch.tensor([2, 3, 4, 2, 3, 4])   # every scenario twice


def batch_of(candidates=3, seed=0):
    return random_batch(SCHEMA, candidates=candidates, seed=seed, target_scenario=TARGETS)


def make(**overrides):
    return seeded_model("mmoe", SCHEMA, **{"embed_dim": 8, "tower": (16, 8), **overrides})


def test_defaults_four_experts_512_256_and_towers_128_64():
    config = model_config("mmoe")
    assert (config.experts, config.tower, config.embed_dim, config.init_std) == (4, DEFAULT_HIDDEN, 32, 0.05)
    model = build_model("mmoe", SCHEMA)
    assert len(model.experts) == 4 and all(linear_widths(e) == [512, 256] for e in model.experts)
    assert len(model.gates) == 3 and all(g.out_features == 4 and g.bias is None for g in model.gates)
    assert len(model.towers) == 3 and all(linear_widths(t) == [128, 64, 1] for t in model.towers)
    with pytest.raises(ValueError, match="experts"):
        make(experts=0)


def test_score_is_the_target_scenarios_gate_mixture_through_its_tower():
    model = make()
    batch = batch_of()
    with torch.no_grad():
        scores = model(batch)
        gates = model.gate_weights(batch)
        torch.testing.assert_close(gates.sum(-1), torch.ones(6, 3))
        x = model.inputs(batch).flat
        experts = [expert(x) for expert in model.experts]
        for row, target in enumerate(TARGETS.tolist()):
            s = target - 2
            weights = torch.softmax(model.gates[s](x[row]), dim=-1)                    # [C, n]
            mixed = sum(weights[:, i:i + 1] * experts[i][row] for i in range(len(experts)))
            torch.testing.assert_close(scores[row], model.towers[s](mixed), rtol=0, atol=1e-6)


def test_a_scenarios_gate_and_tower_only_move_requests_targeting_it():
    model = make()
    batch = batch_of()
    with torch.no_grad():
        before = model(batch)
        model.gates[2].weight.add_(torch.randn_like(model.gates[2].weight))
        model.towers[2].logit.bias += 0.5
        moved = model(batch) - before
    assert (moved[TARGETS == 4].abs() > 0).all()
    torch.testing.assert_close(moved[TARGETS != 4], torch.zeros(4, 3), rtol=0, atol=0)


def test_changing_the_target_scenario_changes_scores():
    model = make()
    batch = batch_of()
    with torch.no_grad():
        a = model(batch)
        b = model(batch._replace(target_scenario=(batch.target_scenario - 2 + 1) % 3 + 2))
    assert not torch.isclose(a, b).any()
