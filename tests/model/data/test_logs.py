import pandas as pd
import pytest

from model.data.datasets import DataOptions, prepare_dataset
from model.data.logs import read_log_file, validate_log


def sample_log() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [1, 1, 2, 2, 1, 2, 3, 3, 3, 1],
        "item_id": ["a", "b", "a", "c", "c", "b", "a", "b", "c", "a"],
        "scenario": ["home", "search", "home", "home", "search", "search", "home", "home", "search", "home"],
        "timestamp": range(10),
        "label": [1, 0, 1, 1, 0, 1, 1, 0, 1, 1],
        "gender": ["f", "f", "m", "m", "f", "m", "f", "f", "f", "f"],
        "category": ["x", "y", "x", "z", "z", "y", "x", "y", "z", "x"],
        "device": ["ios", "web", "ios", "ios", "web", "ios", "web", "web", "ios", "ios"],
    })


def test_feature_sides_are_inferred():
    log = validate_log(sample_log())
    assert {f.name: f.side for f in log.features} == {"gender": "user", "category": "item", "device": "context"}
    assert log.frame.user_id.tolist()[:2] == ["1", "1"]      # raw ids normalised to strings
    assert log.frame.is_behaviour.tolist() == (log.frame.label == 1).tolist()


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="scenario"):
        validate_log(sample_log().drop(columns=["scenario"]))
    with pytest.raises(ValueError, match="label"):
        validate_log(sample_log().assign(label=2))


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_user_logs_round_trip_through_files(tmp_path, suffix):
    path = tmp_path / f"interactions.{suffix}"
    frame = sample_log()
    frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path)
    assert len(read_log_file(tmp_path)) == 10
    data = prepare_dataset(DataOptions(dataset="logs", data_dir=str(path), split="random", history_length=4))
    assert data.schema.scenarios == ["home", "search"]
    assert [f.side for f in data.schema.features] == ["user", "item", "context"]
    assert sum(len(s) for s in data.splits.values()) == 10


def test_logs_dataset_needs_a_path():
    with pytest.raises(ValueError, match="--data-dir"):
        prepare_dataset(DataOptions(dataset="logs"))
