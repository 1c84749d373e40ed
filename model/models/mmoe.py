"""MMoE baseline (Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018), with one task per scenario: n expert MLPs shared by all
scenarios, one softmax gate per scenario over the experts and one tower per scenario (eq. 5-6):

    y_k = h_k(f_k(x)),  f_k(x) = sum_i g_k(x)_i f_i(x),  g_k(x) = softmax(W_gk x)

A request is scored with its target scenario's gate and tower.

Fields (`BaselineInputs`, the same for every baseline): target item, mean-pooled history items,
target scenario, request features and item features, `embed_dim` wide each, concatenated into x.

Paper choices:
- Gates are linear maps without bias followed by a softmax (eq. 6, W_gk in R^{n x d}), with the
  whole input x as the gate input, as in the paper.
- `experts` = 4 by default (the paper sweeps the number of experts and uses 8 on its synthetic
  data; 4 keeps the expert compute about 4x the shared-bottom's on CPU).
- Sizes: `tower` (default [512, 256, 128, 64]) is split in two. The first `expert_layers` widths
  form each expert (ReLU MLP), the rest each scenario's tower: experts [512, 256], towers
  [128, 64] + logit. With the default `expert_layers=0` the experts take the first half of
  `tower`, rounded up.
- The target scenario embedding stays an input field (as for every baseline), so the gates
  see it too.

Routing: every scenario's gate is computed, the target scenario's is picked by indexing with
`scenario_index` (OOV/padding target scenarios use scenario 0); the mixture it gives then goes
through every tower and the target scenario's logit is picked the same way. Towers of other
scenarios see the target gate's mixture, but their outputs are discarded, so each request's
score is exactly y_k for k = its target scenario. No control flow on tensor values, so the ONNX
export keeps dynamic B and C.
Initialisation: N(0, `init_std`) for embeddings and all linear weights (gates included, so the
gates start near uniform), zero biases (`embedding_init_std` and `linear_init` change it,
`init_baseline_`). `dropout` and `batch_norm` (off by default) act after every hidden Linear of the
experts and towers; `batch_norm` also normalises the gate logits before the softmax, as a
Scenario-Wise Rec gate (an `MLP` of one softmax layer: Linear, BatchNorm1d, softmax) does.
Output: logits [B, C] (`output_dim` = 1 per candidate); rows never mix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.batch import Batch
from model.data.schema import FeatureSchema
from model.layers.embedding import init_baseline_
from model.layers.inputs import BaselineInputs
from model.layers.towers import LastDimBatchNorm, MLPTower, relu_mlp
from model.models.baseline_config import BaselineConfig
from model.models.registry import register_model


def gate_logits(input_dim: int, experts: int, batch_norm: bool) -> nn.Module:
    """A softmax gate's logits: a Linear without bias (a bias before a batch norm would cancel), then
    the batch norm when asked. Output size: `experts`."""
    linear = nn.Linear(input_dim, experts, bias=False)
    return nn.Sequential(linear, LastDimBatchNorm(experts)) if batch_norm else linear


class MMoE(nn.Module):
    @dataclass(frozen=True)
    class Config(BaselineConfig):
        experts: int = 4                          # n
        expert_layers: int = 0                    # widths of `tower` in each expert; 0: half, rounded up

        def __post_init__(self):
            if self.experts < 1:
                raise ValueError(f"experts={self.experts} must be at least 1")
            if not 0 <= self.expert_layers <= len(self.tower) or not self.tower:
                raise ValueError(f"expert_layers={self.expert_layers} must be in 0..{len(self.tower)} "
                                 f"(0: half of tower={tuple(self.tower)}), with a non-empty tower")

        @property
        def split(self) -> int:
            return self.expert_layers or (len(self.tower) + 1) // 2

    def __init__(self, schema: FeatureSchema, config: Config):
        super().__init__()
        self.config = config
        self.inputs = BaselineInputs(schema, config.embed_dim, tuple(config.input_fields))
        self.num_scenarios = self.inputs.num_scenarios
        widths, split, d_in = tuple(config.tower), config.split, self.inputs.output_dim
        self.experts = nn.ModuleList(relu_mlp(d_in, widths[:split], config.dropout, config.batch_norm)
                                     for _ in range(config.experts))
        self.gates = nn.ModuleList(gate_logits(d_in, config.experts, config.batch_norm)
                                   for _ in range(self.num_scenarios))
        self.towers = nn.ModuleList(MLPTower(widths[split - 1], widths[split:], config.dropout, config.batch_norm)
                                    for _ in range(self.num_scenarios))
        self.output_dim = 1
        init_baseline_(self, config)

    def gate_weights(self, batch: Batch) -> torch.Tensor:
        """[B, C, n]: the target scenario's softmax gate over the experts."""
        inputs = self.inputs(batch)
        return self._target_gate(inputs.flat, inputs.scenario_index)

    def _target_gate(self, x: torch.Tensor, scenario_index: torch.Tensor) -> torch.Tensor:
        gate_logits = torch.stack([gate(x) for gate in self.gates], dim=1)        # [B, S, C, n]
        rows = torch.arange(x.shape[0], device=x.device)
        return torch.softmax(gate_logits[rows, scenario_index], dim=-1)          # [B, C, n]

    def forward(self, batch: Batch) -> torch.Tensor:
        inputs = self.inputs(batch)
        x = inputs.flat                                                            # [B, C, F * d]
        experts = torch.stack([expert(x) for expert in self.experts], dim=-2)     # [B, C, n, h]
        gate = self._target_gate(x, inputs.scenario_index)                         # [B, C, n]
        mixed = (gate[..., None] * experts).sum(dim=-2)                            # [B, C, h]
        logits = torch.stack([tower(mixed) for tower in self.towers], dim=1)      # [B, S, C]
        rows = torch.arange(x.shape[0], device=x.device)
        return logits[rows, inputs.scenario_index]                                 # [B, C]


register_model("mmoe", MMoE, "baseline: MMoE, n shared experts, one softmax gate and tower per scenario")
