"""The Spark engine (local[2]) runs the same query as DuckDB and gives exactly the in-memory path's
examples. One module and one SparkSession for the whole session: the JVM's start is the cost."""

import shutil

import pytest

from model.data.datasets import DataOptions, prepare_dataset
from model.data.engines import EngineOptions, prepare_to_directory
from model.data.examples import PreparedData
from model.testing import write_grouplens_folder
from tests.model.data.conftest import assert_same_prepared, user_log, write_log_shards

SPARK = EngineOptions(engine="spark")


@pytest.fixture(scope="session")
def spark():
    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'sainet[spark]')")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime on PATH: the Spark engine needs Java 17+")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("sainet-tests")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "2").config("spark.sql.adaptive.enabled", "false")
               .config("spark.driver.memory", "1g")
               # a short-lived JVM: the C1 compiler alone starts and warms up faster
               .config("spark.driver.extraJavaOptions", "-XX:+UseSerialGC -XX:TieredStopAtLevel=1")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_own_log_in_shards_matches_the_in_memory_path(spark, tmp_path):
    # features of all three sides, ties, non-behaviours, float ids, shards read in name order, random split
    logs = write_log_shards(user_log(rows=400, seed=1), tmp_path / "logs", shards=3)
    options = DataOptions(dataset="logs", data_dir=str(logs), history_length=5, split="random")
    summary = prepare_to_directory(options, tmp_path / "prepared", SPARK, spark=spark)
    assert summary["engine"] == "spark"
    assert_same_prepared(prepare_dataset(options), PreparedData.load(tmp_path / "prepared"))


@pytest.mark.real_data
def test_amazon_matches_the_in_memory_path(spark, small_amazon_dir, tmp_path):
    # sampled negatives share their positive's history; the given leave-last-out split
    options = DataOptions(dataset="amazon-cdsr", data_dir=str(small_amazon_dir), history_length=50)
    prepare_to_directory(options, tmp_path, SPARK, spark=spark)
    assert_same_prepared(prepare_dataset(options), PreparedData.load(tmp_path))


def test_min_max_numeric_features_match_the_in_memory_path(spark, tmp_path):
    options = DataOptions(dataset="movielens-1m", data_dir=str(write_grouplens_folder(tmp_path)),
                          split="random", protocol="scenario-wise-rec")
    prepare_to_directory(options, tmp_path / "prepared", SPARK, spark=spark)
    assert_same_prepared(prepare_dataset(options), PreparedData.load(tmp_path / "prepared"))


def test_time_split_matches_the_in_memory_path_over_several_partitions(spark, tmp_path):
    # ties in time at the cut ranks are broken by log order; the cut keys come from a sort spread over
    # several range partitions, no window over all the rows
    logs = write_log_shards(user_log(rows=500, seed=4), tmp_path / "logs", shards=2)
    options = DataOptions(dataset="logs", data_dir=str(logs), history_length=5, split="time")
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "5")
    try:
        prepare_to_directory(options, tmp_path / "prepared", SPARK, spark=spark)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)
    assert_same_prepared(prepare_dataset(options), PreparedData.load(tmp_path / "prepared"))
