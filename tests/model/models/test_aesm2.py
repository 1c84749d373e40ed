import pytest
import torch

from model.models.aesm2 import ExpertSelectionLayer
from model.models.registry import HasAuxiliaryLoss
from model.testing import random_batch, seeded_model, tiny_schema

SCHEMA = tiny_schema(history_length=8, items=40, genres=7, context_feature=True)
SMALL = {"embed_dim": 8, "tower": (16, 8), "expert_dims": (16, 12)}


def make(**overrides):
    return seeded_model("aesm2", SCHEMA, **{**SMALL, **overrides})


def batch_of(candidates=3, seed=0):
    return random_batch(SCHEMA, batch=5, candidates=candidates, seed=seed)


def test_kl_selection_picks_the_scenario_specific_and_the_shared_expert():
    layer = ExpertSelectionLayer(4, 4, 2, num_scenarios=3, num_experts=4, top_k_specific=1, top_k_shared=1,
                                 noise_scale=0.0).eval()
    # Gate logits [B=1, C=1, S=3, K=4]: expert 0 is wanted by scenario 0's gate only, expert 3 by every
    # gate alike, experts 1 and 2 mostly by scenarios 1 and 2.
    logits = torch.tensor([[[[5.0, 0.0, 0.0, 1.0],
                             [0.0, 5.0, 0.0, 1.0],
                             [0.0, 0.0, 5.0, 1.0]]]])
    selected, kl = layer.select(logits, torch.tensor([0]))
    assert selected[0, 0].tolist() == [True, False, False, True]
    selected, _ = layer.select(logits, torch.tensor([2]))
    assert selected[0, 0].tolist() == [False, False, True, True]
    assert torch.isfinite(kl) and kl >= 0


def test_selection_size_and_determinism_at_inference():
    model = make()
    batch = batch_of()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model(batch), rtol=0, atol=0)
        inputs = model.inputs(batch)
        layer = model.layers[0]
        b, c = inputs.flat.shape[:2]
        logits = layer.gates(torch.cat([inputs.flat, inputs.scenario_embedding], -1))
        logits = logits.reshape(b, c, 3, layer.num_experts)
        selected, _ = layer.select(logits, inputs.scenario_index)
    counts = selected.sum(-1)
    config = model.config
    assert (counts >= max(config.top_k_specific, config.top_k_shared)).all()
    assert (counts <= config.top_k_specific + config.top_k_shared).all()


def test_auxiliary_kl_loss_is_weighted_finite_with_gradients_and_forward_keeps_no_state():
    model = make().train()
    batch = batch_of(candidates=1)
    logits, loss = model.logits_and_auxiliary_loss(batch)
    assert isinstance(model, HasAuxiliaryLoss)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0
    unweighted = make(selection_loss_weight=1.0).train().logits_and_auxiliary_loss(batch)[1]
    torch.testing.assert_close(loss, model.config.selection_loss_weight * unweighted)
    loss.backward()
    assert model.layers[0].gates.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model.logits_and_auxiliary_loss(batch)[0])


def test_target_scenario_changes_scores_and_picks_its_own_tower():
    model = make()
    batch = batch_of()
    other = batch._replace(target_scenario=(batch.target_scenario - 2 + 1) % 3 + 2)
    only_a = batch._replace(target_scenario=torch.full_like(batch.target_scenario, 2))   # scenario "a"
    only_b = batch._replace(target_scenario=torch.full_like(batch.target_scenario, 3))   # scenario "b"
    with torch.no_grad():
        assert not torch.allclose(model(batch), model(other))
        before_a, before_b = model(only_a), model(only_b)
        for p in model.towers[1].parameters():                 # scenario b's tower
            p.add_(1.0)
        torch.testing.assert_close(model(only_a), before_a, rtol=0, atol=0)
        assert not torch.allclose(model(only_b), before_b)


def test_bad_top_k_fails_loudly():
    with pytest.raises(ValueError, match="top_k"):
        make(num_experts=2, top_k_specific=3)
