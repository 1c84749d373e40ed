"""SFPNet-style baseline (Zhang et al., "Scenario-Adaptive Fine-Grained Personalization Network:
Tailoring User Behavior Representation to the Scenario Context", SIGIR 2024), on the shared
`BaselineInputs`.

We did not have the paper's equations, only its abstract and the descriptions in the SAINet paper
and in reviews: a stack of *scenario-tailoring blocks*, each first integrating scenario information
"at a coarse-grained level by redefining fundamental features" with a parameter-personalisation
(gating) unit, the Scenario-Adaptive Module (SAM), then consolidating the scenario-adjusted features
into a context that a Residual-Tailoring Module (RTM) adds to every behaviour's representation by a
residual connection; the tailored behaviours support scenario-aware interest modelling, then a DNN
tower predicts. What we implemented (our design, in that spirit):

Each of `blocks` (2) stacked blocks, over the fields E in R^{F x d} of one candidate and the
target-scenario embedding e_s:
1. SAM, re-defining every field with the scenario: E' = E ⊙ gamma * sigmoid(W_g [E, e_s] + b_g)
   + W_b e_s, a gate per field element (gamma = 2, PEPNet-style range (0, 2)) plus a scenario bias
   per field.
2. RTM on the behaviour representation: context c = ReLU(W_c E') consolidates the re-defined
   fields; the history field becomes h' = h + W_r c (residual tailoring).
3. The target scenario injected into the behaviour representation:
   h'' = h' ⊙ gamma * sigmoid(W_h [h', e_s]).
   For a user with no history, h'' is kept at 0 (there is no behaviour to tailor).
Then the final fields, flattened, go through the [512, 256, 128, 64] ReLU tower.
Initialisation: N(0, `init_std`), zero biases (`embedding_init_std`, `linear_init` change it);
`dropout` and `batch_norm` act in the tower, `input_fields` must keep the history (`BaselineConfig`).

The shared inputs pool the history into one field (masked mean) before any model sees it, so the
per-behaviour tailoring of the paper (and its distribution-aware pooling) becomes tailoring of the
pooled history field; this is the main difference from SFPNet.

Output: logits [B, C] (`output_dim` = 1 per candidate).
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


class ScenarioTailoringBlock(nn.Module):
    """SAM (scenario gate and bias on every field) + RTM (residual context and scenario gate on the
    history field). Output size: `num_fields` fields of `dim` (same as the input)."""

    def __init__(self, num_fields: int, dim: int, history_field: int, gamma: float):
        super().__init__()
        width = num_fields * dim
        self.num_fields, self.dim, self.history_field, self.gamma = num_fields, dim, history_field, gamma
        self.field_gate = nn.Linear(width + dim, width)      # W_g
        self.field_bias = nn.Linear(dim, width)              # W_b
        self.context = nn.Linear(width, dim)                 # W_c
        self.residual = nn.Linear(dim, dim)                  # W_r
        self.behaviour_gate = nn.Linear(2 * dim, dim)        # W_h
        self.output_dim = width

    def forward(self, fields: torch.Tensor, scenario: torch.Tensor, has_history: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """fields [B, C, F, d], scenario [B, C, d], has_history [B, 1, 1] ->
        (fields [B, C, F, d], behaviour gate [B, C, d])."""
        flat = fields.flatten(start_dim=2)
        gate = self.gamma * torch.sigmoid(self.field_gate(torch.cat([flat, scenario], dim=-1)))
        tailored = flat * gate + self.field_bias(scenario)                                  # SAM
        context = torch.relu(self.context(tailored))
        fields = tailored.reshape(fields.shape)
        h = self.history_field
        behaviour = fields[:, :, h] + self.residual(context)                                 # RTM
        behaviour_logit = self.behaviour_gate(torch.cat([behaviour, scenario], dim=-1))
        behaviour_gate = self.gamma * torch.sigmoid(behaviour_logit)
        behaviour = behaviour * behaviour_gate * has_history
        fields = torch.cat([fields[:, :, :h], behaviour[:, :, None], fields[:, :, h + 1:]], dim=2)
        return fields, behaviour_gate


class SFPNet(nn.Module):
    @dataclass(frozen=True)
    class Config(BaselineConfig):
        blocks: int = 2               # stacked scenario-tailoring blocks
        gamma: float = 2.0            # gate scale: gates in (0, gamma)

    def __init__(self, schema: FeatureSchema, config: Config):
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.inputs = BaselineInputs(schema, d, tuple(config.input_fields))
        if self.inputs.history_field is None:
            raise ValueError(f"SFPNet tailors the history field: input_fields={tuple(config.input_fields)} "
                             "must include 'history'")
        self.blocks = nn.ModuleList(
            ScenarioTailoringBlock(self.inputs.num_fields, d, self.inputs.history_field, config.gamma)
            for _ in range(config.blocks))
        self.tower = MLPTower(self.inputs.output_dim, tuple(config.tower), config.dropout, config.batch_norm)
        self.output_dim = 1
        init_baseline_(self, config)

    def tailored_fields(self, batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(fields after the last block [B, C, F, d], behaviour gates of every block [B, C, d])."""
        inputs = self.inputs(batch)
        has_history = batch.history_mask.any(dim=1).to(inputs.fields.dtype)[:, None, None]
        fields, gates = inputs.fields, []
        for block in self.blocks:
            fields, gate = block(fields, inputs.scenario_embedding, has_history)
            gates.append(gate)
        return fields, gates

    def forward(self, batch: Batch) -> torch.Tensor:
        fields, _ = self.tailored_fields(batch)
        return self.tower(fields.flatten(start_dim=2))


register_model("sfpnet", SFPNet,
               "SFPNet-style (Zhang et al. 2024): stacked scenario-tailoring blocks, DNN tower")
