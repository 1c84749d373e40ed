"""`sainet seed` against a real redis-server (the `redis_url` fixture)."""

import argparse
import json
import socket
import time

import pandas as pd
import pytest
import redis

from model.data.datasets import DataOptions
from model.data.movielens import load_movielens
from model.data.synthetic import SyntheticConfig, load_synthetic
from sainet.cli import _add_data_arguments, _data_options
from sainet.seed import add_seed_parser, seed_histories
from service.store import Behaviour, RedisBulkWriter, decode_history, history_key

# 60 events: at the world's click rate (0.13) a user has about 6 training clicks, so most fill a history of 5
TINY = SyntheticConfig(users=50, items=30, events_per_user=60)
HISTORY = 5


def stored_state(url: str, prefix: str = "sainet") -> tuple[dict, dict]:
    """Every user's history (oldest first) and features, read back with plain commands."""
    client = redis.Redis.from_url(url)
    try:
        histories = {key.decode().split(":h:", 1)[1][1:-1]: decode_history(client.lrange(key, 0, -1))
                     for key in client.scan_iter(f"{prefix}:h:*")}      # keys are <prefix>:h:{<user>}
        features = {key.decode().split(":u:", 1)[1][1:-1]:
                    {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
                    for key in client.scan_iter(f"{prefix}:u:*")}
    finally:
        client.close()
    return histories, features


def brute_force_last_training_behaviours(frame: pd.DataFrame, history_length: int) -> dict:
    """Independent of the code under test: the global time split done by hand (first 80% of events
    in (time, log row) order train), then each user's last training behaviours, one row at a time."""
    rows = sorted(range(len(frame)), key=lambda i: (frame.timestamp[i], i))
    train_rows = set(rows[:round(0.8 * len(frame))])
    per_user: dict[str, list[tuple[float, int]]] = {}
    for i in range(len(frame)):
        if i in train_rows and frame.is_behaviour[i]:
            per_user.setdefault(frame.user_id[i], []).append((frame.timestamp[i], i))
    expected = {}
    for user, events in per_user.items():
        events.sort()
        expected[user] = [Behaviour(frame.item_id[i], frame.scenario[i], float(t))
                          for t, i in events[-history_length:]]
    return expected


def seed(url: str, options: DataOptions, history_length: int = HISTORY, **writer_options) -> dict:
    writer = RedisBulkWriter(url, history_length=history_length, **writer_options)
    try:
        return seed_histories(options, writer)
    finally:
        writer.close()


def test_seeded_histories_are_the_last_training_behaviours(redis_url):
    frame = load_synthetic(TINY).frame
    expected = brute_force_last_training_behaviours(frame, HISTORY)
    summary = seed(redis_url, DataOptions(synthetic=TINY, history_length=HISTORY))

    histories, features = stored_state(redis_url)
    assert histories == expected
    assert features == {}                                       # synthetic users have no features
    assert summary["users"] == TINY.users                   # users without training clicks: emptied
    assert summary["users_with_history"] == len(expected)
    assert summary["behaviours"] == sum(len(h) for h in expected.values())
    assert summary["seconds"] >= 0
    # Users with at least 5 training clicks get exactly 5; the test's expectations are not vacuous.
    assert all(len(h) <= HISTORY for h in histories.values())
    assert sum(len(h) == HISTORY for h in histories.values()) > 10


def test_nothing_from_the_valid_or_test_period_is_seeded(redis_url):
    frame = load_synthetic(TINY).frame
    seed(redis_url, DataOptions(synthetic=TINY, history_length=HISTORY))
    histories, _ = stored_state(redis_url)

    order = frame.sort_values("timestamp", kind="stable")
    first_held_out_time = order.timestamp.iloc[round(0.8 * len(frame))]
    seeded = [b for history in histories.values() for b in history]
    assert seeded and max(b.timestamp for b in seeded) <= first_held_out_time
    # Every seeded behaviour is a real click of its user in the training period.
    clicks = set(zip(frame.user_id, frame.item_id, frame.scenario, frame.timestamp.astype(float),
                     frame.is_behaviour))
    for user, history in histories.items():
        for b in history:
            assert (user, b.item_id, b.scenario, b.timestamp, True) in clicks
    # Users whose every click is held out are not written at all.
    clicked_in_train = {u for u, h in brute_force_last_training_behaviours(frame, HISTORY).items() if h}
    assert set(histories) == clicked_in_train


def test_user_features_ties_and_non_behaviours_from_a_canonical_log(redis_url, tmp_path):
    """A hand-made log: ties in time keep the log's row order, unclicked impressions are no
    behaviours, user-side features come from the user's last training row."""
    rows = [  # user, item, scenario, timestamp, label, tier (user side: constant per user)
        ("a", "i1", "home", 10, 1, "gold"), ("a", "i2", "feed", 20, 1, "gold"),
        ("a", "i3", "feed", 20, 1, "gold"),                            # tie: log order decides
        ("a", "i4", "home", 30, 0, "gold"),                            # not clicked: no behaviour
        ("b", "i2", "home", 15, 1, "free"), ("a", "i5", "feed", 25, 1, "gold"),
        ("b", "i9", "home", 90, 1, "free"),                            # 90 and 95 are held out
        ("a", "i6", "feed", 95, 1, "gold"),
        ("c", "i1", "home", 26, 0, "free"),                            # a user without behaviours
        ("b", "i3", "feed", 14, 1, "free"),
    ]
    log = pd.DataFrame(rows, columns=["user_id", "item_id", "scenario", "timestamp", "label", "tier"])
    path = tmp_path / "interactions.parquet"
    log.to_parquet(path)
    client = redis.Redis.from_url(redis_url)
    client.rpush(history_key("logs", "c"), b'["stale","home",1.0]')     # left by live traffic
    client.close()

    summary = seed(redis_url, DataOptions(dataset="logs", data_dir=str(path), history_length=3),
                   history_length=3, prefix="logs")
    histories, features = stored_state(redis_url, prefix="logs")
    assert histories["a"] == [Behaviour("i2", "feed", 20.0), Behaviour("i3", "feed", 20.0),
                              Behaviour("i5", "feed", 25.0)]
    assert histories["b"] == [Behaviour("i3", "feed", 14.0), Behaviour("i2", "home", 15.0)]
    assert set(histories) == {"a", "b"}                                 # c's stale history is gone
    assert features == {"a": {"tier": "gold"}, "b": {"tier": "free"}, "c": {"tier": "free"}}
    assert summary["users"] == 3 and summary["users_with_history"] == 2 and summary["behaviours"] == 5


def test_reseeding_replaces_histories_and_applies_the_ttl(redis_url):
    options = DataOptions(synthetic=TINY, history_length=HISTORY)
    client = redis.Redis.from_url(redis_url)
    try:
        client.rpush(history_key("sainet", "u0"), *[b'["stale","s0",1.0]'] * 3)
        seed(redis_url, options, ttl_seconds=3600)
        histories, _ = stored_state(redis_url)
        assert all(b.item_id != "stale" for b in histories.get("u0", []))
        key = history_key("sainet", next(iter(histories)))
        assert 0 < client.ttl(key) <= 3600
    finally:
        client.close()


def seed_command(argv: list[str]) -> int:
    """`sainet seed ...` through add_seed_parser on a throwaway parser, as sainet.cli will wire it."""
    parser = argparse.ArgumentParser(prog="sainet")
    commands = parser.add_subparsers(dest="command", required=True)
    add_seed_parser(commands, _add_data_arguments, _data_options)
    args = parser.parse_args(["seed", *argv])
    return args.handler(args)


TINY_ARGS = ["--synthetic-users", "50", "--synthetic-items", "30", "--synthetic-events", "60",
             "--history-length", str(HISTORY)]


def test_cli_prints_a_json_summary(redis_url, capsys):
    assert seed_command([*TINY_ARGS, "--redis-url", redis_url, "--prefix", "cli", "--ttl-seconds", "600"]) == 0
    summary = json.loads(capsys.readouterr().out)
    histories, _ = stored_state(redis_url, prefix="cli")
    assert summary["users"] == TINY.users and summary["users_with_history"] == len(histories) > 0
    assert summary["behaviours"] == sum(len(h) for h in histories.values())
    assert summary["history_length"] == HISTORY and summary["prefix"] == "cli"
    assert isinstance(summary["seconds"], float)
    assert histories == brute_force_last_training_behaviours(load_synthetic(TINY).frame, HISTORY)


def test_cli_takes_the_url_from_the_environment(redis_url, capsys, monkeypatch):
    monkeypatch.setenv("SAINET_REDIS_URL", redis_url)
    assert seed_command(TINY_ARGS) == 0
    assert json.loads(capsys.readouterr().out)["users_with_history"] == len(stored_state(redis_url)[0]) > 0


def test_cli_unreachable_redis_is_a_one_line_error(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.perf_counter()
    assert seed_command([*TINY_ARGS, "--redis-url", f"redis://:hunter2@127.0.0.1:{port}/0"]) == 2
    assert time.perf_counter() - started < 10
    captured = capsys.readouterr()
    assert captured.out == ""
    error = captured.err.strip()
    assert "\n" not in error and error.startswith("sainet: error: cannot seed Redis at")
    assert str(port) in error and "hunter2" not in error             # the password is not echoed


def test_cli_wired_into_sainet_main(redis_url, capsys):
    from sainet.cli import build_parser, main

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if "seed" not in commands.choices:
        pytest.skip("`sainet seed` is not wired into sainet.cli yet")
    assert main(["seed", *TINY_ARGS, "--redis-url", redis_url]) == 0
    assert json.loads(capsys.readouterr().out)["users"] > 0
    assert main(["seed", "--dataset", "movielens-1m", "--redis-url", redis_url]) == 2
    assert "--data-dir" in capsys.readouterr().err


@pytest.mark.real_data
def test_seeding_movielens_is_fast_and_has_user_features(redis_url, movielens_dir):
    started = time.perf_counter()
    summary = seed(redis_url, DataOptions(dataset="movielens-1m", data_dir=str(movielens_dir)),
                   history_length=50)
    assert time.perf_counter() - started < 60
    assert summary["users"] == 6040 == summary["users_with_features"]
    # Under the global time split 640 users rate only after the training period: no history, but
    # their profile is still seeded.
    assert summary["users_without_training_rows"] == 640
    histories, features = stored_state(redis_url)
    assert len(features) == 6040
    assert all(set(f) == {"gender", "occupation", "zip_prefix"} for f in features.values())
    assert {f["gender"] for f in features.values()} == {"F", "M"}
    assert len(histories) == summary["users_with_history"] == 5400
    assert all(0 < len(h) <= 50 for h in histories.values())
    assert summary["behaviours"] == sum(len(h) for h in histories.values())
    # Each user's stored profile is the one in the ratings file (user-side values are per user).
    frame = load_movielens(movielens_dir).frame
    profiles = frame.drop_duplicates("user_id").set_index("user_id")[["gender", "occupation", "zip_prefix"]]
    assert features == profiles.to_dict("index")
