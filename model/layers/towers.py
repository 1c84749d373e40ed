"""Prediction towers: a plain MLP and the paper's scenario-aware DNN tower (SDT)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

DEFAULT_HIDDEN = (512, 256, 128, 64)
SdtGateInput = Literal["hidden+scenario", "scenario"]


class LastDimBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the last dimension of [..., width]: every leading position (request and
    candidate) is one sample. Off by default in every model: in training it mixes the rows of a
    batch; it is there for benchmarks whose MLPs have it (Scenario-Wise Rec's `MLP`: Linear,
    BatchNorm1d, activation, dropout). In evaluation it uses the running statistics, so rows never mix."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def relu_mlp(input_dim: int, widths: tuple[int, ...], dropout: float = 0.0,
             batch_norm: bool = False) -> nn.Sequential:
    """Linear (+ batch norm) + ReLU (+ dropout) per width; output size: widths[-1] (input_dim when empty)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers.append(nn.Linear(input_dim, width))
        if batch_norm:
            layers.append(LastDimBatchNorm(width))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        input_dim = width
    return nn.Sequential(*layers)


class MLPTower(nn.Module):
    """ReLU MLP with hidden sizes `hidden`, then one logit. Output size: 1 (squeezed to [...])."""

    def __init__(self, input_dim: int, hidden: tuple[int, ...] = DEFAULT_HIDDEN, dropout: float = 0.0,
                 batch_norm: bool = False):
        super().__init__()
        self.hidden = relu_mlp(input_dim, hidden, dropout, batch_norm)
        self.logit = nn.Linear(hidden[-1] if hidden else input_dim, 1)
        self.output_dim = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(self.hidden(x)).squeeze(-1)


class ScenarioGatedLayer(nn.Module):
    """One SDT layer (eq. 11): H' = ReLU(W_T (H * sigmoid(G([H, e_st]))) + b_T).

    Eq. 11 writes sigmoid(concat(H, e_st)) multiplying H, which only type-checks with a projection
    G back to H's width; we add that projection (with bias). `gate_input="scenario"` projects
    e_st alone, the PEPNet-style reading. `gate_scale` multiplies the sigmoid: 1 is eq. 11; 2 is
    PEPNet's 2*sigmoid, whose gates start near 1 instead of 0.5 (four layers of 0.5 shrink the
    tower's signal 16-fold at initialisation). Output size: `width`.
    """

    def __init__(self, input_dim: int, width: int, scenario_dim: int, gate_input: SdtGateInput,
                 gate_scale: float = 1.0):
        super().__init__()
        self.gate_input = gate_input
        self.gate_scale = gate_scale
        gate_in = scenario_dim + (input_dim if gate_input == "hidden+scenario" else 0)
        self.gate = nn.Linear(gate_in, input_dim)
        self.linear = nn.Linear(input_dim, width)
        self.output_dim = width

    def forward(self, hidden: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        gate_input = torch.cat([hidden, scenario], dim=-1) if self.gate_input == "hidden+scenario" else scenario
        return torch.relu(self.linear(hidden * (self.gate_scale * torch.sigmoid(self.gate(gate_input)))))


class ScenarioAwareTower(nn.Module):
    """SDT (eq. 9-11): every layer gates its input by the target scenario, then one logit."""

    def __init__(self, input_dim: int, scenario_dim: int, hidden: tuple[int, ...] = DEFAULT_HIDDEN,
                 gate_input: SdtGateInput = "hidden+scenario", gate_scale: float = 1.0):
        super().__init__()
        layers = []
        for width in hidden:
            layers.append(ScenarioGatedLayer(input_dim, width, scenario_dim, gate_input, gate_scale))
            input_dim = width
        self.layers = nn.ModuleList(layers)
        self.logit = nn.Linear(input_dim, 1)
        self.output_dim = 1

    def forward(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """x: [..., input_dim]; scenario: [..., scenario_dim] -> logits [...]."""
        for layer in self.layers:
            x = layer(x, scenario)
        return self.logit(x).squeeze(-1)
