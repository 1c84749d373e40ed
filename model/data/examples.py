"""From a canonical log to model-ready examples: splits, vocabularies and leak-free histories.

Every labelled event becomes one example. Its history is the user's most recent `history_length`
behaviours strictly before it in time order, ties broken by the log's own row order, left-padded
with 0 so the most recent behaviour sits last. Everything runs vectorised over whole arrays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from model.data.logs import SPLITS, InteractionLog
from model.data.schema import PAD_INDEX, FeatureSchema, NumericFeature, Vocabulary

SplitMethod = Literal["time", "random", "leave-last-out", "given"]
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass
class ExampleSet:
    """One split as parallel arrays; row i of every array is example i."""

    target_item: np.ndarray          # [n] int64
    target_scenario: np.ndarray      # [n] int64
    label: np.ndarray                # [n] float32
    hist_items: np.ndarray           # [n, N] int32, 0 = padding
    hist_scenarios: np.ndarray       # [n, N] int32, 0 = padding
    request_features: np.ndarray     # [n, F_request] int64 (user and context side)
    item_features: np.ndarray        # [n, F_item] int64
    request_numeric: np.ndarray      # [n, F_request_numeric] float32, standardised (`sainet.numeric`)
    item_numeric: np.ndarray         # [n, F_item_numeric] float32, standardised
    user_id: np.ndarray              # [n] raw ids, for diagnostics and seeding
    timestamp: np.ndarray            # [n] float64
    oracle_prob: np.ndarray | None = None  # [n] float32, synthetic data only

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, rows: np.ndarray) -> ExampleSet:
        return ExampleSet(**{name: (None if value is None else value[rows])
                             for name, value in self.__dict__.items()})


@dataclass
class PreparedData:
    schema: FeatureSchema
    vocabularies: dict[str, Vocabulary]
    splits: dict[str, ExampleSet]
    # Raw item id -> raw item-side feature values, from training data (serving's lookup table).
    item_feature_table: pd.DataFrame = field(default_factory=pd.DataFrame)

    def save(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        (out_dir / "vocab").mkdir(parents=True, exist_ok=True)
        self.schema.save(out_dir / "schema.json")
        for name, vocab in self.vocabularies.items():
            vocab.save(out_dir / "vocab" / f"{name}.json")
        self.item_feature_table.to_parquet(out_dir / "item_features.parquet", index=False)
        for name, examples in self.splits.items():
            pq.write_table(_examples_to_table(examples, self.schema), out_dir / f"{name}.parquet")

    @classmethod
    def load(cls, out_dir: Path) -> PreparedData:
        out_dir = Path(out_dir)
        schema = FeatureSchema.load(out_dir / "schema.json")
        vocabularies = {p.stem: Vocabulary.load(p) for p in sorted((out_dir / "vocab").glob("*.json"))}
        splits = {name: _examples_from_table(read_split_table(out_dir / f"{name}.parquet"), schema)
                  for name in SPLITS}
        return cls(schema, vocabularies, splits, pd.read_parquet(out_dir / "item_features.parquet"))


def split_shards(path: Path) -> list[Path]:
    """A split's parquet files in order: the file itself, or the shards of a folder (engine output)."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.glob("*.parquet") if not p.name.startswith((".", "_")))
    return [path]


def read_split_table(path: Path) -> pa.Table:
    shards = split_shards(path)
    if not shards:
        raise FileNotFoundError(f"{path} holds no parquet shards")
    return pa.concat_tables([pq.read_table(p) for p in shards])


def assign_splits(frame: pd.DataFrame, method: SplitMethod, seed: int) -> np.ndarray:
    """Split name per row of a frame sorted by (user, time, log order)."""
    n = len(frame)
    if method == "given":
        if "split" not in frame.columns:
            raise ValueError("split 'given' needs a 'split' column in the log")
        return frame["split"].to_numpy(dtype=object)
    if method == "random":
        order = np.random.default_rng(seed).permutation(n)
    elif method == "time":
        # Global time order (log order breaks ties): the first 80% of events train, etc.
        order = np.lexsort((frame["_log_order"].to_numpy(), frame["timestamp"].to_numpy()))
    elif method == "leave-last-out":
        # Per user: events at the last distinct time test, the one before validation.
        distinct = frame.drop_duplicates(["user_id", "timestamp"])[["user_id", "timestamp"]]
        rank_from_end = distinct.groupby("user_id", sort=False).cumcount(ascending=False)
        key = pd.MultiIndex.from_frame(distinct).get_indexer(
            pd.MultiIndex.from_frame(frame[["user_id", "timestamp"]]))
        rank = rank_from_end.to_numpy()[key]
        return np.where(rank == 0, "test", np.where(rank == 1, "valid", "train")).astype(object)
    else:
        raise ValueError(f"unknown split method {method!r}")
    cut_train = int(round(SPLIT_FRACTIONS[0] * n))
    cut_valid = int(round((SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]) * n))
    split = np.empty(n, dtype=object)
    split[order[:cut_train]] = "train"
    split[order[cut_train:cut_valid]] = "valid"
    split[order[cut_valid:]] = "test"
    return split


def history_positions(user_codes: np.ndarray, is_behaviour: np.ndarray,
                      history_length: int) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by (user, time, log order): indices into the behaviour rows
    (`np.flatnonzero(is_behaviour)`) of each row's history, and the validity mask.

    Row j's history is the behaviours of the same user in rows strictly before j, so its own
    event and everything after it never enter.
    """
    behaviours_before = np.cumsum(is_behaviour) - is_behaviour       # exclusive prefix count
    user_start_row = np.r_[0, np.flatnonzero(np.diff(user_codes)) + 1]
    user_of_row = np.cumsum(np.r_[0, np.diff(user_codes) != 0])
    first_behaviour_of_user = behaviours_before[user_start_row][user_of_row]
    positions = behaviours_before[:, None] - history_length + np.arange(history_length)[None, :]
    valid = positions >= first_behaviour_of_user[:, None]
    return np.where(valid, positions, 0), valid


def sort_log(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """A copy of a canonical log frame in the stable total order everything downstream relies on:
    user (in order of first appearance), then time, then the log's own row order (kept as the
    column `_log_order`); and each sorted row's user code."""
    frame = frame.copy()
    frame["_log_order"] = np.arange(len(frame))
    user_codes, _ = pd.factorize(frame["user_id"])
    order = np.lexsort((frame["_log_order"].to_numpy(), frame["timestamp"].to_numpy(), user_codes))
    return frame.iloc[order].reset_index(drop=True), user_codes[order]


def build_prepared_data(log: InteractionLog, dataset: str, history_length: int,
                        split: SplitMethod, split_seed: int) -> PreparedData:
    frame, user_codes = sort_log(log.frame)
    frame["split"] = assign_splits(frame, split, split_seed)

    train = frame[frame["split"] == "train"]
    if train.empty:
        raise ValueError("the training split is empty")
    vocabularies = {"item_id": Vocabulary.fit(train["item_id"])}
    scenarios = log.scenario_order or sorted(pd.unique(train["scenario"]))
    vocabularies["scenario"] = Vocabulary([str(s) for s in scenarios])
    for feature in log.features:
        vocabularies[feature.name] = Vocabulary.fit(train[feature.name])

    schema = FeatureSchema(
        dataset=dataset,
        scenarios=list(vocabularies["scenario"].values),
        history_length=history_length,
        features=list(log.features),
        vocab_sizes={name: len(v) for name, v in vocabularies.items()},
        # statistics of the training split only: valid and test are transformed with them
        numeric_features=[NumericFeature.fit(c.name, c.side, train[c.name].to_numpy(), c.scaling)
                          for c in log.numeric],
    )

    item_index = vocabularies["item_id"].encode(frame["item_id"])
    scenario_index = vocabularies["scenario"].encode(frame["scenario"])
    is_behaviour = frame["is_behaviour"].to_numpy(dtype=np.int64)
    behaviour_rows = np.flatnonzero(is_behaviour)
    positions, valid = history_positions(user_codes, is_behaviour, history_length)
    hist_items = np.where(valid, item_index[behaviour_rows][positions] if len(behaviour_rows) else 0,
                          PAD_INDEX).astype(np.int32)
    hist_scenarios = np.where(valid, scenario_index[behaviour_rows][positions]
                              if len(behaviour_rows) else 0, PAD_INDEX).astype(np.int32)

    def encoded(features) -> np.ndarray:
        columns = [vocabularies[f.name].encode(frame[f.name]) for f in features]
        return np.stack(columns, axis=1) if columns else np.zeros((len(frame), 0), dtype=np.int64)

    def dense(features) -> np.ndarray:
        columns = [f.transform(frame[f.name].to_numpy()) for f in features]
        return np.stack(columns, axis=1) if columns else np.zeros((len(frame), 0), dtype=np.float32)

    request_features = encoded(schema.request_features)
    item_features = encoded(schema.item_features)
    request_numeric, item_numeric = dense(schema.request_numeric), dense(schema.item_numeric)
    oracle = frame["oracle_prob"].to_numpy(np.float32) if log.has_oracle else None
    split_of_row = frame["split"].to_numpy()
    splits = {}
    for name in SPLITS:
        rows = np.flatnonzero(split_of_row == name)
        splits[name] = ExampleSet(
            target_item=item_index[rows], target_scenario=scenario_index[rows],
            label=frame["label"].to_numpy(np.float32)[rows],
            hist_items=hist_items[rows], hist_scenarios=hist_scenarios[rows],
            request_features=request_features[rows], item_features=item_features[rows],
            request_numeric=request_numeric[rows], item_numeric=item_numeric[rows],
            user_id=frame["user_id"].to_numpy(dtype=object)[rows],
            timestamp=frame["timestamp"].to_numpy(np.float64)[rows],
            oracle_prob=None if oracle is None else oracle[rows],
        )
    # raw values (numbers as float64, NaN when missing): serving applies the schema's transform
    item_columns = ["item_id", *[f.name for f in schema.item_features], *[f.name for f in schema.item_numeric]]
    item_table = train[item_columns].drop_duplicates("item_id").reset_index(drop=True)
    return PreparedData(schema, vocabularies, splits, item_table)


def _fixed_list(matrix: np.ndarray) -> pa.Array:
    width = matrix.shape[1]
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), width)


def _examples_to_table(examples: ExampleSet, schema: FeatureSchema) -> pa.Table:
    columns = {
        "user_id": pa.array(examples.user_id.astype(str)),
        "timestamp": pa.array(examples.timestamp),
        "item": pa.array(examples.target_item),
        "scenario": pa.array(examples.target_scenario),
        "label": pa.array(examples.label),
        "hist_items": _fixed_list(examples.hist_items),
        "hist_scenarios": _fixed_list(examples.hist_scenarios),
    }
    for i, feature in enumerate(schema.request_features):
        columns[feature.name] = pa.array(examples.request_features[:, i])
    for i, feature in enumerate(schema.item_features):
        columns[feature.name] = pa.array(examples.item_features[:, i])
    for i, feature in enumerate(schema.request_numeric):
        columns[feature.name] = pa.array(examples.request_numeric[:, i])
    for i, feature in enumerate(schema.item_numeric):
        columns[feature.name] = pa.array(examples.item_numeric[:, i])
    if examples.oracle_prob is not None:
        columns["oracle_prob"] = pa.array(examples.oracle_prob)
    table = pa.table(columns)
    return table.replace_schema_metadata({"sainet_schema": json.dumps(schema.to_dict())})


def _examples_from_table(table: pa.Table, schema: FeatureSchema) -> ExampleSet:
    n, width = table.num_rows, schema.history_length

    def matrix(name: str) -> np.ndarray:
        flat = table[name].combine_chunks().flatten().to_numpy()
        return flat.reshape(n, width).astype(np.int32)

    def stacked(features) -> np.ndarray:
        if not features:
            return np.zeros((n, 0), dtype=np.int64)
        return np.stack([table[f.name].to_numpy() for f in features], axis=1).astype(np.int64)

    def dense(features) -> np.ndarray:
        if not features:
            return np.zeros((n, 0), dtype=np.float32)
        return np.stack([table[f.name].to_numpy() for f in features], axis=1).astype(np.float32)

    return ExampleSet(
        target_item=table["item"].to_numpy().astype(np.int64),
        target_scenario=table["scenario"].to_numpy().astype(np.int64),
        label=table["label"].to_numpy().astype(np.float32),
        hist_items=matrix("hist_items"), hist_scenarios=matrix("hist_scenarios"),
        request_features=stacked(schema.request_features), item_features=stacked(schema.item_features),
        request_numeric=dense(schema.request_numeric), item_numeric=dense(schema.item_numeric),
        user_id=np.asarray(table["user_id"].to_pylist(), dtype=object),
        timestamp=table["timestamp"].to_numpy(),
        oracle_prob=table["oracle_prob"].to_numpy() if "oracle_prob" in table.column_names else None,
    )
