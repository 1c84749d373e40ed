"""The model's input contract: B requests, each with a history, a target scenario and C candidates."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from model.data.examples import ExampleSet
from sainet.contract import INPUT_NAMES  # noqa: F401  (re-exported: the field order of `Batch`)


class Batch(NamedTuple):
    hist_items: torch.Tensor        # [B, N] int64, 0 = padding
    hist_scenarios: torch.Tensor    # [B, N] int64, scenario of each behaviour, 0 = padding
    target_scenario: torch.Tensor   # [B] int64
    request_features: torch.Tensor  # [B, F_request] int64, user and context side
    cand_items: torch.Tensor        # [B, C] int64
    cand_features: torch.Tensor     # [B, C, F_item] int64
    request_numeric: torch.Tensor   # [B, F_request_numeric] float32, standardised (0-wide without any)
    cand_numeric: torch.Tensor      # [B, C, F_item_numeric] float32, standardised

    @property
    def history_mask(self) -> torch.Tensor:
        """[B, N] True where a real behaviour sits."""
        return self.hist_items != 0


if Batch._fields != INPUT_NAMES:   # the graph's inputs are Batch's fields, in order
    raise ImportError(f"Batch fields {Batch._fields} differ from the artifact contract's {INPUT_NAMES}")


def examples_to_batch(examples: ExampleSet, rows: np.ndarray | slice) -> tuple[Batch, torch.Tensor]:
    """Training/evaluation batch with one candidate per example (C = 1) and its labels [B].

    Histories are left-padded, so columns that are padding in every row of the batch are cut:
    padding never changes a score, and short-history batches run much faster.
    """
    hist_items = examples.hist_items[rows]
    longest = max(int((hist_items != 0).sum(axis=1).max(initial=0)), 1)
    batch = Batch(
        hist_items=torch.from_numpy(hist_items[:, -longest:].astype(np.int64)),
        hist_scenarios=torch.from_numpy(examples.hist_scenarios[rows][:, -longest:].astype(np.int64)),
        target_scenario=torch.from_numpy(examples.target_scenario[rows]),
        request_features=torch.from_numpy(examples.request_features[rows]),
        cand_items=torch.from_numpy(examples.target_item[rows][:, None]),
        cand_features=torch.from_numpy(examples.item_features[rows][:, None, :]),
        request_numeric=torch.from_numpy(examples.request_numeric[rows]),
        cand_numeric=torch.from_numpy(examples.item_numeric[rows][:, None, :]),
    )
    return batch, torch.from_numpy(examples.label[rows])
