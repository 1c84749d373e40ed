"""Importing this package registers every model."""

from model.models import sainet  # noqa: F401  (registers SAINet and its ablations)
from model.models.registry import MODEL_REGISTRY, build_model, model_config

__all__ = ["MODEL_REGISTRY", "build_model", "model_config"]
