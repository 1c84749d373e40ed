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

Scenario-Wise Rec's PPNet (`form="ppnet"`, the benchmark's "ppnet"/EPNet-less PPNet): no EPNet; the
prior is the embeddings of `prior_fields` (theirs: user and movie id) and the general fields all the
others; the gate input prior ⊕ ⊘(general) is also the tower's input, so the general embeddings never
learn (their code detaches them once for both); gates on the hidden layers' outputs only, each Gate NU
as wide as its output (`gate_hidden=None`), one tower per scenario (`scenario_towers`), `batch_norm`.

Output: logits [B, C] (`output_dim` = 1 per candidate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from model.batch import Batch
from model.data.schema import FeatureSchema
from model.layers.embedding import init_baseline_
from model.layers.inputs import BaselineInputs
from model.layers.towers import LastDimBatchNorm
from model.models.baseline_config import BaselineConfig
from model.models.registry import register_model

# "pepnet": the paper's EPNet + PPNet; "ppnet": Scenario-Wise Rec's PPNet (the module docstring says how
# the two differ).
PEPNetForm = Literal["pepnet", "ppnet"]


class GateNU(nn.Module):
    """gamma * sigmoid(W2 ReLU(W1 x + b1) + b2). Output size: `output_dim`, values in (0, gamma)."""

    def __init__(self, input_dim: int, output_dim: int, hidden: int, gamma: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, output_dim))
        self.gamma = gamma
        self.output_dim = output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.sigmoid(self.net(x))


class PPTower(nn.Module):
    """PPNet's DNN: H^{l+1} = f(H^l W^l + b^l) ⊗ delta^{l+1}, each delta a Gate NU of the gate input,
    then one logit. With `gate_fields` the input H^0 is gated too (delta^0), which is the paper's
    f((delta^l ⊗ H^l) W^l + b^l) for every layer and the logit; without it only the hidden layers'
    outputs are (Scenario-Wise Rec's PPTowerBlock). Output: logits [...] (size 1, squeezed)."""

    def __init__(self, input_dim: int, widths: tuple[int, ...], gate_input_dim: int, gate_hidden: int | None,
                 gamma: float, gate_fields: bool, batch_norm: bool, dropout: float):
        super().__init__()
        gated = [input_dim, *widths] if gate_fields else list(widths)
        # gate_hidden None: each gate's hidden width is its output width (Scenario-Wise Rec's GateNU)
        self.gates = nn.ModuleList(GateNU(gate_input_dim, width, gate_hidden or width, gamma) for width in gated)
        self.hidden = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), *([LastDimBatchNorm(b)] if batch_norm else []), nn.ReLU(),
                          *([nn.Dropout(dropout)] if dropout else []))
            for a, b in zip([input_dim, *widths[:-1]], widths))
        self.logit = nn.Linear(widths[-1] if widths else input_dim, 1)
        self.gate_fields = gate_fields

    def gate_values(self, gate_input: torch.Tensor) -> list[torch.Tensor]:
        return [gate(gate_input) for gate in self.gates]

    def forward(self, h: torch.Tensor, gate_input: torch.Tensor) -> torch.Tensor:
        gates = self.gate_values(gate_input)
        if self.gate_fields:
            h, gates = h * gates[0], gates[1:]
        for layer, gate in zip(self.hidden, gates):
            h = layer(h) * gate
        return self.logit(h).squeeze(-1)


class PEPNet(nn.Module):
    @dataclass(frozen=True)
    class Config(BaselineConfig):
        gamma: float = 2.0            # Gate NU scale: gates in (0, gamma)
        gate_hidden: int | None = 64  # Gate NU hidden width (not given by the paper); None: the gate's output width
        form: PEPNetForm = "pepnet"
        prior_fields: tuple[str, ...] = ()   # "ppnet": the prior's fields (`BaselineInputs.field_names`)
        scenario_towers: bool = False        # one PPNet tower per scenario, the target scenario's scores

    def __init__(self, schema: FeatureSchema, config: Config):
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.inputs = BaselineInputs(schema, d, tuple(config.input_fields))
        self.num_scenarios = self.inputs.num_scenarios
        num_fields = self.inputs.num_fields
        if config.form == "pepnet":
            if config.prior_fields or config.input_fields:
                raise ValueError("prior_fields and input_fields are for form='ppnet'; PEPNet reads every field "
                                 "and its prior is the request side")
            self.epnet = GateNU(d + (num_fields - 1) * d, num_fields, config.gate_hidden or num_fields, config.gamma)
            prior_dim = (num_fields - self.inputs.history_field) * d     # history, scenario, request features
            gate_input_dim = prior_dim + self.inputs.output_dim
        else:
            unknown = sorted(set(config.prior_fields) - set(self.inputs.field_names))
            if not config.prior_fields or unknown:
                raise ValueError(f"form='ppnet' needs prior_fields among the input fields {self.inputs.field_names}"
                                 + (f"; {unknown} are not among them" if unknown else ""))
            self.epnet = None
            self.prior_index = [i for i, n in enumerate(self.inputs.field_names) if n in config.prior_fields]
            self.general_index = [i for i, n in enumerate(self.inputs.field_names) if n not in config.prior_fields]
            gate_input_dim = self.inputs.output_dim
        self.towers = nn.ModuleList(
            PPTower(self.inputs.output_dim, tuple(config.tower), gate_input_dim, config.gate_hidden, config.gamma,
                    gate_fields=config.form == "pepnet", batch_norm=config.batch_norm, dropout=config.dropout)
            for _ in range(self.num_scenarios if config.scenario_towers else 1))
        self.output_dim = 1
        init_baseline_(self, config)

    def tower_inputs(self, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(EPNet gates [B, C, F] or None, the PPNet gate input, the tower input [B, C, F * d],
        the target scenario index [B])."""
        inputs = self.inputs(batch)
        fields = inputs.fields
        if self.epnet is None:
            # Scenario-Wise Rec's PPNet: prior ⊕ ⊘(general) is both the gate and the tower input, so the
            # general embeddings get no gradient at all (as in their ppnet.py)
            prior = fields[:, :, self.prior_index].flatten(start_dim=2)
            general = fields[:, :, self.general_index].flatten(start_dim=2)
            gate_input = torch.cat([prior, general.detach()], dim=-1)
            return None, gate_input, gate_input, inputs.scenario_index
        s = self.inputs.scenario_field
        others = torch.cat([fields[:, :, :s], fields[:, :, s + 1:]], dim=2).flatten(start_dim=2)
        ep_gate = self.epnet(torch.cat([inputs.scenario_embedding, others.detach()], dim=-1))   # [B, C, F]
        o_ep = (fields * ep_gate[..., None]).flatten(start_dim=2)
        prior = fields[:, :, self.inputs.history_field:].flatten(start_dim=2)
        return ep_gate, torch.cat([prior, o_ep.detach()], dim=-1), o_ep, inputs.scenario_index

    def gates(self, batch: Batch) -> tuple[torch.Tensor | None, list[torch.Tensor], torch.Tensor]:
        """(EPNet gates [B, C, F] (None for "ppnet"), the target scenario tower's PPNet gates per gated
        layer [B, C, width_l], the tower input (O_ep for "pepnet") [B, C, F * d])."""
        ep_gate, gate_input, h, scenario_index = self.tower_inputs(batch)
        per_tower = [tower.gate_values(gate_input) for tower in self.towers]
        if len(per_tower) == 1:
            return ep_gate, per_tower[0], h
        rows = torch.arange(h.shape[0], device=h.device)
        return ep_gate, [torch.stack(layer, dim=1)[rows, scenario_index] for layer in zip(*per_tower)], h

    def forward(self, batch: Batch) -> torch.Tensor:
        _, gate_input, h, scenario_index = self.tower_inputs(batch)
        logits = torch.stack([tower(h, gate_input) for tower in self.towers], dim=1)        # [B, S or 1, C]
        rows = torch.arange(logits.shape[0], device=logits.device)
        return logits[rows, scenario_index.clamp(max=len(self.towers) - 1)]               # [B, C]


register_model("pepnet", PEPNet, "PEPNet (Chang et al. 2023): EPNet field gates + PPNet layer gates, gamma=2")
