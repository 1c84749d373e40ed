"""The config every multi-scenario baseline shares: its input embedding width, its hidden widths and
the settings the Scenario-Wise Rec protocol changes (dropout, batch norm, initialisation, the input
fields kept). Each model's `Config` extends it with its own fields and says how it uses `tower`."""

from __future__ import annotations

from dataclasses import dataclass

from model.layers.embedding import LinearInit
from model.layers.towers import DEFAULT_HIDDEN


@dataclass(frozen=True)
class BaselineConfig:
    embed_dim: int = 32
    tower: tuple[int, ...] = DEFAULT_HIDDEN   # hidden widths, in order (how a model splits them: its docstring)
    init_std: float = 0.05
    dropout: float = 0.0                      # after every hidden ReLU
    batch_norm: bool = False                  # BatchNorm after every hidden Linear (`LastDimBatchNorm`)
    embedding_init_std: float | None = None   # N(0, this) for the embeddings; None: init_std
    linear_init: LinearInit = "normal"        # "normal": N(0, init_std); "pytorch": PyTorch's default
    input_fields: tuple[str, ...] = ()        # the input fields kept (`BaselineInputs`); empty: all
