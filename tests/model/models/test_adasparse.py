import torch
from model.testing import random_batch, seeded_model, tiny_schema


SCHEMA = tiny_schema(history_length=8, items=40, genres=7)
SMALL = {"embed_dim": 8, "tower": (32, 16)}


def make(**overrides):
    return seeded_model("adasparse", SCHEMA, **{**SMALL, **overrides})


def batch_of(candidates=3, seed=0):
    return random_batch(SCHEMA, candidates=candidates, seed=seed)


def test_weighting_factors_are_binary_per_neuron_in_eval_and_training():
    model = make()
    batch = batch_of()
    for mode in (False, True):
        model.train(mode)
        _, factors = model.factors(batch)
        assert [f.shape for f in factors] == [(6, 3, 32), (6, 3, 16)]
        for f in factors:
            assert ((f == 0) | (f == 1)).all()
            assert 0 < float(f.mean()) < 1                      # some neurons pruned, some kept


def test_target_scenario_changes_the_pruned_neurons_and_the_scores():
    model = make()
    batch = batch_of()
    other = batch._replace(target_scenario=(batch.target_scenario - 2 + 1) % 3 + 2)
    with torch.no_grad():
        (a, fa), (b, fb) = model.factors(batch), model.factors(other)
    assert not torch.equal(fa[0], fb[0])
    assert not torch.allclose(a, b)


def test_auxiliary_sparsity_loss_is_finite_and_trains_the_pruners():
    model = make().train()
    logits, loss = model.logits_and_auxiliary_loss(batch_of(candidates=1))
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert loss > 0                       # about half the neurons are pruned at init: outside [0.15, 0.25]
    loss.backward()                                            # straight-through: gradients reach the pruners
    assert all(torch.isfinite(p.grad).all() for p in model.pruners.parameters())
    assert model.pruners[0].linear.weight.grad.abs().sum() > 0


def test_auxiliary_loss_is_zero_inside_the_target_band_or_when_off():
    model = make(sparsity_lambda=0.0).train()
    assert model.logits_and_auxiliary_loss(batch_of(candidates=1))[1].item() == 0.0
    wide = make(sparsity_min=0.0, sparsity_max=1.0).train()
    assert wide.logits_and_auxiliary_loss(batch_of(candidates=1))[1].item() == 0.0


def test_forward_keeps_no_state():
    model = make().train()
    before = dict(vars(model))
    model(batch_of(candidates=1))
    assert vars(model).keys() == before.keys()
