"""Shared-Bottom baseline (hard parameter sharing, Caruana 1997; the multi-task baseline of the MMoE
and PLE papers), with one "task" per scenario: a bottom MLP shared by every scenario, then one
tower per scenario. A request is scored by its target scenario's tower.

Fields (`BaselineInputs`, the same for every baseline): target item, mean-pooled history items,
target scenario, request features and item features, `embed_dim` wide each, concatenated.

Sizes: `tower` (default [512, 256, 128, 64]) is split in two. The first `bottom_layers` widths
form the shared bottom, the rest each scenario's tower, so the depth and widths of every
request's path are those of the DNN baseline. With the default `bottom_layers=0` the bottom
takes the first half, rounded up: bottom [512, 256], per-scenario towers [128, 64] + logit.
The target scenario embedding stays an input field, as in the DNN baseline, so the only
difference is the per-scenario towers.

Routing: every tower scores every row ([B, S, C]) and the target scenario's row is picked by
indexing with `scenario_index` (OOV/padding target scenarios use scenario 0's tower). There is no
control flow on tensor values, so the ONNX export keeps dynamic B and C. Towers are tiny next to
the bottom, so scoring with all S of them costs little.
Initialisation: N(0, `init_std`) for embeddings and linear weights, zero biases (`embedding_init_std`
and `linear_init` change it, `init_baseline_`). `dropout` and `batch_norm` (off by default) act after
every hidden Linear of the bottom and towers, as a Scenario-Wise Rec `MLP` does.
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
from model.models.registry import register_model


class SharedBottom(nn.Module):
    @dataclass(frozen=True)
    class Config(BaselineConfig):
        bottom_layers: int = 0                    # widths of `tower` in the bottom; 0: half, rounded up

        def __post_init__(self):
            if not 0 <= self.bottom_layers <= len(self.tower) or not self.tower:
                raise ValueError(f"bottom_layers={self.bottom_layers} must be in 0..{len(self.tower)} "
                                 f"(0: half of tower={tuple(self.tower)}), with a non-empty tower")

        @property
        def split(self) -> int:
            return self.bottom_layers or (len(self.tower) + 1) // 2

    def __init__(self, schema: FeatureSchema, config: Config):
        super().__init__()
        self.config = config
        self.inputs = BaselineInputs(schema, config.embed_dim, tuple(config.input_fields))
        self.num_scenarios = self.inputs.num_scenarios
        widths = tuple(config.tower)
        self.bottom = relu_mlp(self.inputs.output_dim, widths[:config.split], config.dropout, config.batch_norm)
        self.towers = nn.ModuleList(MLPTower(widths[config.split - 1], widths[config.split:], config.dropout,
                                             config.batch_norm)
                                    for _ in range(self.num_scenarios))
        self.output_dim = 1
        init_baseline_(self, config)

    def forward(self, batch: Batch) -> torch.Tensor:
        inputs = self.inputs(batch)
        shared = self.bottom(inputs.flat)                                          # [B, C, h]
        logits = torch.stack([tower(shared) for tower in self.towers], dim=1)     # [B, S, C]
        rows = torch.arange(logits.shape[0], device=logits.device)
        return logits[rows, inputs.scenario_index]                                 # [B, C]


register_model("shared-bottom", SharedBottom,
               "baseline: shared bottom MLP, one tower per scenario (target scenario's tower scores)")
