"""Importing this package registers every model."""

from model.models import adasparse  # noqa: F401  (registers AdaSparse)
from model.models import aesm2  # noqa: F401  (registers AESM2)
from model.models import deepfm  # noqa: F401  (registers DeepFM)
from model.models import dnn  # noqa: F401  (registers the DNN baseline)
from model.models import mmoe  # noqa: F401  (registers MMoE)
from model.models import pepnet  # noqa: F401  (registers PEPNet)
from model.models import ple  # noqa: F401  (registers PLE)
from model.models import sainet  # noqa: F401  (registers SAINet and its ablations)
from model.models import sfpnet  # noqa: F401  (registers SFPNet)
from model.models import shared_bottom  # noqa: F401  (registers Shared-Bottom)
from model.models.registry import MODEL_REGISTRY, build_model, model_config

__all__ = ["MODEL_REGISTRY", "build_model", "model_config"]
