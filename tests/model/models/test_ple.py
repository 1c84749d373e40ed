import pytest
import torch
from torch import nn

from model.layers.towers import DEFAULT_HIDDEN
from model.models import build_model, model_config
from model.testing import linear_widths, random_batch, seeded_model, tiny_schema

SCHEMA = tiny_schema()
TARGETS = torch.tensor([2, 3, 4, 2, 3, 4])   # every scenario twice
OTHERS = TARGETS != 4                          # requests not targeting scenario "c" (index 2)


def batch_of(candidates=3, seed=0):
    return random_batch(SCHEMA, candidates=candidates, seed=seed, target_scenario=TARGETS)


def make(**overrides):
    return seeded_model("ple", SCHEMA, **{"embed_dim": 8, "tower": (16, 8, 4), **overrides})


def perturb_(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))


def moved_by(model, module: nn.Module) -> torch.Tensor:
    batch = batch_of()
    with torch.no_grad():
        before = model(batch)
        perturb_(module)
        return model(batch) - before


def test_defaults_two_levels_one_shared_and_one_specific_expert_per_scenario():
    config = model_config("ple")
    assert (config.levels, config.shared_experts, config.specific_experts) == (2, 1, 1)
    assert config.tower == DEFAULT_HIDDEN
    model = build_model("ple", SCHEMA)
    first, last = model.levels
    assert len(first.shared) == 1 and len(first.specific) == 3
    assert all(len(own) == 1 for own in first.specific)
    assert linear_widths(first.shared[0]) == [512] and linear_widths(last.shared[0]) == [256]
    assert all(g.out_features == 2 and g.bias is None for g in first.scenario_gates)   # own + shared expert
    assert first.shared_gate.out_features == 3 + 1    # over every expert of the level
    assert last.shared_gate is None                     # nothing reads it after the last level
    assert all(linear_widths(t) == [128, 64, 1] for t in model.towers)
    with pytest.raises(ValueError, match="exceeds"):
        make(levels=2, expert_layers=2)


def test_scenario_gates_specific_experts_and_towers_of_the_last_level_only_move_their_requests():
    for part in ("gate", "expert", "tower"):
        model = make()
        module = {"gate": model.levels[-1].scenario_gates[2], "expert": model.levels[-1].specific[2],
                  "tower": model.towers[2]}[part]
        moved = moved_by(model, module)
        assert (moved[~OTHERS].abs() > 0).all(), part
        torch.testing.assert_close(moved[OTHERS], torch.zeros(4, 3), rtol=0, atol=0)


def test_shared_gate_carries_other_scenarios_experts_to_the_next_level_but_not_in_cgc():
    # PLE: a scenario's first-level expert reaches every scenario through the shared gate.
    ple = make()
    assert (moved_by(ple, ple.levels[0].specific[2]).abs() > 0).all()
    # CGC (one level): it reaches only the requests of its own scenario.
    cgc = make(levels=1)
    moved = moved_by(cgc, cgc.levels[0].specific[2])
    assert (moved[~OTHERS].abs() > 0).all()
    torch.testing.assert_close(moved[OTHERS], torch.zeros(4, 3), rtol=0, atol=0)


def test_changing_the_target_scenario_changes_scores():
    model = make()
    batch = batch_of()
    with torch.no_grad():
        a = model(batch)
        b = model(batch._replace(target_scenario=(batch.target_scenario - 2 + 1) % 3 + 2))
    assert not torch.isclose(a, b).any()
