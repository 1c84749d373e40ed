"""The shared input of the baselines: the same embeddings and features SAINet sees, as fields.

Fields, each `dim` wide, per candidate ([B, C, F, dim]), in this order:
    target item, each item feature (categorical, then numeric), mean-pooled history items, target
    scenario, each request feature (categorical, then numeric)
(`history_field` and `scenario_field` name the two positions models address directly; `field_names`
names them all: "item_id", the feature names, "history" and "scenario").
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
    """Output: `num_fields` fields of `dim` each (`output_dim` = num_fields * dim flattened).

    `fields` (names of `field_names`, empty: all) keeps only those fields, in the order above: a
    benchmark whose model reads fewer inputs (Scenario-Wise Rec's models see no scenario id and no
    history) is matched by leaving the others out. `scenario_embedding` and `scenario_index` stay."""

    def __init__(self, schema: FeatureSchema, dim: int, fields: tuple[str, ...] = ()):
        super().__init__()
        self.embeddings = FeatureEmbeddings(schema, dim)
        self.dim = dim
        self.num_scenarios = len(schema.scenarios)
        every_field = ["item_id", *(f.name for f in schema.item_features), *(f.name for f in schema.item_numeric),
                       "history", "scenario", *(f.name for f in schema.request_features),
                       *(f.name for f in schema.request_numeric)]
        unknown = sorted(set(fields) - set(every_field))
        if unknown:
            raise ValueError(f"input fields {unknown} are not among {every_field}")
        # None: every field (no indexing in the forward)
        self.kept = [i for i, name in enumerate(every_field) if name in fields] if fields else None
        self.field_names = [every_field[i] for i in self.kept] if fields else every_field
        self.num_fields = len(self.field_names)
        # positions in the kept fields; None when left out
        self.history_field = self.field_names.index("history") if "history" in self.field_names else None
        self.scenario_field = self.field_names.index("scenario") if "scenario" in self.field_names else None
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
        if self.kept is not None:
            fields = fields[:, :, self.kept]
        scenario_index = (batch.target_scenario - FIRST_KNOWN_INDEX).clamp(0, self.num_scenarios - 1)
        return BaselineFields(fields, scenario[:, None, :].expand(b, c, -1), scenario_index)
