import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model.data.datasets import DataOptions, prepare_dataset
from model.data.synthetic import SyntheticConfig
from model.metrics import safe_auc
from model.train import TrainConfig, evaluate_run, load_run, predict, train_model

TINY = DataOptions(history_length=10, synthetic=SyntheticConfig(users=300, items=60, events_per_user=30))
FAST = {"embed_dim": 16, "tower": (64, 32)}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    data = prepare_dataset(TINY)
    metrics = train_model(data, "sainet", FAST, TrainConfig(epochs=2, batch_size=512, seed=3, threads=1), out, TINY)
    return out, metrics, data


def test_run_directory_holds_everything_export_needs(tiny_run):
    out, metrics, _ = tiny_run
    for name in ("checkpoint.pt", "schema.json", "vocab/item_id.json", "vocab/scenario.json",
                 "item_features.parquet", "config.json", "metrics.json", "history.json", "training_curve.png"):
        assert (out / name).exists(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["auc"]["per_scenario"]) == {"s0", "s1", "s2"}
    for key in ("logloss", "oracle_auc", "train_seconds", "examples_per_second"):
        assert saved[key] is not None and saved[key] > 0, key
    assert saved == json.loads(json.dumps(metrics))


def test_evaluate_recomputes_the_test_metrics(tiny_run):
    out, metrics, _ = tiny_run
    recomputed = evaluate_run(out)
    assert recomputed["auc"] == metrics["auc"]
    assert recomputed["logloss"] == pytest.approx(metrics["logloss"], abs=1e-9)


def test_loaded_model_predicts_like_the_trained_one(tiny_run):
    out, _, data = tiny_run
    run = load_run(out)
    assert run.model_name == "sainet" and run.schema == data.schema
    probs = predict(run.model, data.splits["test"])
    assert np.isfinite(probs).all() and probs.shape == (len(data.splits["test"]),)


def test_training_is_deterministic_for_a_seed(tmp_path):
    data = prepare_dataset(TINY)
    config = TrainConfig(epochs=1, batch_size=512, seed=11, threads=1)
    a = train_model(data, "sainet", FAST, config, tmp_path / "a", TINY)
    b = train_model(data, "sainet", FAST, config, tmp_path / "b", TINY)
    assert a["auc"] == b["auc"] and a["logloss"] == b["logloss"]


def test_short_synthetic_run_beats_chance(tmp_path):
    options = DataOptions(history_length=20, synthetic=SyntheticConfig(users=1500, items=200, events_per_user=40))
    metrics = train_model(prepare_dataset(options), "sainet", {}, TrainConfig(epochs=3, batch_size=1024, threads=2),
                          tmp_path, options)
    assert metrics["auc"]["overall"] > 0.55
    assert metrics["oracle_auc"] > metrics["auc"]["overall"]


@pytest.mark.real_data
def test_short_amazon_run_beats_chance(tmp_path, amazon_dir):
    options = DataOptions(dataset="amazon-cdsr", data_dir=str(amazon_dir))
    metrics = train_model(prepare_dataset(options), "sainet", FAST,
                          TrainConfig(epochs=2, batch_size=1024, max_train_examples=200_000, threads=2),
                          tmp_path, options)
    assert metrics["auc"]["overall"] > 0.58
    assert all(auc > 0.55 for auc in metrics["auc"]["per_scenario"].values())


@pytest.mark.real_data
def test_short_movielens_run_beats_chance(tmp_path, movielens_dir):
    options = DataOptions(dataset="movielens-1m", data_dir=str(movielens_dir), history_length=10)
    metrics = train_model(prepare_dataset(options), "sainet", FAST,
                          TrainConfig(epochs=2, batch_size=1024, max_train_examples=80_000, threads=2),
                          tmp_path, options)
    assert metrics["auc"]["overall"] > 0.62
    assert set(metrics["auc"]["per_scenario"]) == {"under-25", "25-34", "35-plus"}


@pytest.fixture(scope="module")
def tiny_data():
    return prepare_dataset(TINY)


def test_early_stop_counts_evaluations_without_improvement(tiny_data, tmp_path):
    # lr 0: the weights never change, so no evaluation after the first is better
    config = TrainConfig(epochs=50, batch_size=64, learning_rate=0.0, eval_every_steps=4, patience=2, threads=1)
    metrics = train_model(tiny_data, "dnn", FAST, config, tmp_path, TINY)
    assert metrics["stop_reason"] == "early_stop" and metrics["stopped_at_cap_improving"] is False
    assert (metrics["evaluations"], metrics["best_step"], metrics["steps"]) == (3, 4, 12)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [e["step"] for e in history["evals"]] == [4, 8, 12] and history["best_step"] == 4


def test_step_budget_flags_a_run_still_improving(tiny_data, tmp_path):
    # one evaluation, at the budget's last step: the run is cut off at its best
    config = TrainConfig(epochs=50, batch_size=64, max_steps=5, eval_every_steps=None, threads=1)
    metrics = train_model(tiny_data, "dnn", FAST, config, tmp_path / "a", TINY)
    assert (metrics["stop_reason"], metrics["steps"], metrics["best_step"]) == ("cap", 5, 5)
    assert metrics["stopped_at_cap_improving"] is True
    # the budget ends a run before its patience ran out: flagged, even though its best came earlier
    config = TrainConfig(epochs=50, batch_size=64, learning_rate=0.0, max_steps=6, eval_every_steps=2, patience=5,
                         threads=1)
    metrics = train_model(tiny_data, "dnn", FAST, config, tmp_path / "b", TINY)
    assert (metrics["stop_reason"], metrics["steps"], metrics["evaluations"]) == ("cap", 6, 3)
    assert metrics["stopped_at_cap_improving"] is True and metrics["best_step"] == 2
    assert metrics["evaluations_since_best"] == 2
    # when the budget's last evaluation is the one that exhausts the patience, early stopping decided
    config = dataclasses.replace(config, patience=2)
    metrics = train_model(tiny_data, "dnn", FAST, config, tmp_path / "c", TINY)
    assert (metrics["stop_reason"], metrics["steps"]) == ("early_stop", 6)
    assert metrics["stopped_at_cap_improving"] is False


def test_epoch_budget_evaluates_at_each_epoch_end(tiny_data, tmp_path):
    steps_per_epoch = -(-len(tiny_data.splits["train"]) // 1024)
    config = TrainConfig(epochs=2, batch_size=1024, eval_every_steps=0, patience=5, threads=1)
    metrics = train_model(tiny_data, "dnn", FAST, config, tmp_path, TINY)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [e["step"] for e in history["evals"]] == [steps_per_epoch, 2 * steps_per_epoch]
    assert metrics["stop_reason"] == "cap" and metrics["steps"] == 2 * steps_per_epoch


def test_best_validation_weights_are_restored(tiny_data, tmp_path):
    config = TrainConfig(epochs=4, batch_size=128, learning_rate=3e-2, eval_every_steps=7, patience=3, threads=1)
    metrics = train_model(tiny_data, "dnn", FAST, config, tmp_path, TINY)
    history = json.loads((tmp_path / "history.json").read_text())
    best = max(e["valid_auc"] for e in history["evals"])
    assert metrics["valid_auc"] == best
    valid = tiny_data.splits["valid"]
    assert safe_auc(valid.label, predict(load_run(tmp_path).model, valid)) == pytest.approx(best, abs=1e-12)


def test_defaults_are_the_converging_regime():
    config = TrainConfig()
    assert (config.batch_size, config.eval_every_steps, config.patience, config.epochs) == (512, 200, 3, 20)


def test_sainet_train_defaults_are_train_configs():
    from sainet.cli import build_parser

    args = build_parser().parse_args(["train", "--out", "x"])
    config = TrainConfig()
    assert (args.epochs, args.batch_size, args.lr, args.patience, args.eval_every_steps, args.max_steps) == (
        config.epochs, config.batch_size, config.learning_rate, config.patience, config.eval_every_steps,
        config.max_steps)
    # the Makefile's `make model` command parses and trains with the converging defaults (no cap of its own)
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    train_line = next(line.split("sainet ", 1)[1] for line in makefile.splitlines() if "sainet train" in line)
    made = build_parser().parse_args(train_line.replace("$(DEFAULT_RUN)", "runs/default").split())
    assert (made.epochs, made.max_steps) == (config.epochs, config.max_steps)


def test_a_run_from_an_older_version_loads_and_says_why_its_data_cannot_be_rebuilt(tiny_run, tmp_path):
    out, _, data = tiny_run
    old = tmp_path / "old-run"
    shutil.copytree(out, old)
    checkpoint = torch.load(old / "checkpoint.pt", map_location="cpu", weights_only=True)
    checkpoint["data_options"]["synthetic"]["sharpness"] = 4.0      # a field of an older synthetic world
    torch.save(checkpoint, old / "checkpoint.pt")
    run = load_run(old)
    assert run.data_options is None and "synthetic.sharpness" in run.data_options_problem
    assert np.isfinite(predict(run.model, data.splits["test"])).all()     # the model itself still serves
    with pytest.raises(ValueError, match="synthetic.sharpness"):
        evaluate_run(old)
