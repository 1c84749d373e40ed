"""Helpers of the engine tests: reduced copies of the shared datasets (the same restricted log then
goes through both paths) and the exact comparison of two prepared datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.data.examples import PreparedData

AMAZON_USERS_PER_FILE = 150
MOVIELENS_RATINGS = 10_000      # ml-1m.inter is sorted by user: these lines are complete users


def assert_same_prepared(expected: PreparedData, got: PreparedData, check_dataset: bool = True) -> None:
    """Every example of every split equal, field by field and dtype by dtype; the same schema,
    vocabularies and item feature table."""
    if check_dataset:
        assert got.schema == expected.schema
    else:
        assert got.schema.to_dict() | {"dataset": ""} == expected.schema.to_dict() | {"dataset": ""}
    assert got.vocabularies == expected.vocabularies
    for name, split in expected.splits.items():
        other = got.splits[name]
        for field, value in split.__dict__.items():
            mine = getattr(other, field)
            if value is None:
                assert mine is None, f"{name}.{field}"
                continue
            assert mine.dtype == value.dtype, f"{name}.{field}: {mine.dtype} != {value.dtype}"
            np.testing.assert_array_equal(mine, value, err_msg=f"{name}.{field}")
    # frame equality, so that a missing numeric value (NaN) equals itself
    pd.testing.assert_frame_equal(got.item_feature_table.astype(object), expected.item_feature_table.astype(object))


@pytest.fixture(scope="session")
def small_amazon_dir(amazon_dir, tmp_path_factory) -> Path:
    """The Amazon folder with the first users of each sequence file (item and user lists whole)."""
    out = tmp_path_factory.mktemp("reduced") / amazon_dir.name     # the name gives the scenario names
    out.mkdir()
    for path in amazon_dir.iterdir():
        lines = path.read_text().splitlines(keepends=True)
        keep = lines[:AMAZON_USERS_PER_FILE] if path.name.endswith("data_new.txt") else lines
        (out / path.name).write_text("".join(keep))
    return out


@pytest.fixture(scope="session")
def small_movielens_dir(movielens_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reduced") / movielens_dir.name
    out.mkdir()
    for path in movielens_dir.iterdir():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = lines[:MOVIELENS_RATINGS + 1] if path.suffix == ".inter" else lines
        (out / path.name).write_text("".join(keep), encoding="utf-8")
    return out


def user_log(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    """An own log with every complication: integer and float ids, ties in time, non-behaviour
    clicks, categorical and numeric features of all three sides, missing values, rows out of time order."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 25, rows)
    item = rng.integers(0, 40, rows)
    frame = pd.DataFrame({
        "user_id": user, "item_id": item.astype(float),
        "scenario": rng.choice(["home", "search", "feed"], rows),
        "timestamp": rng.integers(0, 60, rows), "label": rng.integers(0, 2, rows),
        "is_behaviour": rng.random(rows) < 0.6,
        "gender": np.where(user % 2, "f", "m"), "category": (item % 7).astype(str),
        "device": rng.choice(["ios", "web", None], rows),
        # numeric, one per side: missing, infinite and outlying values included
        "price": np.where(item % 11 == 0, np.nan, item * 1.37 + 0.5),
        "age": np.where(user % 13 == 0, np.inf, user * 1.5 + 18.25),
        "dwell": np.where(rng.random(rows) < 0.05, np.nan, rng.lognormal(1.0, 1.0, rows)),
    })
    frame.loc[7, "dwell"] = 1e12
    return frame


def write_log_shards(frame: pd.DataFrame, folder: Path, shards: int) -> Path:
    """`frame` as `shards` parquet files `part-00000.parquet`, ... in `folder` (created), in row order."""
    folder.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(frame)), shards)):
        frame.iloc[part].to_parquet(folder / f"part-{i:05d}.parquet", index=False)
    return folder
