"""The DuckDB engine gives exactly the in-memory path's examples (`build_prepared_data`)."""

import json

import numpy as np
import pandas as pd
import pytest

from model.data.datasets import DataOptions, prepare_dataset
from model.data.engines import EngineOptions, prepare_log_files, prepare_to_directory, write_canonical_log
from model.data.examples import PreparedData
from model.data.synthetic import (
    SyntheticConfig,
    generate_synthetic,
    generate_synthetic_chunks,
    write_synthetic_log,
)
from model.data.schema import FeatureSchema
from model.testing import write_grouplens_folder
from sainet.cli import main
from sainet.numeric import NumericFeature
from tests.model.data.conftest import assert_same_prepared, user_log, write_log_shards

SMALL = SyntheticConfig(users=300, items=80, events_per_user=30, seed=11)


@pytest.mark.parametrize("split", ["time", "random", "leave-last-out"])
def test_synthetic_matches_the_in_memory_path(tmp_path, split):
    options = DataOptions(history_length=8, split=split, synthetic=SMALL)
    spill = tmp_path / "scratch" / "spill"          # created when absent
    summary = prepare_to_directory(options, tmp_path / "out", EngineOptions(memory_limit="1GB", threads=2,
                                                                            temp_dir=str(spill), shard_rows=2000))
    assert summary["engine"] == "duckdb" and len(summary["shards"]["train"]) > 1 and spill.is_dir()
    assert_same_prepared(prepare_dataset(options), PreparedData.load(tmp_path / "out"))


@pytest.mark.real_data
def test_amazon_matches_the_in_memory_path(small_amazon_dir, tmp_path):
    # sampled negatives, the given leave-last-out split, two scenarios mixed in every history
    options = DataOptions(dataset="amazon-cdsr", data_dir=str(small_amazon_dir), history_length=50)
    prepare_to_directory(options, tmp_path)
    expected = prepare_dataset(options)
    assert len(expected.splits["train"]) > 5000 and len(expected.schema.scenarios) == 2
    assert_same_prepared(expected, PreparedData.load(tmp_path))


@pytest.mark.real_data
def test_movielens_matches_the_in_memory_path(small_movielens_dir, tmp_path):
    # user- and item-side features, a global time split (unseen items of later splits are OOV)
    options = DataOptions(dataset="movielens-1m", data_dir=str(small_movielens_dir), history_length=20)
    prepare_to_directory(options, tmp_path)
    expected = prepare_dataset(options)
    assert {f.side for f in expected.schema.features} == {"user", "item"}
    assert_same_prepared(expected, PreparedData.load(tmp_path))


# user_log's times are 60 values over 600 rows: the time split's cuts fall inside ties, which log order breaks
@pytest.mark.parametrize("layout,split", [("csv", "random"), ("shards", "random"), ("csv", "time"), ("shards", "time")])
def test_own_logs_from_csv_or_shards_match(tmp_path, layout, split):
    frame = user_log()
    if layout == "csv":
        logs = tmp_path / "logs"
        logs.mkdir()
        frame.to_csv(logs / "interactions.csv", index=False)
    else:
        logs = write_log_shards(frame, tmp_path / "logs", shards=3)
    options = DataOptions(dataset="logs", data_dir=str(logs), history_length=6, split=split)
    prepare_to_directory(options, tmp_path / "prepared")
    expected = prepare_dataset(options)
    assert [f.side for f in expected.schema.features] == ["user", "item", "context"]
    assert_same_prepared(expected, PreparedData.load(tmp_path / "prepared"))


@pytest.mark.parametrize("rows", [3, 12])
def test_a_time_cut_at_the_end_of_a_tiny_log_matches(tmp_path, rows):
    # 3 rows: the test split's cut is the log's end (no row there); 12 rows: every split has rows
    logs = tmp_path / "logs"
    logs.mkdir()
    user_log(seed=3).head(rows).to_parquet(logs / "part-00000.parquet", index=False)
    options = DataOptions(dataset="logs", data_dir=str(logs), history_length=4, split="time")
    prepare_to_directory(options, tmp_path / "prepared")
    assert_same_prepared(prepare_dataset(options), PreparedData.load(tmp_path / "prepared"))


def test_numeric_columns_match_with_statistics_of_the_training_split(tmp_path, capsys):
    # fractional float columns are numeric by themselves; an integer column is numeric when declared
    frame = user_log().assign(visits=lambda f: f["timestamp"] % 9)
    logs = write_log_shards(frame, tmp_path / "logs", shards=2)
    options = DataOptions(dataset="logs", data_dir=str(logs), history_length=4, split="time", numeric=("visits",))
    assert main(["data", "prepare", "--dataset", "logs", "--data-dir", str(logs), "--history-length", "4",
                 "--split", "time", "--numeric", "visits", "--out", str(tmp_path / "prepared")]) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == "duckdb"
    expected = prepare_dataset(options)
    assert {f.name: f.side for f in expected.schema.numeric_features} == {
        "price": "item", "age": "user", "dwell": "context", "visits": "context"}
    assert_same_prepared(expected, PreparedData.load(tmp_path / "prepared"))
    expected.save(tmp_path / "memory")      # `--engine memory`'s folder holds the same numbers
    assert_same_prepared(expected, PreparedData.load(tmp_path / "memory"))
    train = expected.splits["train"]
    names = [f.name for f in expected.schema.request_numeric]
    dwell = train.request_numeric[:, names.index("dwell")]
    # standardised on the training split (missing values imputed to its mean, 0 once standardised);
    # every split clipped to the training bounds
    stats = expected.schema.numeric_features[[f.name for f in expected.schema.numeric_features].index("dwell")]
    assert abs(dwell.mean()) < 0.05 and abs(dwell.std() - 1) < 0.1
    top = (stats.high - stats.mean) / stats.std
    assert all(s.request_numeric[:, names.index("dwell")].max() <= top + 1e-5 for s in expected.splits.values())
    assert stats.transform([None, float("nan"), "inf"]).tolist() == [0.0, 0.0, 0.0]
    assert (expected.splits["train"].request_numeric.dtype == np.float32
            and train.item_numeric.shape == (len(train), 1))


def test_log_problems_are_named(tmp_path):
    path = write_canonical_log(user_log().drop(columns=["scenario"]), tmp_path / "log.parquet")
    with pytest.raises(ValueError, match="scenario"):
        prepare_log_files([path], tmp_path / "out", dataset="logs", history_length=4, split="time",
                          split_seed=0)
    path = write_canonical_log(user_log().assign(label=2), tmp_path / "log.parquet")
    with pytest.raises(ValueError, match="label"):
        prepare_log_files([path], tmp_path / "out", dataset="logs", history_length=4, split="time",
                          split_seed=0)


def test_generated_shards_are_the_synthetic_world_chunk_by_chunk(tmp_path):
    config = SyntheticConfig(users=50, items=30, events_per_user=8, seed=3)
    shards = write_synthetic_log(config, tmp_path / "big", chunk_users=20)
    assert [p.name for p in shards] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    written = pd.concat([pd.read_parquet(p) for p in shards], ignore_index=True)
    assert written.equals(pd.concat(generate_synthetic_chunks(config, 20), ignore_index=True))
    assert written.user_id.nunique() == 50 and len(written) == 400
    # at most one chunk of users: exactly the in-memory synthetic dataset
    whole = pd.read_parquet(write_synthetic_log(config, tmp_path / "one", chunk_users=50)[0])
    assert whole.equals(generate_synthetic(config))


def test_cli_generate_prepare_train(tmp_path, capsys):
    tiny = ["--synthetic-users", "120", "--synthetic-items", "40", "--synthetic-events", "15"]
    assert main(["data", "generate", "--dataset", "synthetic", *tiny, "--chunk-users", "200",
                 "--out", str(tmp_path / "log")]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 1800
    assert main(["data", "prepare", "--dataset", "logs", "--data-dir", str(tmp_path / "log"),
                 "--history-length", "8", "--memory-limit", "500MB",
                 "--out", str(tmp_path / "prepared")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["engine"] == "duckdb" and summary["examples"] == {"train": 1440, "valid": 180, "test": 180}
    assert (tmp_path / "prepared" / "train.parquet" / "part-00000.parquet").exists()
    # the generated log is the synthetic world: the same examples as `--dataset synthetic` in memory
    in_memory = prepare_dataset(DataOptions(history_length=8, synthetic=SyntheticConfig(
        users=120, items=40, events_per_user=15)))
    assert_same_prepared(in_memory, PreparedData.load(tmp_path / "prepared"), check_dataset=False)

    run = tmp_path / "run"
    assert main(["train", "--prepared", str(tmp_path / "prepared"), "--max-steps", "2", "--threads", "1",
                 "--model-opt", "embed_dim=8", "--model-opt", "tower=16", "--blocks", "1",
                 "--out", str(run)]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["train_examples"] == 1440
    assert json.loads((run / "config.json").read_text())["data_options"]["dataset"] == "logs"
    assert main(["evaluate", "--run", str(run)]) == 0     # rebuilt from the recorded options
    assert json.loads(capsys.readouterr().out)["auc"] == trained["auc"]


def test_min_max_numeric_features_match_the_in_memory_path(tmp_path):
    # the Scenario-Wise Rec protocol's dense age: clip bounds are the training extremes, not quantiles
    options = DataOptions(dataset="movielens-1m", data_dir=str(write_grouplens_folder(tmp_path)),
                          split="random", protocol="scenario-wise-rec")
    prepare_to_directory(options, tmp_path / "prepared")
    expected = prepare_dataset(options)
    assert [f.scaling for f in expected.schema.numeric_features] == ["min-max"]
    assert_same_prepared(expected, PreparedData.load(tmp_path / "prepared"))


def test_a_min_max_column_is_fit_on_the_training_extremes(tmp_path):
    # 3,000 rows: the 0.999 quantile of the training split is below its outlier (1e12), its maximum
    frame = user_log(rows=3000, seed=2)
    frame.loc[7, "timestamp"] = 0           # the outlier in the training split
    logs = tmp_path / "logs"
    logs.mkdir()
    frame.to_parquet(logs / "part-00000.parquet", index=False)
    common = dict(dataset="logs", history_length=4, split="time", split_seed=0)
    prepare_log_files([logs / "part-00000.parquet"], tmp_path / "standard", **common)
    prepare_log_files([logs / "part-00000.parquet"], tmp_path / "min-max", numeric_scaling={"dwell": "min-max"},
                      **common)
    (standard,) = [f for f in FeatureSchema.load(tmp_path / "standard" / "schema.json").numeric_features
                   if f.name == "dwell"]
    (fitted,) = [f for f in FeatureSchema.load(tmp_path / "min-max" / "schema.json").numeric_features
                 if f.name == "dwell"]
    # the time split's training rows: the first 80% by time, log order breaking ties
    order = frame.assign(_row=np.arange(len(frame))).sort_values(["timestamp", "_row"], kind="stable")
    train = order.iloc[: int(round(0.8 * len(frame)))]
    expected = NumericFeature.fit("dwell", fitted.side, train["dwell"].to_numpy(), "min-max")
    assert (fitted.scaling, fitted.low, fitted.high) == ("min-max", expected.low, 1e12)
    assert fitted.mean == pytest.approx(expected.mean, rel=1e-6) and fitted.std == pytest.approx(expected.std, rel=1e-6)
    assert standard.scaling == "standard" and standard.high < 1e12
    with pytest.raises(ValueError, match="numeric_scaling names"):
        prepare_log_files([logs / "part-00000.parquet"], tmp_path / "wrong", numeric_scaling={"gender": "min-max"},
                          **common)
