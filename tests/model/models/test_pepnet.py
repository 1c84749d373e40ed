import torch
from model.models import model_config
from model.testing import random_batch, seeded_model, tiny_schema


SCHEMA = tiny_schema(history_length=8, items=40, genres=7, context_feature=True)
SMALL = {"embed_dim": 8, "tower": (16, 8)}


def make(**overrides):
    return seeded_model("pepnet", SCHEMA, **{**SMALL, **overrides})


def batch_of(candidates=3, seed=0):
    return random_batch(SCHEMA, batch=5, candidates=candidates, seed=seed)


def test_gates_are_in_0_2_with_one_per_field_and_one_per_layer():
    model = make()
    batch = batch_of()
    with torch.no_grad():
        ep, pp, o_ep = model.gates(batch)
    num_fields = model.inputs.num_fields
    assert ep.shape == (5, 3, num_fields)
    assert [g.shape[-1] for g in pp] == [num_fields * 8, 16, 8]
    for gate in [ep, *pp]:
        assert (gate > 0).all() and (gate < 2).all()
    assert o_ep.shape == (5, 3, num_fields * 8)
    assert model_config("pepnet").gamma == 2.0


def test_scenario_field_index_matches_the_shared_inputs():
    model = make()
    with torch.no_grad():
        inputs = model.inputs(batch_of())
    torch.testing.assert_close(inputs.fields[:, :, model.inputs.scenario_field], inputs.scenario_embedding)


def test_epnet_gate_stops_gradients_into_the_general_embeddings():
    model = make().train()
    ep, _, _ = model.gates(batch_of())
    ep.sum().backward()
    embeddings = model.inputs.embeddings
    assert embeddings.item.weight.grad is None or embeddings.item.weight.grad.abs().sum() == 0
    assert embeddings.scenario.weight.grad.abs().sum() > 0      # the domain-side input keeps its gradient
