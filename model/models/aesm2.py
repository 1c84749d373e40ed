"""AESM² (Zou et al., "Automatic Expert Selection for Multi-Scenario and Multi-Task Search",
SIGIR 2022), as a single-task multi-scenario CTR baseline on the shared `BaselineInputs`.

What follows the paper (and its reference implementation):
- Stacked multi-scenario layers. Each layer has K experts (one ReLU FC each) and one gate per
  scenario; every gate reads [layer input, scenario indicator] and scores the K experts, so a
  layer's gate logits are G in R^{S x K} per example.
- Automatic expert selection: G is normalised over the *scenario* axis, which gives every expert
  k a distribution q_k over scenarios. The KL divergence of the example's one-hot scenario vector
  to q_k ranks experts by how specific they are to this scenario, the KL of the uniform vector to
  q_k by how shared they are; the `top_k_specific` and `top_k_shared` experts with the smallest
  divergences are selected (an expert may be both). The example's own scenario gate row, masked
  to the selected experts, is softmaxed into the mixture weights of the layer output.
- During training Gaussian noise (std `noise_scale * K`) is added to the gate logits used for the
  selection only (as in the reference code), so the selection explores; in eval mode there is no
  noise and the selection is deterministic. It is written with topk/scatter/where only (no Python
  control flow on tensor values), so it exports to ONNX. The divergences are computed in float64
  from log-softmax: at initialisation the gates are near uniform and the KL values of different
  experts lie ~1e-5 apart, close enough to float32 rounding for ONNX Runtime and PyTorch to select
  differently. The reference code smooths both distributions with 1e-9 to avoid log 0; with
  log-softmax the one-hot KL is exactly -log q_k[s] and needs no smoothing (the exporter's graph
  optimiser also drops such tiny constants, which broke parity).
- The paper adds the mean selected KL divergences (specific and shared, every layer) to the loss to
  sharpen the selection. `logits_and_auxiliary_loss(batch)` returns them, summed over layers and
  weighted by `selection_loss_weight`, beside the logits; training adds them to the BCE loss. The
  weight is ours (the paper does not give it for this setting): 0.1.

Choices forced by this project:
- One task (CTR), so the multi-task layers of AESM² are left out: with a single task gate the
  task-level one-hot and uniform distributions coincide and the selection is degenerate. On top of
  the scenario layers sit per-scenario towers (the paper's towers are per task; with one task,
  one tower per scenario keeps the scenario-specific top of the multi-scenario baselines), each the
  shared [512, 256, 128, 64] ReLU tower of Sec. 5.1 of the SAINet paper; every example reads the
  tower of its target scenario (all towers run, the right one is gathered: no data-dependent
  branching).
- The reference code puts batch normalisation in experts and gates; batch statistics would mix
  candidates and requests, which the shape contract forbids, so there is none.
- Masking uses `where(selected, logit, -1e9)` before the softmax (the reference code multiplies
  the logits by the mask, which flips the sign of negative logits).
- Scenario indicator = the target-scenario embedding. Unknown/padding scenarios use scenario 0's
  gate and tower (`BaselineFields.scenario_index`).
- Sizes (K=8 experts, top-2 specific + top-2 shared, two layers of 256) and `noise_scale` are not
  given for this setting by the paper; they are ours.

Initialisation: N(0, `init_std`), zero biases (`embedding_init_std`, `linear_init` change it);
`dropout` and `batch_norm` act in every expert and tower, `input_fields` as in `BaselineConfig`.
Output: logits [B, C] (`output_dim` = 1 per candidate).
"""

from __future__ import annotations

import math
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

MASKED_LOGIT = -1e9


class ExpertSelectionLayer(nn.Module):
    """One multi-scenario layer: K experts, S scenario gates, KL-based expert selection.
    Output size: `width` per candidate."""

    def __init__(self, input_dim: int, width: int, scenario_dim: int, num_scenarios: int,
                 num_experts: int, top_k_specific: int, top_k_shared: int, noise_scale: float,
                 dropout: float = 0.0, batch_norm: bool = False):
        super().__init__()
        self.experts = nn.ModuleList(relu_mlp(input_dim, (width,), dropout, batch_norm)
                                     for _ in range(num_experts))
        # All S gates in one projection: [x, e_s] -> S x K logits.
        self.gates = nn.Linear(input_dim + scenario_dim, num_scenarios * num_experts)
        self.num_scenarios, self.num_experts = num_scenarios, num_experts
        self.top_k_specific, self.top_k_shared = top_k_specific, top_k_shared
        self.noise_scale = noise_scale
        self.output_dim = width

    def select(self, logits: torch.Tensor, scenario_index: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [B, C, S, K], scenario_index [B] -> (selected mask [B, C, K] bool, KL loss scalar)."""
        if self.training and self.noise_scale > 0:
            logits = logits + self.noise_scale * self.num_experts * torch.randn_like(logits)
        b, c = logits.shape[0], logits.shape[1]
        dtype = logits.dtype
        # log q[b, c, s, k]: expert k's distribution over scenarios (softmax over the scenario axis),
        # in float64 (see the module docstring).
        log_q = torch.log_softmax(logits.double(), dim=2)
        # KL(one-hot_s || q_k) = -log q_k[s]; KL(uniform || q_k) = -log S - mean_s log q_k[s].
        own = scenario_index.reshape(b, 1, 1, 1).expand(b, c, 1, self.num_experts)
        kl_specific = -log_q.gather(2, own).squeeze(2)                                   # [B, C, K]
        shared_rank = -log_q.mean(dim=2)                                                 # KL + log S
        specific_kl, specific_idx = torch.topk(-kl_specific, self.top_k_specific, dim=-1)
        shared_kl, shared_idx = torch.topk(-shared_rank, self.top_k_shared, dim=-1)
        chosen = torch.zeros_like(kl_specific).scatter(-1, specific_idx, 1.0).scatter(-1, shared_idx, 1.0)
        kl_loss = -specific_kl.mean() - shared_kl.mean() - math.log(self.num_scenarios)
        return chosen > 0, kl_loss.to(dtype)

    def forward(self, x: torch.Tensor, scenario: torch.Tensor, scenario_index: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, C, in], scenario [B, C, d], scenario_index [B] -> ([B, C, width], KL loss)."""
        b, c = x.shape[0], x.shape[1]
        logits = self.gates(torch.cat([x, scenario], dim=-1))
        logits = logits.reshape(b, c, self.num_scenarios, self.num_experts)
        selected, kl_loss = self.select(logits, scenario_index)
        own = scenario_index.reshape(b, 1, 1, 1).expand(b, c, 1, self.num_experts)
        own_logits = logits.gather(2, own).squeeze(2)                                    # [B, C, K]
        masked = torch.where(selected, own_logits, torch.full_like(own_logits, MASKED_LOGIT))
        weights = torch.softmax(masked, dim=-1)
        experts = torch.stack([expert(x) for expert in self.experts], dim=2)             # [B, C, K, width]
        return (weights[..., None] * experts).sum(dim=2), kl_loss


class AESM2(nn.Module):
    @dataclass(frozen=True)
    class Config(BaselineConfig):
        num_experts: int = 8                    # K per layer
        top_k_specific: int = 2                 # experts closest to the one-hot scenario vector
        top_k_shared: int = 2                   # experts closest to the uniform vector
        expert_dims: tuple[int, ...] = (256, 256)   # one multi-scenario layer per entry
        noise_scale: float = 0.01               # training-only selection noise, std = noise_scale * K
        selection_loss_weight: float = 0.1      # weight of the KL selection losses in training

    def __init__(self, schema: FeatureSchema, config: Config):
        super().__init__()
        self.config = config
        k = config.num_experts
        if not (1 <= config.top_k_specific <= k and 1 <= config.top_k_shared <= k):
            raise ValueError(f"top_k_specific/top_k_shared must be in [1, num_experts={config.num_experts}]")
        if not config.expert_dims:
            raise ValueError("AESM2 needs at least one multi-scenario layer (expert_dims)")
        d = config.embed_dim
        self.inputs = BaselineInputs(schema, d, tuple(config.input_fields))
        num_scenarios = self.inputs.num_scenarios
        layers, width = [], self.inputs.output_dim
        for out in config.expert_dims:
            layers.append(ExpertSelectionLayer(width, out, d, num_scenarios, config.num_experts,
                                               config.top_k_specific, config.top_k_shared,
                                               config.noise_scale, config.dropout, config.batch_norm))
            width = out
        self.layers = nn.ModuleList(layers)
        self.towers = nn.ModuleList(MLPTower(width, tuple(config.tower), config.dropout, config.batch_norm)
                                    for _ in range(num_scenarios))
        self.output_dim = 1
        init_baseline_(self, config)

    def logits_and_auxiliary_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, C], weighted KL selection loss: a scalar to add to the CTR loss)."""
        inputs = self.inputs(batch)
        x, kl_total = inputs.flat, torch.zeros((), dtype=inputs.flat.dtype, device=inputs.flat.device)
        for layer in self.layers:
            x, kl = layer(x, inputs.scenario_embedding, inputs.scenario_index)
            kl_total = kl_total + kl
        logits = torch.stack([tower(x) for tower in self.towers], dim=-1)                # [B, C, S]
        b, c = logits.shape[0], logits.shape[1]
        own = inputs.scenario_index.reshape(b, 1, 1).expand(b, c, 1)
        return logits.gather(2, own).squeeze(2), self.config.selection_loss_weight * kl_total

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.logits_and_auxiliary_loss(batch)[0]


register_model("aesm2", AESM2,
               "AESM2 (Zou et al. 2022): KL-based automatic expert selection, per-scenario towers")
