import torch
from torch import nn

from model.layers.towers import DEFAULT_HIDDEN
from model.models import build_model, model_config
from model.testing import random_batch, tiny_schema

SCHEMA = tiny_schema()


def batch_of(candidates=3, seed=0):
    return random_batch(SCHEMA, candidates=candidates, seed=seed)


def test_defaults_follow_the_shared_baseline_setup():
    config = model_config("dnn")
    assert (config.embed_dim, config.tower, config.init_std) == (32, DEFAULT_HIDDEN, 0.05)
    model = build_model("dnn", SCHEMA)
    assert model.output_dim == 1
    linears = [m for m in model.tower.modules() if isinstance(m, nn.Linear)]
    # Five fields (item, history, scenario, gender, genre) of 32, then 512-256-128-64 and the logit.
    assert [(m.in_features, m.out_features) for m in linears] == [
        (5 * 32, 512), (512, 256), (256, 128), (128, 64), (64, 1)]
    assert abs(float(model.inputs.embeddings.item.weight[2:].detach().std()) - 0.05) < 0.005
    assert all(float(m.bias.abs().max()) == 0.0 for m in linears)


def test_one_tower_for_every_scenario_and_the_scenario_is_an_input_field():
    torch.manual_seed(0)
    model = build_model("dnn", SCHEMA, embed_dim=8, tower=(16, 8)).eval()
    assert {n.split(".")[0] for n, _ in model.named_parameters()} == {"inputs", "tower"}
    batch = batch_of()
    with torch.no_grad():
        scores = model(batch)
        other = model(batch._replace(target_scenario=(batch.target_scenario - 2 + 1) % 3 + 2))
        # Same scenario embedding everywhere -> scores depend on the scenario only through it.
        model.inputs.embeddings.scenario.weight[2:] = model.inputs.embeddings.scenario.weight[2]
        flat_a = model(batch)
        flat_b = model(batch._replace(target_scenario=(batch.target_scenario - 2 + 1) % 3 + 2))
    assert scores.shape == (6, 3)
    assert not torch.allclose(scores, other)
    torch.testing.assert_close(flat_a, flat_b, rtol=0, atol=0)
