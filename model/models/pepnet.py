"""PEPNet (Chang et al., "PEPNet: Parameter and Embedding Personalized Network for Infusing with
Personalized Prior Information", KDD 2023), single task, on the shared `BaselineInputs`.

What follows the paper:
- Gate NU: delta = gamma * sigmoid(W2 ReLU(W1 x + b1) + b2) with gamma = 2, so gates lie in (0, 2).
- EPNet: delta_domain = U_ep(E(F_d) ⊕ ⊘(E)) with one gate per field, O_ep = delta_domain ⊗ E (each
  field's embedding scaled by its own scalar). The domain-side feature F_d is the target scenario;
  ⊘ is stop-gradient, so the gate does not push gradients into the general embeddings.
- PPNet: O_prior ⊕ ⊘(O_ep) feeds one Gate NU per DNN layer; each gate scales that layer's input
  hidden units, H^{l+1} = f((delta^l ⊗ H^l) W^l + b^l), from the input O_ep through the four hidden
  layers [512, 256, 128, 64] to the logit layer (five gates).

Choices forced by this project:
- The paper's personalised prior O_prior is the user/item/author ID embeddings; there are no user or
  author ids here, so the prior is the request side of the shared inputs: the target scenario, the
  pooled history (the user's representation) and the user/context features.
- The general embeddings E are all shared fields (the scenario field included: it is a general
  feature of every baseline); the EPNet gate input is the scenario embedding plus the stop-gradient
  of the *other* fields, so the scenario enters the gate once, with its gradient.
- One task (CTR), so PPNet has a single tower; the paper does not give the Gate NU hidden width,
  we use `gate_hidden` (64) for every gate.

Output: logits [B, C] (`output_dim` = 1 per candidate).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.batch import Batch
from model.data.schema import FeatureSchema
from model.layers.embedding import init_normal_
from model.layers.inputs import BaselineInputs
from model.layers.towers import DEFAULT_HIDDEN
from model.models.registry import register_model


class GateNU(nn.Module):
    """gamma * sigmoid(W2 ReLU(W1 x + b1) + b2). Output size: `output_dim`, values in (0, gamma)."""

    def __init__(self, input_dim: int, output_dim: int, hidden: int, gamma: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, output_dim))
        self.gamma = gamma
        self.output_dim = output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.sigmoid(self.net(x))


class PEPNet(nn.Module):
    @dataclass(frozen=True)
    class Config:
        embed_dim: int = 32
        gamma: float = 2.0            # Gate NU scale: gates in (0, gamma)
        gate_hidden: int = 64         # Gate NU hidden width (not given by the paper)
        tower: tuple[int, ...] = DEFAULT_HIDDEN
        init_std: float = 0.05

    def __init__(self, schema: FeatureSchema, config: Config):
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.inputs = BaselineInputs(schema, d)
        num_fields = self.inputs.num_fields
        self.epnet = GateNU(d + (num_fields - 1) * d, num_fields, config.gate_hidden, config.gamma)
        prior_dim = (num_fields - self.inputs.history_field) * d     # history, scenario, request features
        widths = [self.inputs.output_dim, *config.tower]
        pp_input = prior_dim + self.inputs.output_dim
        self.ppnet = nn.ModuleList(GateNU(pp_input, width, config.gate_hidden, config.gamma)
                                   for width in widths)               # one gate per layer input
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.logit = nn.Linear(widths[-1], 1)
        self.output_dim = 1
        init_normal_(self, config.init_std)

    def gates(self, batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(EPNet gates [B, C, F], PPNet gates per layer [B, C, width_l], O_ep [B, C, F * d])."""
        inputs = self.inputs(batch)
        fields = inputs.fields
        s = self.inputs.scenario_field
        others = torch.cat([fields[:, :, :s], fields[:, :, s + 1:]], dim=2).flatten(start_dim=2)
        ep_gate = self.epnet(torch.cat([inputs.scenario_embedding, others.detach()], dim=-1))   # [B, C, F]
        o_ep = (fields * ep_gate[..., None]).flatten(start_dim=2)
        prior = fields[:, :, self.inputs.history_field:].flatten(start_dim=2)
        pp_input = torch.cat([prior, o_ep.detach()], dim=-1)
        return ep_gate, [gate(pp_input) for gate in self.ppnet], o_ep

    def forward(self, batch: Batch) -> torch.Tensor:
        _, pp_gates, h = self.gates(batch)
        for layer, gate in zip(self.hidden, pp_gates[:-1]):
            h = torch.relu(layer(h * gate))
        return self.logit(h * pp_gates[-1]).squeeze(-1)


register_model("pepnet", PEPNet, "PEPNet (Chang et al. 2023): EPNet field gates + PPNet layer gates, gamma=2")
