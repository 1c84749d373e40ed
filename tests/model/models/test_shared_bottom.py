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
    return seeded_model("shared-bottom", SCHEMA, **{"embed_dim": 8, "tower": (16, 8, 4), **overrides})


def test_default_split_bottom_512_256_towers_128_64():
    assert model_config("shared-bottom").tower == DEFAULT_HIDDEN
    model = build_model("shared-bottom", SCHEMA)
    assert linear_widths(model.bottom) == [512, 256]
    assert len(model.towers) == 3 and all(linear_widths(t) == [128, 64, 1] for t in model.towers)
    split = make(bottom_layers=1)
    assert linear_widths(split.bottom) == [16] and linear_widths(split.towers[0]) == [8, 4, 1]
    with pytest.raises(ValueError, match="bottom_layers"):
        make(bottom_layers=4)


def test_each_request_is_scored_by_its_target_scenarios_tower():
    model = make()
    batch = batch_of()
    with torch.no_grad():
        scores = model(batch)
        shared = model.bottom(model.inputs(batch).flat)
        for row, target in enumerate(TARGETS.tolist()):
            torch.testing.assert_close(scores[row], model.towers[target - 2](shared[row]), rtol=0, atol=1e-6)
        # Changing one scenario's tower moves exactly the requests that target it.
        model.towers[1].logit.bias += 1.0
        moved = model(batch) - scores
    torch.testing.assert_close(moved[TARGETS == 3], torch.ones(2, 3))
    torch.testing.assert_close(moved[TARGETS != 3], torch.zeros(4, 3), rtol=0, atol=0)


def test_changing_the_target_scenario_changes_scores():
    model = make()
    batch = batch_of()
    with torch.no_grad():
        a = model(batch)
        b = model(batch._replace(target_scenario=(batch.target_scenario - 2 + 1) % 3 + 2))
    assert not torch.isclose(a, b).any()


def test_oov_target_scenario_uses_the_first_tower():
    model = make()
    batch = batch_of()
    oov_batch = batch._replace(target_scenario=torch.ones(6, dtype=torch.long))   # 1 = OOV
    with torch.no_grad():
        shared = model.bottom(model.inputs(oov_batch).flat)
        torch.testing.assert_close(model(oov_batch), model.towers[0](shared), rtol=0, atol=1e-6)
