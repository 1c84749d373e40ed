import torch

from model.layers.towers import MLPTower, ScenarioAwareTower, ScenarioGatedLayer


def test_sdt_layer_is_eq_11_with_a_gate_projection_and_optional_scale():
    torch.manual_seed(0)
    hidden, scenario = torch.randn(3, 5, 6), torch.randn(3, 5, 4)
    for scale in (1.0, 2.0):
        layer = ScenarioGatedLayer(6, 7, 4, "hidden+scenario", gate_scale=scale)
        gate = scale * torch.sigmoid(layer.gate(torch.cat([hidden, scenario], dim=-1)))
        expected = torch.relu(layer.linear(hidden * gate))
        torch.testing.assert_close(layer(hidden, scenario), expected)
        assert layer(hidden, scenario).shape == (3, 5, layer.output_dim)


def test_towers_give_one_logit_per_row():
    x, scenario = torch.randn(2, 9, 12), torch.randn(2, 9, 4)
    assert ScenarioAwareTower(12, 4, (16, 8))(x, scenario).shape == (2, 9)
    assert MLPTower(12, (16, 8))(x).shape == (2, 9)
