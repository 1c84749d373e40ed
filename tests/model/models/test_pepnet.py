import torch

from export.onnx_export import random_inputs
from model.batch import Batch
from model.data.schema import CategoricalFeature, FeatureSchema
from model.models import build_model, model_config

SCHEMA = FeatureSchema(
    dataset="test", scenarios=["a", "b", "c"], history_length=8,
    features=[CategoricalFeature("gender", "user"), CategoricalFeature("hour", "context"),
              CategoricalFeature("genre", "item")],
    vocab_sizes={"item_id": 40, "scenario": 5, "gender": 4, "hour": 6, "genre": 7},
)
SMALL = {"embed_dim": 8, "tower": (16, 8)}


def make(**overrides):
    torch.manual_seed(0)
    return build_model("pepnet", SCHEMA, **{**SMALL, **overrides}).eval()


def batch_of(candidates=3, seed=0) -> Batch:
    return Batch(*random_inputs(SCHEMA, batch=5, length=8, candidates=candidates, seed=seed, empty_rows=(0,)))


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
    torch.testing.assert_close(inputs.fields[:, :, model.scenario_field], inputs.scenario_embedding)


def test_epnet_gate_stops_gradients_into_the_general_embeddings():
    model = make().train()
    ep, _, _ = model.gates(batch_of())
    ep.sum().backward()
    embeddings = model.inputs.embeddings
    assert embeddings.item.weight.grad is None or embeddings.item.weight.grad.abs().sum() == 0
    assert embeddings.scenario.weight.grad.abs().sum() > 0      # the domain-side input keeps its gradient


def test_target_scenario_changes_scores():
    model = make()
    batch = batch_of()
    with torch.no_grad():
        a = model(batch)
        b = model(batch._replace(target_scenario=(batch.target_scenario - 2 + 1) % 3 + 2))
    assert not torch.allclose(a, b)
