"""What a trained SAINet's history path does (issue 14 item 4): whether its attention looks at
particular behaviours or spreads evenly, and whether the behaviours stay distinct after the blocks.

A SAINet whose self-attention (SIE) and target attention (TIF) sit at the entropy of a uniform
distribution, with behaviours that become one vector after the blocks, is a mean-pooled history
under a scenario-gated tower, at several times the cost. These figures tell which it is.

- `sie_entropy_ratio` (one per block), `tif_entropy_ratio`: the entropy of each attention row over
  the real behaviours divided by log(n), n the number of real behaviours; 1 is uniform. Rows are
  averaged per request, then over requests (long histories do not dominate).
- `cosine_raw`, `cosine_after_blocks`: the mean pairwise cosine similarity of a request's real
  behaviours, as item embeddings (X^0) and after the L blocks (X^L).
Requests with fewer than 2 behaviours carry no information about either and are left out.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from model.batch import examples_to_batch
from model.data.examples import ExampleSet
from model.models.sainet import SAINet


def entropy_ratio(weights: torch.Tensor, key_mask: torch.Tensor, row_mask: torch.Tensor) -> torch.Tensor:
    """Per request [B]: mean over its rows (`row_mask` [B, R]) of entropy / log(real keys).
    weights [B, R, N] (rows sum to 1 over the real keys of `key_mask` [B, N])."""
    w = weights.clamp_min(1e-12)
    entropy = -(weights * w.log() * key_mask[:, None, :]).sum(dim=-1)             # [B, R]
    keys = key_mask.sum(dim=-1, keepdim=True).to(weights.dtype)                  # [B, 1]
    ratio = entropy / keys.clamp_min(2).log()
    rows = row_mask.to(weights.dtype)
    return (ratio * rows).sum(dim=-1) / rows.sum(dim=-1).clamp_min(1)


def mean_pairwise_cosine(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per request [B]: the mean cosine similarity over pairs of distinct real behaviours."""
    unit = nn.functional.normalize(x, dim=-1)
    similarity = unit @ unit.transpose(-1, -2)                                    # [B, N, N]
    pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(x.shape[1], dtype=torch.bool)[None]
    return (similarity * pair).sum(dim=(-1, -2)) / pair.sum(dim=(-1, -2)).clamp_min(1)


@torch.no_grad()
def history_path_diagnostics(model: nn.Module, examples: ExampleSet, max_examples: int = 4096,
                             seed: int = 0) -> dict | None:
    """The figures above on a seeded sample of `examples` (None for a model that is not SAINet)."""
    if not isinstance(model, SAINet):
        return None
    lengths = (examples.hist_items != 0).sum(axis=1)
    eligible = np.flatnonzero(lengths >= 2)
    summary = {"examples": int(len(examples)), "share_with_2_or_more_behaviours":
               float(len(eligible) / max(len(examples), 1))}
    if not len(eligible):
        return summary
    rows = np.sort(np.random.default_rng(seed).choice(eligible, min(max_examples, len(eligible)), replace=False))
    batch, _ = examples_to_batch(examples, rows)
    model.eval()
    captured: dict[str, list] = {"sie": [], "tif": [], "raw": []}
    hooks = []
    for block in model.blocks:
        if block.sie is not None:   # the weights of the very call forward makes, from its own inputs
            hooks.append(block.sie.register_forward_hook(
                lambda module, args, _out: captured["sie"].append(module.attention_weights(*args))))
    if model.fusion is not None:
        hooks.append(model.fusion.register_forward_hook(
            lambda module, args, _out: captured["tif"].append(module.attention_weights(*args))))
    try:
        model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    interests, mask, _ = model.encode_history(batch)
    raw = model.embeddings.item(batch.hist_items)
    summary.update({
        "sampled": int(len(rows)), "mean_behaviours": float(lengths[rows].mean()),
        "sie_entropy_ratio": [float(entropy_ratio(w.flatten(1, 2), mask, mask.repeat(1, w.shape[1])).mean())
                              for w in captured["sie"]],
        "tif_entropy_ratio": float(entropy_ratio(captured["tif"][0], mask, torch.ones(
            mask.shape[0], captured["tif"][0].shape[1], dtype=torch.bool)).mean()) if captured["tif"] else None,
        "cosine_raw": float(mean_pairwise_cosine(raw, mask).mean()),
        "cosine_after_blocks": float(mean_pairwise_cosine(interests, mask).mean()),
    })
    return summary
