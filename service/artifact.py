"""Loading a model artifact (model.onnx + meta.json + vocabularies) and turning raw requests into
the model's input arrays. Knows nothing of torch or the training code: the artifact is the contract."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.errors import ArtifactError
from service.store import Behaviour

log = logging.getLogger(__name__)

PAD, OOV = 0, 1
MISSING_VALUE = "<missing>"


def list_versions(model_root: Path) -> list[str]:
    """Version directories holding a meta.json, oldest first (integers sort numerically)."""
    if not model_root.is_dir():
        return []
    versions = [p.name for p in model_root.iterdir()
                if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").exists()]
    return sorted(versions, key=lambda v: (0, int(v), "") if v.isdigit() else (1, 0, v))


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
    return {str(v): i + 2 for i, v in enumerate(values)}


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
            self.name, self.version = self.meta["name"], str(self.meta["version"])
            self.scenarios: list[str] = list(self.meta["scenarios"])
            self.history_length = int(self.meta["max_history_length"])
            schema = self.meta["schema"]
            self.request_features = [f["name"] for f in schema["features"] if f["side"] != "item"]
            self.item_features = [f["name"] for f in schema["features"] if f["side"] == "item"]
            vocab_files = self.meta["vocabularies"]
            self.vocabularies = {name: _vocab(self.path / rel) for name, rel in vocab_files.items()}
            item_table = json.loads((self.path / self.meta["item_features"]).read_text())
        except (KeyError, ValueError, OSError) as error:
            raise ArtifactError(f"{self.path}: malformed artifact ({error})") from error
        self.scenario_index = {s: i + 2 for i, s in enumerate(self.scenarios)}
        self.item_index = self.vocabularies["item_id"]
        # Item-side features, pre-encoded per raw item id; unknown items get OOV for each feature.
        self.item_feature_index = {
            item: [self.vocabularies[name].get(value, OOV) for name, value in zip(self.item_features, values)]
            for item, values in item_table.items()
        }
        self.model_path = self.path / "model.onnx"

    def encode_feature(self, name: str, value: str | None) -> int:
        vocab = self.vocabularies[name]
        return vocab.get(MISSING_VALUE if value is None else str(value), OOV)

    def encode(self, scenarios: list[str], histories: list[list[Behaviour]], features: list[dict[str, str]],
               candidates: list[list[str]]) -> EncodedBatch:
        """Model inputs for B requests: histories left-padded to the batch's longest (at most N),
        candidates padded to the batch's largest C with OOV (their scores are discarded)."""
        b = len(scenarios)
        histories = [h[-self.history_length:] for h in histories]
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
            if history:
                hist_items[row, length - len(history):] = [items.get(x.item_id, OOV) for x in history]
                hist_scen[row, length - len(history):] = [scen_index.get(x.scenario, OOV) for x in history]
            cands = candidates[row]
            cand_items[row, :len(cands)] = [items.get(c, OOV) for c in cands]
            if self.item_features:
                cand_feats[row, :len(cands)] = [self.item_feature_index.get(c, unknown_item_features)
                                                for c in cands]
            for col, name in enumerate(self.request_features):
                request_feats[row, col] = self.encode_feature(name, features[row].get(name))
        target = np.array([scen_index[s] for s in scenarios], dtype=np.int64)
        inputs = {"hist_items": hist_items, "hist_scenarios": hist_scen, "target_scenario": target,
                  "request_features": request_feats, "cand_items": cand_items, "cand_features": cand_feats}
        return EncodedBatch(inputs, [len(c) for c in candidates], [len(h) for h in histories])
