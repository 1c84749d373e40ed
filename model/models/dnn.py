"""DNN baseline: one MLP tower shared by every scenario, over the shared baseline fields.

Inputs (`BaselineInputs`, the same for every baseline): target item, mean-pooled history items,
target scenario, request (user/context) features and item features, each an `embed_dim`-wide
field, concatenated. The target scenario is just one more field: there is no scenario-specific
parameter, which is what makes this the "single shared model" reference point of the paper's
comparison.

Tower: ReLU MLP `tower` (default [512, 256, 128, 64], the SDT sizes of SAINet) then one logit.
Initialisation: N(0, `init_std`) for embeddings and linear weights, zero biases (Sec. 5.1;
`embedding_init_std` and `linear_init` change it, `init_baseline_`). `dropout`, `batch_norm` and
`input_fields` (off / all by default) as in `BaselineConfig`.
Output: logits [B, C] (`output_dim` = 1 per candidate). Each candidate row goes through the tower
on its own, so C candidates in one forward equal C separate forwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.batch import Batch
from model.data.schema import FeatureSchema
from model.layers.embedding import init_baseline_
from model.layers.inputs import BaselineInputs
from model.layers.towers import MLPTower
from model.models.baseline_config import BaselineConfig
from model.models.registry import register_model


class DNN(nn.Module):
    @dataclass(frozen=True)
    class Config(BaselineConfig):
        pass

    def __init__(self, schema: FeatureSchema, config: Config):
        super().__init__()
        self.config = config
        self.inputs = BaselineInputs(schema, config.embed_dim, tuple(config.input_fields))
        self.tower = MLPTower(self.inputs.output_dim, tuple(config.tower), config.dropout, config.batch_norm)
        self.output_dim = 1
        init_baseline_(self, config)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.tower(self.inputs(batch).flat)                 # [B, C, F * d] -> [B, C]


register_model("dnn", DNN, "baseline: one shared MLP tower over all fields (target scenario as a field)")
