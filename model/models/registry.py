"""One registry of model names. A name maps to a model class and the config overrides that define
it (ablations are registered names, not flags to remember), so a mistyped name fails loudly."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from model.batch import Batch
from model.data.schema import FeatureSchema


@runtime_checkable
class HasAuxiliaryLoss(Protocol):
    """A model whose paper adds a regulariser to the CTR loss (AESM2's selection KL, AdaSparse's
    sparsity term). `forward` stays a pure function of the batch; training calls this instead."""

    def logits_and_auxiliary_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]: ...


def training_outputs(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits [B, C], the model's auxiliary loss or None) for one training step."""
    if isinstance(model, HasAuxiliaryLoss):
        return model.logits_and_auxiliary_loss(batch)
    return model(batch), None


@dataclass(frozen=True)
class RegisteredModel:
    model_class: type[nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


MODEL_REGISTRY: dict[str, RegisteredModel] = {}


def register_model(name: str, model_class: type[nn.Module], description: str = "", **defaults: Any) -> None:
    if name in MODEL_REGISTRY:
        raise ValueError(f"model name {name!r} is registered twice")
    valid = {f.name for f in dataclasses.fields(model_class.Config)}
    unknown = set(defaults) - valid
    if unknown:
        raise ValueError(f"model {name!r}: unknown config fields {sorted(unknown)}")
    MODEL_REGISTRY[name] = RegisteredModel(model_class, defaults, description)


def model_config(name: str, **overrides: Any):
    """The full config of a registered model with `overrides` applied (unknown keys rejected)."""
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODEL_REGISTRY)}")
    entry = MODEL_REGISTRY[name]
    valid = {f.name for f in dataclasses.fields(entry.model_class.Config)}
    unknown = set(overrides) - valid
    if unknown:
        raise ValueError(f"model {name!r} has no option(s) {sorted(unknown)}; valid: {sorted(valid)}")
    config = entry.model_class.Config(**{**entry.defaults, **overrides})
    if isinstance(getattr(config, "tower", None), list):
        config = dataclasses.replace(config, tower=tuple(config.tower))
    return config


def build_model(name: str, schema: FeatureSchema, **overrides: Any) -> nn.Module:
    config = model_config(name, **overrides)
    return MODEL_REGISTRY[name].model_class(schema, config)
