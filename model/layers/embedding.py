"""Embedding tables for items, scenarios and the other categorical features, and the embeddings of
the numeric ones (a field of `dim` = the standardised value times a learnt vector, so a dense
feature is one more field to every model, and a missing one, imputed to 0, a zero vector).

Each model owns its own `FeatureEmbeddings`; nothing is cached on shared schema objects, so two
models never share weights by accident.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from model.batch import Batch
from model.data.schema import PAD_INDEX, FeatureSchema


class NumericEmbedding(nn.Module):
    """F dense features -> F fields of `dim`: value * vector (FuxiCTR's numeric embedding)."""

    def __init__(self, num_features: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_features, dim))
        nn.init.normal_(self.weight, 0.0, 1e-2)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """[..., F] -> [..., F, dim]"""
        return values.unsqueeze(-1) * self.weight


class FeatureEmbeddings(nn.Module):
    """Item and scenario tables (shared by history and target, as in the paper's e_i and e_s)
    plus one table per other feature and the numeric features' embeddings. Output sizes:
    items/scenarios `dim`; other features `request_dim` = (F_request + F_request_numeric) * dim and
    `item_feature_dim` = (F_item + F_item_numeric) * dim (`request_fields` and `item_fields` of them)."""

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
        # None without numeric features: no empty parameters (the numeric inputs are 0 wide then)
        self.request_numeric = NumericEmbedding(len(schema.request_numeric), dim) if schema.request_numeric else None
        self.item_numeric = NumericEmbedding(len(schema.item_numeric), dim) if schema.item_numeric else None
        self.num_request_fields = len(self.request_names) + len(schema.request_numeric)
        self.num_item_fields = len(self.item_feature_names) + len(schema.item_numeric)
        self.request_dim = dim * self.num_request_fields
        self.item_feature_dim = dim * self.num_item_fields

    def request_fields(self, batch: Batch) -> torch.Tensor:
        """[B, num_request_fields, dim]: user/context categorical features, then numeric ones."""
        parts = [self.features[name](batch.request_features[:, i]) for i, name in enumerate(self.request_names)]
        fields = [torch.stack(parts, dim=1)] if parts else []
        if self.request_numeric is not None:
            fields.append(self.request_numeric(batch.request_numeric.to(self.item.weight.dtype)))  # [B, Fn, d]
        if not fields:
            return self.item.weight.new_zeros((batch.target_scenario.shape[0], 0, self.dim))
        return torch.cat(fields, dim=1)

    def item_fields(self, batch: Batch) -> torch.Tensor:
        """[B, C, num_item_fields, dim]: item-side categorical features, then numeric ones."""
        parts = [self.features[name](batch.cand_features[..., i]) for i, name in enumerate(self.item_feature_names)]
        fields = [torch.stack(parts, dim=2)] if parts else []
        if self.item_numeric is not None:
            fields.append(self.item_numeric(batch.cand_numeric.to(self.item.weight.dtype)))       # [B, C, Fn, d]
        if not fields:
            return self.item.weight.new_zeros((*batch.cand_items.shape, 0, self.dim))
        return torch.cat(fields, dim=2)

    def request_feature_vector(self, batch: Batch) -> torch.Tensor:
        """[B, request_dim]: concatenated user/context feature embeddings."""
        return self.request_fields(batch).flatten(start_dim=1)

    def item_feature_vector(self, batch: Batch) -> torch.Tensor:
        """[B, C, item_feature_dim]: concatenated item-side feature embeddings per candidate."""
        return self.item_fields(batch).flatten(start_dim=2)

    def other_features(self, batch: Batch) -> torch.Tensor:
        """[B, C, request_dim + item_feature_dim]: the paper's e_o for every candidate."""
        num_candidates = batch.cand_items.shape[1]
        request = self.request_feature_vector(batch)[:, None, :].expand(-1, num_candidates, -1)
        return torch.cat([request, self.item_feature_vector(batch)], dim=-1)


# How Linear layers are initialised: N(0, std) with zero biases (the paper's Sec. 5.1), Xavier
# uniform with zero biases, or PyTorch's default as built (Kaiming uniform weights and biases; the
# Scenario-Wise Rec benchmark never re-initialises its Linear layers).
LinearInit = Literal["normal", "xavier", "pytorch"]


def init_weights_(module: nn.Module, embedding_std: float, linear: LinearInit, linear_std: float) -> None:
    """Embedding tables (numeric embeddings too) ~ N(0, embedding_std) with zero padding rows;
    Linear layers by `linear` (N(0, linear_std) for "normal"). Batch norms keep their (1, 0)."""
    for sub in module.modules():
        if isinstance(sub, NumericEmbedding):
            nn.init.normal_(sub.weight, 0.0, embedding_std)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, 0.0, embedding_std)
            if sub.padding_idx is not None:
                with torch.no_grad():
                    sub.weight[sub.padding_idx].zero_()
        elif isinstance(sub, nn.Linear) and linear != "pytorch":
            if linear == "normal":
                nn.init.normal_(sub.weight, 0.0, linear_std)
            else:
                nn.init.xavier_uniform_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)


def init_normal_(module: nn.Module, std: float, linear: bool = True) -> None:
    """The paper's initialisation (Sec. 5.1): weights ~ N(0, std), biases 0, padding rows 0.

    With `linear=False` only embeddings are drawn from N(0, std); Linear layers keep Xavier
    weights (use it for attention and gate projections, see `SAINet.Config.init_scope`)."""
    init_weights_(module, std, "normal" if linear else "xavier", std)


def init_baseline_(module: nn.Module, config) -> None:
    """A baseline's initialisation from its config's `init_std`, `embedding_init_std` (None: init_std)
    and `linear_init`: by default N(0, init_std) for everything, as the paper initialises SAINet."""
    embedding_std = config.init_std if config.embedding_init_std is None else config.embedding_init_std
    init_weights_(module, embedding_std, config.linear_init, config.init_std)
