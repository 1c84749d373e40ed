"""Streamed training from prepared shards, training checkpoints with resume, and torchrun (DDP)."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import model.train as train_module
from model.data.datasets import DataOptions, prepare_dataset
from model.data.engines import EngineOptions, prepare_to_directory
from model.data.stream import MemorySource, ShardSource, StreamedData
from model.data.synthetic import SyntheticConfig
from model.train import TRAINING_STATE, TrainConfig, can_resume, load_run, train_model

TINY = DataOptions(history_length=10, synthetic=SyntheticConfig(users=300, items=60, events_per_user=30))
FAST = {"embed_dim": 16, "tower": (64, 32)}
SHARD_ROWS = 1500       # several shards (one row group each) of the 7,200 training examples


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare_to_directory(TINY, out, EngineOptions(shard_rows=SHARD_ROWS, threads=1))
    return out


@pytest.fixture(scope="module")
def tiny_data():
    return prepare_dataset(TINY)


def keys(examples, rows) -> list[tuple]:
    return list(zip(examples.user_id[rows], examples.timestamp[rows], examples.target_item[rows]))


def test_each_rank_streams_its_share_once_per_epoch_reshuffled(prepared):
    data = StreamedData.open(prepared)
    assert len(data.split_groups["train"]) > 2
    everything = [key for ex, rows in ShardSource(data, 64, seed=1).eval_batches("train", 10_000)
                  for key in keys(ex, rows)]
    assert len(set(everything)) == len(everything) == 7200          # a key per example
    for world_size in (1, 2):
        sources = [ShardSource(data, 64, seed=1, rank=r, world_size=world_size, shuffle_buffer_rows=500)
                   for r in range(world_size)]
        epochs = []
        for epoch in (1, 2):
            shares = [[key for ex, rows in source.train_batches(epoch) for key in keys(ex, rows)]
                      for source in sources]
            batches = [list(source.train_batches(epoch)) for source in sources]
            assert len({len(b) for b in batches}) == 1 and len(batches[0]) == sources[0].steps_in_epoch(epoch)
            assert all(len(ex.label[rows]) <= 64 for b in batches for ex, rows in b)
            seen = [key for share in shares for key in share]
            assert len(seen) == len(set(seen))                      # no example twice, no rank overlap
            assert set(seen) <= set(everything) and len(everything) - len(seen) < world_size   # equal shares
            epochs.append(shares[0])
        assert epochs[0] != epochs[1]                               # reshuffled each epoch (seeded)
    # replaying an epoch from a batch on gives the same batches as the uninterrupted epoch
    source = ShardSource(data, 64, seed=1, shuffle_buffer_rows=500)
    whole = [keys(ex, rows) for ex, rows in source.train_batches(3)]
    assert [keys(ex, rows) for ex, rows in source.train_batches(3, start_batch=40)] == whole[40:]


def test_fewer_row_groups_than_ranks_share_rows_equally(prepared):
    data = StreamedData.open(prepared)
    data.split_groups["valid"] = data.split_groups["valid"][:1]
    whole = [key for ex, rows in ShardSource(data, 64, seed=1).eval_batches("valid", 50) for key in keys(ex, rows)]
    shares = [[key for ex, rows in ShardSource(data, 64, seed=1, rank=r, world_size=3).eval_batches("valid", 50)
               for key in keys(ex, rows)] for r in range(3)]
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert [k for s in shares for k in s] == whole         # rank order is file order


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("source", ["memory", "stream"])
def test_a_resumed_run_ends_as_the_uninterrupted_one(source, tiny_data, prepared, tmp_path, monkeypatch):
    data = tiny_data if source == "memory" else StreamedData.open(prepared)
    # 15 steps an epoch: checkpoints at 4, 8, 12, 16; the run is killed at step 16, just before its
    # checkpoint, so the resumed run repeats steps 13-16 and crosses into epoch 2
    config = TrainConfig(epochs=2, batch_size=512, seed=5, threads=1, eval_every_steps=5, patience=10,
                         checkpoint_every_steps=4, shuffle_buffer=2000)
    expected = train_model(data, "sainet", FAST, config, tmp_path / "whole", TINY)

    save = train_module.save_training_state
    calls = []

    def killed_at_the_fourth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise Interrupted
        save(*args, **kwargs)

    monkeypatch.setattr(train_module, "save_training_state", killed_at_the_fourth)
    with pytest.raises(Interrupted):
        train_model(data, "sainet", FAST, config, tmp_path / "cut", TINY)
    monkeypatch.setattr(train_module, "save_training_state", save)
    assert torch.load(tmp_path / "cut" / TRAINING_STATE, weights_only=False)["progress"]["step"] == 12
    resumed = train_model(data, "sainet", FAST, config, tmp_path / "cut", TINY, resume=True)

    assert not (tmp_path / "cut" / TRAINING_STATE).exists()
    assert expected["earlier_sittings"] == {"seconds": 0.0, "cpu_seconds": 0.0}
    assert resumed["earlier_sittings"]["cpu_seconds"] > 0 and resumed["train_cpu_seconds"] > 0
    timing = ("train_seconds", "train_cpu_seconds", "examples_per_second", "earlier_sittings")
    assert {k: v for k, v in resumed.items() if k not in timing} == {
        k: v for k, v in expected.items() if k not in timing}
    whole, cut = load_run(tmp_path / "whole").model.state_dict(), load_run(tmp_path / "cut").model.state_dict()
    assert all(torch.equal(whole[name], cut[name]) for name in whole)
    history = [json.loads((tmp_path / run / "history.json").read_text()) for run in ("whole", "cut")]
    assert history[0]["step_loss"] == history[1]["step_loss"]
    assert [e["valid_auc"] for e in history[0]["evals"]] == [e["valid_auc"] for e in history[1]["evals"]]


def test_resume_needs_a_checkpoint_of_the_same_settings(tiny_data, tmp_path, monkeypatch):
    data = tiny_data
    config = TrainConfig(epochs=1, batch_size=512, seed=5, threads=1, max_steps=3, checkpoint_every_steps=2)
    assert not can_resume(tmp_path, "dnn", FAST, config)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_model(data, "dnn", FAST, config, tmp_path, TINY, resume=True)
    save = train_module.save_training_state

    def saved_then_killed(*args, **kwargs):
        save(*args, **kwargs)
        raise Interrupted

    monkeypatch.setattr(train_module, "save_training_state", saved_then_killed)
    with pytest.raises(Interrupted):
        train_model(data, "dnn", FAST, config, tmp_path, TINY)
    other = dataclasses.replace(config, learning_rate=0.1)
    assert can_resume(tmp_path, "dnn", FAST, config) and not can_resume(tmp_path, "dnn", FAST, other)
    assert can_resume(tmp_path, "dnn", FAST, dataclasses.replace(config, checkpoint_every_steps=5, threads=2))
    with pytest.raises(ValueError, match="train_config"):
        train_model(data, "dnn", FAST, other, tmp_path, TINY, resume=True)


def test_memory_source_keeps_the_epoch_orders_train_model_always_drew(tiny_data):
    data = tiny_data
    source = MemorySource(data, 512, seed=3)
    rng = np.random.default_rng(3)
    for epoch in (1, 2):
        order = rng.permutation(len(data.splits["train"]))
        got = np.concatenate([rows for _, rows in source.train_batches(epoch)])
        np.testing.assert_array_equal(got, order)


def test_two_processes_under_torchrun(prepared, tmp_path):
    """`sainet train --nproc 2` relaunches through torchrun: 2 gloo ranks on CPU, each its share."""
    common = ["train", "--prepared", str(prepared), "--model", "dnn", "--model-opt", "embed_dim=16",
              "--model-opt", "tower=64,32", "--epochs", "4", "--batch-size", "256", "--lr", "3e-3",
              "--eval-every-steps", "10", "--patience", "10", "--threads", "1", "--seed", "4"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    two_processes = [sys.executable, "-m", "sainet.cli", *common, "--nproc", "2", "--out", str(tmp_path / "two")]
    done = subprocess.run(two_processes, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)          # one JSON document: only rank 0 prints
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert printed == two and two["processes"] == 2
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        ["checkpoint.pt", "config.json", "history.json", "item_features.parquet", "metrics.json", "schema.json",
         "training_curve.png", "vocab"])
    from sainet.cli import main

    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert two["steps"] == one["steps"]         # the same global batch: the same steps an epoch
    # Tolerance: the two runs see the examples in other orders (each rank shuffles its own share), so
    # they agree as two seeds of one process do: in this setting seeds 4, 5 and 6 of one process
    # reach 0.577, 0.581 and 0.584, two processes (seed 4) 0.585. 0.03 is four times that spread, and
    # about the standard error of an AUC on these 900 validation examples.
    assert abs(two["valid_auc"] - one["valid_auc"]) < 0.03
