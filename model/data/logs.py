"""The canonical interaction-log format that every dataset adapter produces and users can bring.

Required columns (one row per labelled event, in the log's own order):

    user_id    raw user id (str or int)
    item_id    raw item id (str or int)
    scenario   raw scenario name (str or int)
    timestamp  event time, any integer or float unit (unix seconds in the built-in sets)
    label      1 = click / positive, 0 = negative

Optional columns:

    any other categorical column   an "other feature" of the paper; its side (user, item, context)
                                   is inferred: constant per item -> item side, else constant per
                                   user -> user side, else context
    any numeric column             a dense feature (`sainet.numeric`), side inferred the same way: a
                                   float column holding a fractional value, or one declared numeric
                                   (`--numeric COL`); a float column of whole numbers stays a
                                   categorical id, as 12.0 is the id "12"
    is_behaviour                   whether the event enters later histories; default `label == 1`
                                   (a click is a behaviour, an unclicked impression is not)
    split                          train / valid / test, when the adapter splits itself
    oracle_prob                    true click probability (synthetic data only)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from model.data.schema import CategoricalFeature, NumericColumn, as_raw_strings
from sainet.contract import MISSING_VALUE
from sainet.numeric import as_numbers

REQUIRED_COLUMNS = ("user_id", "item_id", "scenario", "timestamp", "label")
RESERVED_COLUMNS = (*REQUIRED_COLUMNS, "is_behaviour", "split", "oracle_prob")
SPLITS = ("train", "valid", "test")


@dataclass
class InteractionLog:
    """A validated canonical log plus what the adapter knows about it."""

    frame: pd.DataFrame
    features: list[CategoricalFeature] = field(default_factory=list)
    scenario_order: list[str] | None = None
    numeric: list[NumericColumn] = field(default_factory=list)

    @property
    def has_oracle(self) -> bool:
        return "oracle_prob" in self.frame.columns


def infer_side(frame: pd.DataFrame, column: str) -> str:
    """Item side if a column never varies within an item, else user side, else context (a missing
    value counts as one value)."""
    if frame.groupby("item_id", sort=False)[column].nunique(dropna=False).max() <= 1:
        return "item"
    if frame.groupby("user_id", sort=False)[column].nunique(dropna=False).max() <= 1:
        return "user"
    return "context"


def infer_feature_sides(frame: pd.DataFrame, columns: list[str]) -> list[CategoricalFeature]:
    return [CategoricalFeature(column, infer_side(frame, column)) for column in columns]


def is_fractional(values: pd.Series) -> bool:
    """A float column holding a finite non-integer value: a measurement, not an id read as float."""
    if not pd.api.types.is_float_dtype(values):
        return False
    numbers = as_numbers(values.to_numpy())
    return bool(np.any(np.isfinite(numbers) & (numbers != np.floor(numbers))))


def validate_log(frame: pd.DataFrame, features: list[CategoricalFeature] | None = None,
                 scenario_order: list[str] | None = None, numeric: tuple[str, ...] | list[str] = (),
                 numeric_scaling: dict[str, str] | None = None) -> InteractionLog:
    """Checks the canonical columns and normalises their types; raises ValueError naming the column.

    `numeric` names columns to read as numbers (beside the fractional float columns found when the
    features are inferred); their values become float64 with NaN for anything missing or not finite.
    `numeric_scaling` gives a numeric column a scaling other than "standard" (`sainet.numeric`)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"interaction log lacks required column(s) {missing}; "
                         f"expected {list(REQUIRED_COLUMNS)}")
    frame = frame.reset_index(drop=True).copy()
    for column in ("user_id", "item_id", "scenario"):
        if frame[column].isna().any():
            raise ValueError(f"column {column!r} has missing values")
        frame[column] = as_raw_strings(frame[column])
    timestamps = pd.to_numeric(frame["timestamp"], errors="coerce")
    if timestamps.isna().any():
        raise ValueError("column 'timestamp' must be numeric and complete")
    frame["timestamp"] = timestamps.to_numpy(dtype=np.float64)
    labels = pd.to_numeric(frame["label"], errors="coerce")
    if not labels.isin([0, 1]).all():
        raise ValueError("column 'label' must hold only 0 and 1")
    frame["label"] = labels.to_numpy(dtype=np.int8)
    if "is_behaviour" in frame.columns:
        frame["is_behaviour"] = frame["is_behaviour"].astype(bool)
    else:
        frame["is_behaviour"] = frame["label"] == 1
    if "split" in frame.columns and not frame["split"].isin(SPLITS).all():
        raise ValueError(f"column 'split' must hold only {SPLITS}")
    for name in numeric:
        if name not in frame.columns or name in RESERVED_COLUMNS:
            raise ValueError(f"numeric column {name!r} is not a feature column of the log")
    extra = [c for c in frame.columns if c not in RESERVED_COLUMNS]
    numeric_names = [c for c in extra if c in numeric or (features is None and is_fractional(frame[c]))]
    for name in numeric_names:
        frame[name] = as_numbers(frame[name].to_numpy())
    numeric_scaling = numeric_scaling or {}
    if set(numeric_scaling) - set(numeric_names):
        raise ValueError(f"numeric_scaling names columns {sorted(set(numeric_scaling) - set(numeric_names))} "
                         "that are not numeric")
    numeric_columns = [NumericColumn(name, infer_side(frame, name), numeric_scaling.get(name, "standard"))
                       for name in numeric_names]
    if features is None:
        features = infer_feature_sides(frame, [c for c in extra if c not in numeric_names])
    elif any(f.name in numeric_names for f in features):
        raise ValueError(f"columns {numeric_names} cannot be both categorical and numeric")
    for feature in features:
        if feature.name not in frame.columns:
            raise ValueError(f"declared feature {feature.name!r} is not a column of the log")
        frame[feature.name] = as_raw_strings(frame[feature.name].fillna(MISSING_VALUE))
    return InteractionLog(frame, features, scenario_order, numeric_columns)


def log_files(path: Path) -> list[Path]:
    """The files of a canonical log, in log order: a parquet/CSV file; a folder holding
    interactions.parquet|csv; or a folder of shards (`part-*.parquet`, else every `*.parquet`,
    else every `*.csv`), read in name order."""
    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise FileNotFoundError(f"interaction log {path} does not exist")
        return [path]
    for name in ("interactions.parquet", "interactions.csv"):
        if (path / name).exists():
            return [path / name]
    for pattern in ("part-*.parquet", "*.parquet", "*.csv"):
        shards = sorted(p for p in path.glob(pattern) if not p.name.startswith((".", "_")))
        if shards:
            return shards
    raise FileNotFoundError(f"{path} holds neither interactions.parquet|csv nor parquet/CSV shards")


def read_log_file(path: Path) -> pd.DataFrame:
    """Reads a canonical log from parquet or CSV (a directory holding interactions.parquet|csv, or a
    folder of shards, works too)."""
    files = log_files(path)
    if len(files) > 1:
        return pd.concat([read_log_file(f) for f in files], ignore_index=True)
    path = files[0]
    if not path.exists():
        raise FileNotFoundError(f"interaction log {path} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".tsv"):
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",",
                           dtype={"user_id": str, "item_id": str, "scenario": str})
    raise ValueError(f"unsupported log format {path.suffix!r}: use .parquet, .csv or .tsv")
