"""Embedding tables for items, scenarios and the other categorical features.

Each model owns its own `FeatureEmbeddings`; nothing is cached on shared schema objects, so two
models never share weights by accident.
"""

from __future__ import annotations

import torch
from torch import nn

from model.batch import Batch
from model.data.schema import PAD_INDEX, FeatureSchema


class FeatureEmbeddings(nn.Module):
    """Item and scenario tables (shared by history and target, as in the paper's e_i and e_s)
    plus one table per other feature. Output sizes: items/scenarios `dim`; other features
    `request_dim` = F_request * dim and `item_feature_dim` = F_item * dim."""

    def __init__(self, schema: FeatureSchema, dim: int):
        super().__init__()
        self.dim = dim
        self.item = nn.Embedding(schema.num_item_embeddings, dim, padding_idx=PAD_INDEX)
        self.scenario = nn.Embedding(schema.num_scenario_embeddings, dim, padding_idx=PAD_INDEX)
        self.request_names = [f.name for f in schema.request_features]
        self.item_feature_names = [f.name for f in schema.item_features]
        self.features = nn.ModuleDict({
            f.name: nn.Embedding(schema.vocab_sizes[f.name], dim, padding_idx=PAD_INDEX)
            for f in schema.features
        })
        self.request_dim = dim * len(self.request_names)
        self.item_feature_dim = dim * len(self.item_feature_names)

    def request_feature_vector(self, batch: Batch) -> torch.Tensor:
        """[B, request_dim]: concatenated user/context feature embeddings."""
        parts = [self.features[name](batch.request_features[:, i]) for i, name in enumerate(self.request_names)]
        return torch.cat(parts, dim=-1) if parts else batch.hist_items.new_zeros((batch.hist_items.shape[0], 0),
                                                                                dtype=self.item.weight.dtype)

    def item_feature_vector(self, batch: Batch) -> torch.Tensor:
        """[B, C, item_feature_dim]: concatenated item-side feature embeddings per candidate."""
        parts = [self.features[name](batch.cand_features[..., i]) for i, name in enumerate(self.item_feature_names)]
        if parts:
            return torch.cat(parts, dim=-1)
        return batch.cand_items.new_zeros((*batch.cand_items.shape, 0), dtype=self.item.weight.dtype)

    def other_features(self, batch: Batch) -> torch.Tensor:
        """[B, C, request_dim + item_feature_dim]: the paper's e_o for every candidate."""
        num_candidates = batch.cand_items.shape[1]
        request = self.request_feature_vector(batch)[:, None, :].expand(-1, num_candidates, -1)
        return torch.cat([request, self.item_feature_vector(batch)], dim=-1)


def init_normal_(module: nn.Module, std: float, linear: bool = True) -> None:
    """The paper's initialisation (Sec. 5.1): weights ~ N(0, std), biases 0, padding rows 0.

    With `linear=False` only embeddings are drawn from N(0, std); Linear layers keep Xavier
    weights (use it for attention and gate projections, see `SAINet.Config.init_scope`)."""
    for sub in module.modules():
        if isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, 0.0, std)
            if sub.padding_idx is not None:
                with torch.no_grad():
                    sub.weight[sub.padding_idx].zero_()
        elif isinstance(sub, nn.Linear):
            if linear:
                nn.init.normal_(sub.weight, 0.0, std)
            else:
                nn.init.xavier_uniform_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
