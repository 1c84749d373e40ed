"""PLE baseline (Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning
(MTL) Model for Personalized Recommendations", RecSys 2020), with one task per scenario.

Each extraction level is a CGC (Customized Gate Control, Sec. 4.2-4.3): every scenario k has
its own experts E_k, a shared expert module E_s serves all scenarios, and

    g^{k,j} = softmax(W_g^{k,j} g^{k,j-1}) [E_k^j(g^{k,j-1}), E_s^j(g^{s,j-1})]     (eq. 2-4, 6)
    g^{s,j} = softmax(W_g^{s,j} g^{s,j-1}) [E_1^j, ..., E_S^j, E_s^j]                 (shared gate)

with g^{k,0} = g^{s,0} = x. The last level has no shared gate (nothing reads it), and scenario k
is scored by its tower: y^k = t^k(g^{k,L}) (eq. 7). A request uses its target scenario's y^k.

Fields (`BaselineInputs`, the same for every baseline): target item, mean-pooled history items,
target scenario, request features and item features, `embed_dim` wide each, concatenated into x.

Paper choices:
- `levels` = 2 extraction levels, `specific_experts` = 1 per scenario and `shared_experts` = 1
  per level: the smallest PLE that has both kinds of expert and progressive (multi-level)
  extraction. With 3 scenarios that is 4 experts per level, MMoE's default count. `levels=1`
  gives CGC.
- Gates are linear maps without bias followed by a softmax over the selected experts (eq. 4:
  w^k(x) = Softmax(W_g^k x)), their input is the previous level's output of the same scenario
  (or of the shared module for the shared gate), as in the paper.
- Sizes: `tower` (default [512, 256, 128, 64]) is consumed in order. Each level's experts take
  the next `expert_layers` (default 1) widths as a ReLU MLP and the rest form each scenario's
  tower: level-1 experts [512], level-2 experts [256], towers [128, 64] + logit, so a request's
  path has the depth and widths of the DNN baseline (and of MMoE's experts [512, 256] + towers).
- The target scenario embedding stays an input field (as for every baseline).

Routing: every scenario's stream is computed as in the paper (scenario-specific experts run on
their own scenario's stream, which is what the shared gates read); all towers score, and the
target scenario's logit is picked by indexing with `scenario_index` (OOV/padding target
scenarios use scenario 0). No control flow on tensor values, so the ONNX export keeps dynamic B
and C. Cost grows with the number of scenarios S, as PLE's does with the number of tasks.
Initialisation: N(0, `init_std`) for embeddings and all linear weights (gates included, so the
gates start near uniform), zero biases (`embedding_init_std` and `linear_init` change it,
`init_baseline_`). `dropout` and `batch_norm` (off by default) act as MMoE's: after every hidden
Linear of experts and towers, and `batch_norm` on the gate logits.
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
from model.layers.towers import MLPTower, relu_mlp
from model.models.baseline_config import BaselineConfig
from model.models.mmoe import gate_logits
from model.models.registry import register_model


def _mix(gate_logits: torch.Tensor, experts: list[torch.Tensor]) -> torch.Tensor:
    """Softmax gate [..., m] over m expert outputs [..., h] -> [..., h]."""
    weights = torch.softmax(gate_logits, dim=-1)
    return (weights[..., None] * torch.stack(experts, dim=-2)).sum(dim=-2)


class ExtractionLevel(nn.Module):
    """One CGC extraction network over S scenario streams and one shared stream.
    Output: S scenario streams and (unless `last`) the shared stream, `widths[-1]` wide each."""

    def __init__(self, num_scenarios: int, input_dim: int, widths: tuple[int, ...], specific: int,
                 shared: int, last: bool, dropout: float = 0.0, batch_norm: bool = False):
        super().__init__()
        def expert() -> nn.Sequential:
            return relu_mlp(input_dim, widths, dropout, batch_norm)
        self.specific = nn.ModuleList(nn.ModuleList(expert() for _ in range(specific))
                                      for _ in range(num_scenarios))
        self.shared = nn.ModuleList(expert() for _ in range(shared))
        self.scenario_gates = nn.ModuleList(gate_logits(input_dim, specific + shared, batch_norm)
                                            for _ in range(num_scenarios))
        every_expert = num_scenarios * specific + shared
        self.shared_gate = None if last else gate_logits(input_dim, every_expert, batch_norm)
        self.output_dim = widths[-1]

    def forward(self, streams: list[torch.Tensor], shared_stream: torch.Tensor
                ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        shared_out = [expert(shared_stream) for expert in self.shared]
        specific_out = [[expert(x) for expert in experts] for experts, x in zip(self.specific, streams)]
        outputs = [_mix(gate(x), own + shared_out)
                   for gate, x, own in zip(self.scenario_gates, streams, specific_out)]
        if self.shared_gate is None:
            return outputs, None
        every_expert = [out for own in specific_out for out in own] + shared_out
        return outputs, _mix(self.shared_gate(shared_stream), every_expert)


class PLE(nn.Module):
    @dataclass(frozen=True)
    class Config(BaselineConfig):
        levels: int = 2                           # extraction levels (1 = CGC)
        specific_experts: int = 1                 # per scenario and level
        shared_experts: int = 1                   # per level
        expert_layers: int = 1                    # widths of `tower` taken by each level's experts

        def __post_init__(self):
            if min(self.levels, self.specific_experts, self.shared_experts, self.expert_layers) < 1:
                raise ValueError("levels, specific_experts, shared_experts and expert_layers "
                                 "must be at least 1")
            if self.levels * self.expert_layers > len(self.tower):
                raise ValueError(f"levels * expert_layers = {self.levels * self.expert_layers} exceeds the "
                                 f"{len(self.tower)} widths of tower={tuple(self.tower)}")

    def __init__(self, schema: FeatureSchema, config: Config):
        super().__init__()
        self.config = config
        self.inputs = BaselineInputs(schema, config.embed_dim, tuple(config.input_fields))
        self.num_scenarios = self.inputs.num_scenarios
        widths, per_level = tuple(config.tower), config.expert_layers
        levels, input_dim = [], self.inputs.output_dim
        for j in range(config.levels):
            level = ExtractionLevel(self.num_scenarios, input_dim,
                                    widths[j * per_level:(j + 1) * per_level], config.specific_experts,
                                    config.shared_experts, last=j == config.levels - 1,
                                    dropout=config.dropout, batch_norm=config.batch_norm)
            levels.append(level)
            input_dim = level.output_dim
        self.levels = nn.ModuleList(levels)
        self.towers = nn.ModuleList(MLPTower(input_dim, widths[config.levels * per_level:], config.dropout,
                                             config.batch_norm)
                                    for _ in range(self.num_scenarios))
        self.output_dim = 1
        init_baseline_(self, config)

    def forward(self, batch: Batch) -> torch.Tensor:
        inputs = self.inputs(batch)
        x = inputs.flat                                                            # [B, C, F * d]
        streams, shared = [x] * self.num_scenarios, x
        for level in self.levels:
            streams, shared = level(streams, shared)
        logits = torch.stack([tower(s) for tower, s in zip(self.towers, streams)], dim=1)   # [B, S, C]
        rows = torch.arange(x.shape[0], device=x.device)
        return logits[rows, inputs.scenario_index]                                 # [B, C]


register_model("ple", PLE, "baseline: PLE, 2 CGC levels (1 shared + 1 specific expert per scenario), "
                           "per-scenario gates and towers")
