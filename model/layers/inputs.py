"""The shared input of the baselines: the same embeddings and features SAINet sees, as fields.

Fields, each `dim` wide, per candidate ([B, C, F, dim]), in this order:
    target item, each item feature (categorical, then numeric), mean-pooled history items, target
    scenario, each request feature (categorical, then numeric)
(`history_field` and `scenario_field` name the two positions models address directly).
The history is pooled once per request (masked mean of the behaviours' item embeddings, zeros for
an empty history) and shared by its C candidates, which keeps the baselines inside the model's
shape contract. Models that route by scenario (towers, gates) read `scenario_index` and
`scenario_embedding` too.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from model.batch import Batch
from model.data.schema import FIRST_KNOWN_INDEX, FeatureSchema
from model.layers.attention import masked_mean
from model.layers.embedding import FeatureEmbeddings


class BaselineFields(NamedTuple):
    fields: torch.Tensor              # [B, C, F, dim]
    scenario_embedding: torch.Tensor  # [B, C, dim] target scenario, per candidate
    scenario_index: torch.Tensor      # [B] 0-based index of the target scenario (OOV/padding -> 0)

    @property
    def flat(self) -> torch.Tensor:
        """[B, C, F * dim]"""
        return self.fields.flatten(start_dim=2)


class BaselineInputs(nn.Module):
    """Output: `num_fields` fields of `dim` each (`output_dim` = num_fields * dim flattened)."""

    def __init__(self, schema: FeatureSchema, dim: int):
        super().__init__()
        self.embeddings = FeatureEmbeddings(schema, dim)
        self.dim = dim
        self.num_scenarios = len(schema.scenarios)
        self.num_fields = 3 + self.embeddings.num_request_fields + self.embeddings.num_item_fields
        self.history_field = 1 + self.embeddings.num_item_fields
        self.scenario_field = self.history_field + 1
        self.output_dim = self.num_fields * dim

    def forward(self, batch: Batch) -> BaselineFields:
        b, c = batch.cand_items.shape
        emb = self.embeddings
        history = masked_mean(emb.item(batch.hist_items), batch.history_mask)          # [B, d], once per request
        scenario = emb.scenario(batch.target_scenario)                                   # [B, d]
        per_request = torch.cat([torch.stack([history, scenario], dim=1), emb.request_fields(batch)], dim=1)
        request_fields = per_request[:, None].expand(b, c, -1, -1)                       # [B, C, 2+Fu, d]
        per_candidate = torch.cat([emb.item(batch.cand_items)[:, :, None], emb.item_fields(batch)], dim=2)
        fields = torch.cat([per_candidate, request_fields], dim=2)                        # [B, C, F, d]
        scenario_index = (batch.target_scenario - FIRST_KNOWN_INDEX).clamp(0, self.num_scenarios - 1)
        return BaselineFields(fields, scenario[:, None, :].expand(b, c, -1), scenario_index)
