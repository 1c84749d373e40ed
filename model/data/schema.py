"""Feature schema and vocabularies: the declared contract saved with every prepared dataset and run.

Index layout of every vocabulary: 0 is padding, 1 is out-of-vocabulary (OOV), known values start at 2.
Raw values are kept as strings so that ids read from CSV, parquet or a JSON request all agree.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from sainet.contract import FIRST_KNOWN_INDEX, OOV_INDEX, PAD_INDEX  # noqa: F401  (the artifact contract's layout)
from sainet.numeric import NumericFeature

FeatureSide = Literal["user", "item", "context"]


def as_raw_strings(values) -> np.ndarray:
    """Raw ids as an object array of str; ints and strings of the same digits become equal."""
    series = pd.Series(values)
    if pd.api.types.is_float_dtype(series):
        # 12.0 read from a float column is the id "12", not "12.0".
        as_int = series.astype("Int64")
        series = as_int.astype(str).where(series.notna(), "")
    return series.astype(str).to_numpy(dtype=object)


class Vocabulary:
    """Maps raw values to contiguous indices with vectorised lookups (no per-row Python)."""

    def __init__(self, values: list[str]):
        self.values = list(values)
        self._index = pd.Index(self.values, dtype=object)
        if not self._index.is_unique:
            raise ValueError("vocabulary values must be unique")

    @classmethod
    def fit(cls, raw_values, min_count: int = 1) -> Vocabulary:
        """Known values in order of first appearance, so a vocabulary is reproducible from the data."""
        raw = pd.Series(as_raw_strings(raw_values))
        counts = raw.value_counts(sort=False)
        kept = counts[counts >= min_count].index
        order = pd.unique(raw[raw.isin(kept)])
        return cls([str(v) for v in order])

    def __len__(self) -> int:
        """Embedding table size: padding + OOV + known values."""
        return len(self.values) + FIRST_KNOWN_INDEX

    def encode(self, raw_values) -> np.ndarray:
        positions = self._index.get_indexer(as_raw_strings(raw_values))
        return np.where(positions < 0, OOV_INDEX, positions + FIRST_KNOWN_INDEX).astype(np.int64)

    def decode(self, indices) -> np.ndarray:
        lookup = np.array(["<pad>", "<oov>", *self.values], dtype=object)
        return lookup[np.asarray(indices)]

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.values == other.values

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.values))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls(json.loads(path.read_text()))


@dataclass(frozen=True)
class CategoricalFeature:
    """One "other feature" of the paper (o_f). `side` says where serving finds its value:
    user-side values live beside the user's history, item-side ones in a table keyed by item id,
    context ones come with the request."""

    name: str
    side: FeatureSide


@dataclass(frozen=True)
class NumericColumn:
    """A numeric column of a log and its side, before its statistics are fit (`NumericFeature`)."""

    name: str
    side: FeatureSide
    scaling: str = "standard"     # `sainet.numeric.SCALINGS`


def _on_request_side(features: list, request: bool) -> list:
    """The features with one value per request (user and context side), or per candidate item."""
    return [f for f in features if (f.side != "item") == request]


@dataclass
class FeatureSchema:
    """Everything a model needs to know about its inputs (FuxiCTR's feature_map, for SAINet)."""

    dataset: str
    scenarios: list[str]
    history_length: int
    features: list[CategoricalFeature] = field(default_factory=list)
    vocab_sizes: dict[str, int] = field(default_factory=dict)
    numeric_features: list[NumericFeature] = field(default_factory=list)

    @property
    def request_features(self) -> list[CategoricalFeature]:
        """Features with one value per request (user and context side), in input order."""
        return _on_request_side(self.features, True)

    @property
    def item_features(self) -> list[CategoricalFeature]:
        """Features with one value per candidate item, in input order."""
        return _on_request_side(self.features, False)

    @property
    def request_numeric(self) -> list[NumericFeature]:
        """Dense features with one value per request (user and context side), in input order."""
        return _on_request_side(self.numeric_features, True)

    @property
    def item_numeric(self) -> list[NumericFeature]:
        """Dense features with one value per candidate item, in input order."""
        return _on_request_side(self.numeric_features, False)

    @property
    def num_item_embeddings(self) -> int:
        return self.vocab_sizes["item_id"]

    @property
    def num_scenario_embeddings(self) -> int:
        return self.vocab_sizes["scenario"]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSchema:
        data = dict(data)
        data["features"] = [CategoricalFeature(**f) for f in data.get("features", [])]
        data["numeric_features"] = [NumericFeature.from_dict(f) for f in data.get("numeric_features", [])]
        return cls(**data)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> FeatureSchema:
        return cls.from_dict(json.loads(path.read_text()))
