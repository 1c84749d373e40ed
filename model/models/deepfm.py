"""DeepFM baseline (Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR
Prediction", IJCAI 2017): y = sigmoid(y_FM + y_DNN), with the FM and the DNN sharing one set of
field embeddings (the paper's point against Wide&Deep: no feature engineering, shared input).

Fields (`BaselineInputs`, the same for every baseline), F of them, `embed_dim` wide: target item,
mean-pooled history items, target scenario, each request feature, each item feature.

Paper choices:
- FM first order, <w, x> (eq. 2): a scalar weight per vocabulary entry, i.e. a second
  `BaselineInputs` with 1-dim embeddings, summed over the fields. For the history field this is
  the mean of the behaviours' weights, which is exactly <w, x> for the history as a multi-hot x
  normalised to sum 1 (the same reading that gives the mean-pooled history embedding).
- FM second order, sum_{i<j} <V_i, V_j> x_i x_j: pairwise inner products of the F field
  embeddings, computed as 0.5 * sum_k [(sum_i v_ik)^2 - sum_i v_ik^2] (Rendle's identity).
  Interactions are between fields, so the history field is one field (no interaction of a user's
  behaviours with each other), as in common DeepFM implementations for sequence features.
- No separate global bias: the DNN's output layer has one, which plays FM's w_0.
- DNN: the paper uses 200-200-200 with dropout 0.5; we use the common tower `tower` (default
  [512, 256, 128, 64], ReLU, no dropout) so that every baseline has the same prediction tower.
Initialisation: N(0, `init_std`) for all embeddings (both orders) and linear weights, zero biases
(`embedding_init_std` and `linear_init` change it). `dropout`, `batch_norm` (the DNN part) and
`input_fields` (both orders and the DNN) as in `BaselineConfig`.

Output: logits [B, C] (`output_dim` = 1 per candidate) = first order + second order + DNN; every
term is computed per candidate row, so C candidates in one forward equal C separate forwards.
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


def fm_second_order(fields: torch.Tensor) -> torch.Tensor:
    """[..., F, d] -> [...]: sum over field pairs i < j of <v_i, v_j>."""
    square_of_sum = fields.sum(dim=-2).pow(2)
    sum_of_squares = fields.pow(2).sum(dim=-2)
    return 0.5 * (square_of_sum - sum_of_squares).sum(dim=-1)


class DeepFM(nn.Module):
    @dataclass(frozen=True)
    class Config(BaselineConfig):
        pass

    def __init__(self, schema: FeatureSchema, config: Config):
        super().__init__()
        self.config = config
        fields = tuple(config.input_fields)
        self.inputs = BaselineInputs(schema, config.embed_dim, fields)   # V: shared by FM and DNN
        self.first_order = BaselineInputs(schema, 1, fields)              # w: one scalar per vocabulary entry
        self.dnn = MLPTower(self.inputs.output_dim, tuple(config.tower), config.dropout, config.batch_norm)
        self.output_dim = 1
        init_baseline_(self, config)

    def fm(self, batch: Batch, fields: torch.Tensor | None = None) -> torch.Tensor:
        """FM part [B, C]: first order + second order (no bias)."""
        if fields is None:
            fields = self.inputs(batch).fields
        first = self.first_order(batch).fields.sum(dim=(-2, -1))      # [B, C, F, 1] -> [B, C]
        return first + fm_second_order(fields)

    def forward(self, batch: Batch) -> torch.Tensor:
        inputs = self.inputs(batch)
        return self.fm(batch, inputs.fields) + self.dnn(inputs.flat)


register_model("deepfm", DeepFM, "baseline: DeepFM (FM first + second order + DNN, shared embeddings)")
