"""AdaSparse (Yang et al., "AdaSparse: Learning Adaptively Sparse Structures for Multi-Domain
Click-Through Rate Prediction", CIKM 2022), on a DNN backbone over the shared `BaselineInputs`.

What follows the paper:
- A domain-adaptive pruner per hidden layer: pi^l = Pruner^l(e_d ⊕ h^l), one lightweight FC layer
  over the domain embedding e_d (the target scenario) and the layer's neurons h^l, giving one
  weighting factor per neuron; the layer's output becomes h^l ⊙ pi^l, which is the next layer's
  input. Every hidden layer of the [512, 256, 128, 64] tower has its pruner.
- Variant: **binarization** (the paper's sparse variant; we did not pick "scaling", whose factors
  beta * sigmoid(v) never reach 0 and so prune nothing): pi = 1[sigmoid(alpha * v) >= epsilon] in
  {0, 1}. The step has no gradient; training uses the straight-through estimator (the forward
  value is the hard 0/1 factor, the backward pass takes the gradient of sigmoid(alpha * v)).
  epsilon = 0.5. The paper anneals alpha from 0.1 to 5 during training; with epsilon = 0.5 the hard
  factor does not depend on alpha (sigmoid(alpha v) >= 0.5 iff v >= 0), so alpha only scales the
  straight-through gradient; it is a fixed config value here (`alpha`, 1.0).
- The sparsity regulariser, R_s = (1/L) sum_l lambda^l |r^l - r| with r = (r_min + r_max) / 2 and
  lambda^l = 0 when r^l lies in [r_min, r_max], else lambda_hat * |r^l - r| (a coefficient, so it is
  not differentiated), where r^l is the fraction of pruned (zero) neurons of layer l over the batch.
  r^l is computed from the straight-through factors, so its value is the hard fraction and its
  gradient that of the soft one. Defaults: [r_min, r_max] = [0.15, 0.25] and lambda_hat = 0.01 (the
  paper's best range and its starting lambda_hat, which it then increases).
  `logits_and_auxiliary_loss(batch)` returns R_s beside the logits (0 when `sparsity_lambda` = 0);
  training adds it to the BCE loss, as in the paper.

Choices forced by this project: no batch normalisation by default (it would mix candidates and
requests in training); the input is the shared fields (target item, item features, pooled history,
scenario, request features) flattened, as for every baseline.

The Scenario-Wise Rec benchmark's AdaSparse (scenario_wise_rec/models/multi_domain/adasparse.py and
`Pruner` in basic/layers.py) is expressible too: `form="fusion"`, whose factor is
f * sign(f - epsilon) with f = beta * sigmoid(alpha * v) (so a factor below epsilon flips the
neuron's sign rather than zeroing it, as their code does), bias-free pruner projections
(`pruner_bias`), a pruner on the input fields as well (`prune_input`), alpha raised by `alpha_step`
at every training forward (their delta_alpha; they raise it at every forward, evaluation included),
`batch_norm` and `dropout` after every hidden Linear, and no regulariser (`sparsity_lambda` 0).

Output: logits [B, C] (`output_dim` = 1 per candidate).
"""

from __future__ import annotations

import math
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

PrunerForm = Literal["binarization", "fusion"]


class DomainPruner(nn.Module):
    """The weighting factors of one layer from v = W [e_d, h] (+ b):

    binarization: pi = 1[sigmoid(alpha * v) >= epsilon], straight-through in training (values in {0, 1});
    fusion:       pi = f * sign(f - epsilon), f = beta * sigmoid(alpha * v) (gradient through f).
    Output size: `width` factors."""

    def __init__(self, width: int, domain_dim: int, form: PrunerForm, epsilon: float, beta: float, bias: bool):
        super().__init__()
        upper = 1.0 if form == "binarization" else beta
        if not 0.0 < epsilon < upper:
            raise ValueError(f"AdaSparse {form} needs 0 < epsilon < {upper:g}")
        self.linear = nn.Linear(width + domain_dim, width, bias=bias)
        self.form, self.epsilon, self.beta = form, epsilon, beta
        self.output_dim = width

    def forward(self, hidden: torch.Tensor, domain: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        v = self.linear(torch.cat([domain, hidden], dim=-1))
        if self.form == "fusion":
            f = self.beta * torch.sigmoid(alpha * v)
            return f * torch.sign(f - self.epsilon)
        # sigmoid(alpha * v) >= epsilon  <=>  v >= logit(epsilon) / alpha. Thresholding v itself keeps
        # the 0/1 decision off sigmoid's rounding near 0.5 (where ONNX Runtime and PyTorch may differ).
        hard = (v >= math.log(self.epsilon / (1.0 - self.epsilon)) / alpha).to(v.dtype)
        if not self.training:
            return hard
        soft = torch.sigmoid(alpha * v)
        return hard + (soft - soft.detach())     # value: hard; gradient: d sigmoid(alpha v)


class AdaSparse(nn.Module):
    @dataclass(frozen=True)
    class Config(BaselineConfig):
        alpha: float = 1.0              # sigmoid slope (straight-through gradient scale)
        epsilon: float = 0.5            # a neuron is pruned when sigmoid(alpha * v) < epsilon (0 < eps < 1)
        sparsity_min: float = 0.15      # r_min
        sparsity_max: float = 0.25      # r_max
        sparsity_lambda: float = 0.01   # lambda_hat; 0 turns the regulariser off
        form: PrunerForm = "binarization"
        beta: float = 2.0               # fusion: f = beta * sigmoid(alpha * v)
        alpha_step: float = 0.0         # added to alpha at every training forward (AdaSparse's annealing)
        prune_input: bool = False       # a pruner on the input fields too, before the first layer
        pruner_bias: bool = True

    def __init__(self, schema: FeatureSchema, config: Config):
        super().__init__()
        self.config = config
        if not 0.0 <= config.sparsity_min <= config.sparsity_max <= 1.0:
            raise ValueError("need 0 <= sparsity_min <= sparsity_max <= 1")
        if config.alpha <= 0 or config.alpha_step < 0:
            raise ValueError("AdaSparse needs alpha > 0 and alpha_step >= 0")
        if config.form == "fusion" and config.sparsity_lambda:
            raise ValueError("the sparsity regulariser counts zero factors, which the fusion form never has: "
                             "set sparsity_lambda=0")
        d = config.embed_dim
        self.inputs = BaselineInputs(schema, d, tuple(config.input_fields))
        widths = [self.inputs.output_dim, *config.tower]
        self.hidden = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), *([LastDimBatchNorm(b)] if config.batch_norm else []), nn.ReLU(),
                          *([nn.Dropout(config.dropout)] if config.dropout else []))
            for a, b in zip(widths[:-1], widths[1:]))

        def pruner(width: int) -> DomainPruner:
            return DomainPruner(width, d, config.form, config.epsilon, config.beta, config.pruner_bias)
        self.input_pruner = pruner(self.inputs.output_dim) if config.prune_input else None
        self.pruners = nn.ModuleList(pruner(width) for width in config.tower)
        self.logit = nn.Linear(widths[-1], 1)
        # alpha only moves with alpha_step; kept in checkpoints then (and only then, so older ones load)
        self.register_buffer("alpha", torch.tensor(float(config.alpha)), persistent=config.alpha_step != 0)
        self.output_dim = 1
        init_baseline_(self, config)

    def factors(self, batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits [B, C], the weighting factors pi^l [B, C, width_l] of every pruned layer: the
        input's first when `prune_input`, then every hidden layer's)."""
        if self.training and self.config.alpha_step:
            with torch.no_grad():
                self.alpha += self.config.alpha_step
        inputs = self.inputs(batch)
        h, domain, factors = inputs.flat, inputs.scenario_embedding, []
        if self.input_pruner is not None:
            pi = self.input_pruner(h, domain, self.alpha)
            factors.append(pi)
            h = h * pi
        for layer, pruner in zip(self.hidden, self.pruners):
            h = layer(h)
            pi = pruner(h, domain, self.alpha)
            factors.append(pi)
            h = h * pi
        return self.logit(h).squeeze(-1), factors

    def sparsity_loss(self, factors: list[torch.Tensor]) -> torch.Tensor:
        """The paper's sparsity regulariser R_s for the weighting factors of one forward (scalar)."""
        config = self.config
        total = torch.zeros((), device=self.logit.weight.device)
        if config.sparsity_lambda == 0:
            return total
        target = (config.sparsity_min + config.sparsity_max) / 2
        for pi in factors:
            r = 1.0 - pi.mean()                        # r^l, the fraction of pruned neurons
            outside = (r < config.sparsity_min) | (r > config.sparsity_max)
            distance = (r - target).abs()
            coefficient = torch.where(outside, config.sparsity_lambda * distance, torch.zeros_like(r))
            total = total + coefficient.detach() * distance    # lambda^l is a coefficient
        return total / len(factors)

    def logits_and_auxiliary_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, C], R_s: a scalar to add to the CTR loss)."""
        logits, factors = self.factors(batch)
        return logits, self.sparsity_loss(factors)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.factors(batch)[0]


register_model("adasparse", AdaSparse, "AdaSparse (Yang et al. 2022): binarized domain-aware neuron pruning")
