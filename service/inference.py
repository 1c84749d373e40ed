"""ONNX Runtime sessions: CUDA first when available, then CPU; the active provider is reported."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sainet.contract import OUTPUT_NAME, ContractError, check_graph
from service.artifact import Artifact
from service.errors import ArtifactError

log = logging.getLogger(__name__)

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def make_session(model_path: Path, require_gpu: bool, intra_op_threads: int = 0,
                 inter_op_threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = ort.get_available_providers()
    providers = [p for p in (CUDA, CPU) if p in available]
    try:
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for bad models
        raise ArtifactError(f"ONNX Runtime cannot load {model_path}: {error}") from error
    active = session.get_providers()[0]
    if require_gpu and active != CUDA:
        raise RuntimeError(f"SAINET_REQUIRE_GPU=1 but the active provider is {active} "
                           f"(available: {available})")
    return session


class LoadedModel:
    """One servable version: its artifact (encoding) and its session (inference)."""

    def __init__(self, artifact: Artifact, session: ort.InferenceSession, precision: str = "fp32"):
        try:
            check_graph({i.name: len(i.shape) for i in session.get_inputs()}, [o.name for o in session.get_outputs()])
        except ContractError as error:
            raise ArtifactError(f"{artifact.model_path}: {error}") from None
        self.artifact = artifact
        self.session = session
        self.precision = precision
        self.provider = session.get_providers()[0]

    @property
    def name(self) -> str:
        return self.artifact.name

    @property
    def version(self) -> str:
        return self.artifact.version

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], inputs)[0]

    def warm_up(self) -> None:
        """Runs representative shapes once and checks the outputs, so a broken model never serves."""
        from service.store import Behaviour

        some_item = next(iter(self.artifact.item_index), "unknown")
        scenario = self.artifact.scenarios[0]
        for candidates, history in ((1, 0), (8, 5), (200, self.artifact.history_length)):
            batch = self.artifact.encode(
                [scenario, scenario], [[Behaviour(some_item, scenario, 0.0)] * history, []], [{}, {}],
                [[some_item] * candidates, ["unknown"] * candidates])
            try:
                scores = np.asarray(self.run(batch.inputs))
            except Exception as error:  # onnxruntime's own exception types: the graph does not fit the contract
                raise ArtifactError(f"{self.artifact.path}: warm-up failed ({error})") from error
            if scores.shape != (2, candidates) or not np.isfinite(scores).all() or (scores < 0).any() \
                    or (scores > 1).any():
                raise ArtifactError(f"{self.artifact.path}: warm-up gave shape {scores.shape} or scores "
                                    "outside [0, 1]")


def load_model(path: Path, require_gpu: bool = False, intra_op_threads: int = 0,
               inter_op_threads: int = 0, precision: str = "auto") -> LoadedModel:
    artifact = Artifact(path)
    chosen = artifact.choose_precision(precision, on_gpu=CUDA in ort.get_available_providers())
    model = LoadedModel(artifact, make_session(artifact.graph_path(chosen), require_gpu, intra_op_threads,
                                               inter_op_threads), chosen)
    model.warm_up()
    return model
