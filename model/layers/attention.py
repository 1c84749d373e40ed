"""Attention over behaviour sequences with key-padding masks that stay finite when a user has no
history: masked scores get a large negative constant instead of -inf, so a fully padded row gives
a uniform (finite) softmax whose output is then zeroed by the mask."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MASKED_SCORE = -1e9


def additive_mask(key_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where a key is real, MASKED_SCORE where it is padding (same shape as `key_mask`)."""
    return (~key_mask).to(dtype) * MASKED_SCORE


def masked_softmax(scores: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where `key_mask` (broadcastable, True = real key) allows."""
    return torch.softmax(scores + additive_mask(key_mask, scores.dtype), dim=-1)


class ScenarioAwareSelfAttention(nn.Module):
    """SIE (eq. 2-3): multi-head self-attention whose Q, K and V each add a projection of the
    behaviours' scenario embeddings M_S. Output size: `dim` per behaviour.

    `use_scenario=False` gives plain MHA (one reading of the "w/o SIE" ablation).
    The paper writes no residual connection or LayerNorm around the MHA; both are options here,
    off by default, because X^l = X_hat^{l-1} * v^{l-1} (eq. 5) is the whole block update.
    """

    def __init__(self, dim: int, heads: int, use_scenario: bool = True, residual: bool = False,
                 layer_norm: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} must be divisible by the number of heads {heads}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.item_qkv = nn.Linear(dim, 3 * dim, bias=False)          # W_i^Q, W_i^K, W_i^V, all heads
        self.scenario_qkv = nn.Linear(dim, 3 * dim, bias=False) if use_scenario else None  # W_S^{Q,K,V}
        self.output = nn.Linear(dim, dim, bias=False)                # W^O
        self.residual = residual
        self.norm = nn.LayerNorm(dim) if layer_norm else None
        self.output_dim = dim

    def _heads(self, x: torch.Tensor, scenario_emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Q, K, V per head, each [B, h, N, d_k] (eq. 3: item and scenario projections added)."""
        qkv = self.item_qkv(x)
        if self.scenario_qkv is not None:
            qkv = qkv + self.scenario_qkv(scenario_emb)
        batch, length = x.shape[0], x.shape[1]
        return tuple(t.reshape(batch, length, self.heads, self.head_dim).transpose(1, 2)
                     for t in qkv.chunk(3, dim=-1))

    def attention_weights(self, x: torch.Tensor, scenario_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, h, N, N]: the attention forward applies (for diagnostics; forward uses the fused kernel)."""
        q, k, _ = self._heads(x, scenario_emb)
        return masked_softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), mask[:, None, None, :])

    def forward(self, x: torch.Tensor, scenario_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x, scenario_emb: [B, N, dim]; mask: [B, N] bool -> [B, N, dim], zero at padding."""
        q, k, v = self._heads(x, scenario_emb)                             # [B, h, N, d_k]
        batch, length = x.shape[0], x.shape[1]
        # Fused kernel (3x faster than explicit matmuls on CPU); softmax(QK^T/sqrt(d_k) + mask) V.
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=additive_mask(mask[:, None, None, :], q.dtype))  # [B, h, N, d_k]
        out = self.output(attended.transpose(1, 2).reshape(batch, length, self.dim))
        if self.residual:
            out = out + x
        if self.norm is not None:
            out = self.norm(out)
        return out * mask[..., None]


class ScenarioTailoringGate(nn.Module):
    """STM (eq. 4-5): x_i = x_hat_i * gamma * sigmoid([x_hat_i, e_st] W_G + b_G).
    Output size: `dim`. Eq. 4 states v_i in R^d, so the gate is a vector by default;
    `vector=False` gives one scalar per behaviour."""

    def __init__(self, dim: int, gamma: float, vector: bool = True):
        super().__init__()
        self.gamma = gamma
        self.gate = nn.Linear(2 * dim, dim if vector else 1)
        self.output_dim = dim

    def forward(self, x_hat: torch.Tensor, target_scenario_emb: torch.Tensor) -> torch.Tensor:
        """x_hat: [B, N, dim]; target_scenario_emb: [B, dim] -> [B, N, dim]."""
        context = target_scenario_emb[:, None, :].expand(-1, x_hat.shape[1], -1)
        return x_hat * (self.gamma * torch.sigmoid(self.gate(torch.cat([x_hat, context], dim=-1))))


class TargetAwareInterestFusion(nn.Module):
    """TIF (eq. 7-8): attention of each candidate's z_t = [e_item, e_st] over the final interest
    representations. Keys and values are computed once per request and shared by its C candidates.
    Output size: `dim` per candidate. Eq. 8 has no 1/sqrt(d) scaling; `scaled=True` adds it."""

    def __init__(self, dim: int, query_dim: int, scaled: bool = False):
        super().__init__()
        self.query = nn.Linear(query_dim, dim, bias=False)  # W_Q
        self.key = nn.Linear(dim, dim, bias=False)          # W_K
        self.value = nn.Linear(dim, dim, bias=False)        # W_V
        self.scale = 1.0 / math.sqrt(dim) if scaled else 1.0
        self.output_dim = dim

    def attention_weights(self, target: torch.Tensor, interests: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, C, N]: each candidate's weights over the behaviours (eq. 8's softmax)."""
        scores = self.query(target) @ self.key(interests).transpose(-1, -2) * self.scale
        return masked_softmax(scores, mask[:, None, :])

    def forward(self, target: torch.Tensor, interests: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """target: [B, C, query_dim]; interests: [B, N, dim]; mask: [B, N] -> [B, C, dim]."""
        fused = self.attention_weights(target, interests, mask) @ self.value(interests)
        has_history = mask.any(dim=-1)
        return fused * has_history[:, None, None].to(fused.dtype)


def masked_mean(interests: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, N, dim], [B, N] -> [B, dim]: mean over real behaviours, zeros for an empty history."""
    weights = mask.to(interests.dtype)
    return (interests * weights[..., None]).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
