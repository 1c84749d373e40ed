"""Loading a model artifact (model.onnx + meta.json + vocabularies) and turning raw requests into
the model's input arrays. Knows nothing of torch or the training code: the artifact is the contract."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np

from sainet.contract import (
    FIRST_KNOWN_INDEX,
    FP32_GRAPH,
    INPUT_NAMES,
    MISSING_VALUE,
    OOV_INDEX,
    PAD_INDEX,
    ContractError,
    available_precisions,
    parse_meta,
)
from sainet.numeric import NumericFeature, as_numbers
from service.errors import ArtifactError
from service.store import Behaviour, History

log = logging.getLogger(__name__)

PAD, OOV = PAD_INDEX, OOV_INDEX


def is_version_name(name: str) -> bool:
    """Only decimal integers name versions: `backup-old` or `.3.tmp` never serve."""
    return name.isascii() and name.isdigit()


def list_versions(model_root: Path) -> list[str]:
    """Version directories holding a meta.json, oldest first, by their integer value."""
    if not model_root.is_dir():
        return []
    versions = [p.name for p in model_root.iterdir()
                if is_version_name(p.name) and p.is_dir() and (p / "meta.json").exists()]
    return sorted(versions, key=int)


def content_fingerprint(path: Path) -> tuple:
    """(relative path, size, mtime) of every file under a version directory: it changes when the
    files are repaired or a copy completes, so a failed version is retried then, and only then."""
    try:
        return tuple(sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                            for p in path.rglob("*") if p.is_file()))
    except OSError:
        return ()


def resolve_model_root(model_dir: Path, model_name: str | None) -> Path:
    if model_name:
        return model_dir / model_name
    names = [p for p in model_dir.iterdir() if p.is_dir() and list_versions(p)] if model_dir.is_dir() else []
    if len(names) != 1:
        raise ArtifactError(f"{model_dir} holds {len(names)} models ({[p.name for p in names]}); "
                            "set SAINET_MODEL_NAME")
    return names[0]


def _vocab(path: Path) -> dict[str, int]:
    values = json.loads(path.read_text())
    if not isinstance(values, list):
        raise ValueError(f"{path.name} is not a JSON list")
    return {str(v): i + FIRST_KNOWN_INDEX for i, v in enumerate(values)}


@dataclass
class EncodedBatch:
    inputs: dict[str, np.ndarray]
    candidate_counts: list[int]
    history_lengths: list[int]


class Artifact:
    """Everything needed to encode requests for one model version."""

    def __init__(self, path: Path):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.exists() or not (self.path / "model.onnx").exists():
            raise ArtifactError(f"{self.path} lacks meta.json or model.onnx")
        try:
            self.meta = json.loads(meta_path.read_text())
            contract = parse_meta(self.meta, self.path.name)
            self.name, self.version = contract.name, contract.version
            self.scenarios: list[str] = list(contract.scenarios)
            self.history_length = contract.history_length
            self.request_features = list(contract.request_features)
            self.item_features = list(contract.item_features)
            self.request_numeric: list[NumericFeature] = list(contract.request_numeric)
            self.item_numeric: list[NumericFeature] = list(contract.item_numeric)
            self.vocabularies = {name: _vocab(self.path / rel) for name, rel in contract.vocabularies.items()}
            item_table = json.loads((self.path / contract.item_feature_table).read_text())
            if not isinstance(item_table, dict) or not all(
                    isinstance(v, list) and len(v) == len(self.item_features) for v in item_table.values()):
                raise ValueError(f"{contract.item_feature_table} must map item ids to "
                                 f"{len(self.item_features)} values each")
            numeric_table = (json.loads((self.path / contract.item_numeric_table).read_text())
                             if contract.item_numeric_table else {})
            if not isinstance(numeric_table, dict) or not all(
                    isinstance(v, list) and len(v) == len(self.item_numeric) for v in numeric_table.values()):
                raise ValueError(f"{contract.item_numeric_table} must map item ids to "
                                 f"{len(self.item_numeric)} numbers each")
        except (ContractError, KeyError, TypeError, ValueError, OSError) as error:
            raise ArtifactError(f"{self.path}: malformed artifact ({error})") from error
        self.scenario_index = {s: i + FIRST_KNOWN_INDEX for i, s in enumerate(self.scenarios)}
        if self.vocabularies["scenario"] != self.scenario_index:
            raise ArtifactError(f"{self.path}: vocab of scenario disagrees with meta.json's scenarios")
        self.item_index = self.vocabularies["item_id"]
        # Item-side features, pre-encoded per raw item id; unknown items get OOV for each feature.
        self.item_feature_index = {
            item: [self.vocabularies[name].get(value, OOV) for name, value in zip(self.item_features, values)]
            for item, values in item_table.items()
        }
        # Item-side numeric features, transformed once per raw item id (columns of the item table);
        # an unknown item's values are missing, so imputed (`numeric_of_unknown_item`).
        self.item_numeric_index = dict(zip(numeric_table, self.transform_numeric(
            self.item_numeric, list(numeric_table.values())).tolist()))
        self.numeric_of_unknown_item = self.transform_numeric(self.item_numeric, [[None] * len(self.item_numeric)])[0]
        # request/user-side features whose values are numbers (every other one is a categorical id)
        self.numeric_feature_names = frozenset(f.name for f in self.request_numeric)
        self.model_path = self.path / FP32_GRAPH
        self.precisions = available_precisions(self.meta)     # precision -> {"file", "passed", ...}

    def choose_precision(self, wanted: str, on_gpu: bool) -> str:
        """"auto": int8 on CPU where the artifact says it passed its checks, else fp32 (always on a
        GPU, where int8 dynamic quantisation does not pay); "fp32" / "int8": that graph or an error."""
        if wanted == "auto":
            int8 = self.precisions.get("int8")
            if not on_gpu and int8 and int8.get("passed"):
                return "int8"
            return "fp32" if "fp32" in self.precisions else next(iter(self.precisions))
        if wanted not in self.precisions:
            raise ArtifactError(f"{self.path}: SAINET_PRECISION={wanted} but the artifact holds "
                                f"{sorted(self.precisions)}")
        return wanted

    def graph_path(self, precision: str) -> Path:
        return self.path / self.precisions[precision]["file"]

    @staticmethod
    def transform_numeric(features: list[NumericFeature], rows: list[list]) -> np.ndarray:
        """[len(rows), len(features)] float32 model inputs from raw values (numbers, numeric text as
        the Redis hash holds it, None), by the schema's rule (`sainet.numeric`)."""
        if not features:    # the common case: nothing to convert on the hot path
            return np.zeros((len(rows), 0), dtype=np.float32)
        raw = as_numbers(np.array(rows, dtype=object).reshape(len(rows), len(features)))
        return np.stack([feature.transform(raw[:, i]) for i, feature in enumerate(features)], axis=1)

    def encode_feature(self, name: str, value: str | None) -> int:
        vocab = self.vocabularies[name]
        return vocab.get(MISSING_VALUE if value is None else str(value), OOV)

    def encode(self, scenarios: list[str], histories: Sequence[History | Sequence[Behaviour]],
               features: list[dict[str, str | float]], candidates: list[list[str]]) -> EncodedBatch:
        """Model inputs for B requests: histories left-padded to the batch's longest (at most N),
        candidates padded to the batch's largest C with OOV (their scores are discarded). A numeric
        feature that `features` lacks is missing, so imputed, as in training."""
        b = len(scenarios)
        histories = [History.of(h)[-self.history_length:] for h in histories]
        length = max(1, max(len(h) for h in histories))
        width = max(len(c) for c in candidates)
        hist_items = np.zeros((b, length), dtype=np.int64)
        hist_scen = np.zeros((b, length), dtype=np.int64)
        cand_items = np.full((b, width), OOV, dtype=np.int64)
        cand_feats = np.full((b, width, len(self.item_features)), OOV, dtype=np.int64)
        request_feats = np.zeros((b, len(self.request_features)), dtype=np.int64)
        items, scen_index = self.item_index, self.scenario_index
        unknown_item_features = [OOV] * len(self.item_features)
        for row in range(b):
            history = histories[row]
            if history:   # map(dict.get, ...) loops in C: the read path's hottest lines
                hist_items[row, length - len(history):] = list(map(items.get, history.items, repeat(OOV)))
                hist_scen[row, length - len(history):] = list(map(scen_index.get, history.scenarios, repeat(OOV)))
            cands = candidates[row]
            cand_items[row, :len(cands)] = list(map(items.get, cands, repeat(OOV)))
            if self.item_features:
                cand_feats[row, :len(cands)] = [self.item_feature_index.get(c, unknown_item_features)
                                                for c in cands]
            for col, name in enumerate(self.request_features):
                request_feats[row, col] = self.encode_feature(name, features[row].get(name))
        target = np.array([scen_index[s] for s in scenarios], dtype=np.int64)
        request_numeric = self.transform_numeric(
            self.request_numeric, [[row.get(f.name) for f in self.request_numeric] for row in features])
        cand_numeric = np.zeros((b, width, len(self.item_numeric)), dtype=np.float32)
        if self.item_numeric:
            unknown = self.numeric_of_unknown_item
            for row, cands in enumerate(candidates):
                cand_numeric[row, :len(cands)] = [self.item_numeric_index.get(c, unknown) for c in cands]
        inputs = dict(zip(INPUT_NAMES, (hist_items, hist_scen, target, request_feats, cand_items, cand_feats,
                                        request_numeric, cand_numeric)))
        return EncodedBatch(inputs, [len(c) for c in candidates], [len(h) for h in histories])
