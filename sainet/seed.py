"""`sainet seed`: bulk-load the Redis feature store with the state the training data implies.

With `SAINET_REDIS_CLUSTER=true` (the service's setting) the URL names any node of a Redis Cluster
and the cluster writer is used (`RedisClusterBulkWriter`: one MULTI/EXEC per user on its slot).

Every user gets the history they had at the end of the training data: their most recent
`history_length` behaviours whose example is in the training split, oldest first, in exactly the
order the training examples use (user, time, the log's own row order), as raw ids. Users also get
their user-side feature values, taken from their last training row (or, for a user whose events
all fall after the training period, from their first row: a profile, not a behaviour). Valid/test
events never enter histories, so a freshly seeded store holds what the model saw at the end of
training.

The log and the split come from the project's own pieces (`DATASETS[...].load`, `sort_log`,
`assign_splits`), so the seeded state cannot drift from the training data. Heavy imports are lazy:
registering the subcommand costs nothing to the other commands.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Callable, NamedTuple
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from model.data.datasets import DataOptions
    from service.store import Behaviour, RedisBulkWriter

REDIS_URL_ENV = "SAINET_REDIS_URL"


def default_redis_url(settings) -> str:
    """The service's Redis ($SAINET_REDIS_URL), else the embedded one `sainet serve` starts without a URL."""
    return settings.redis_url or f"redis://127.0.0.1:{settings.embedded_redis_port}/0"


def _run_ends(codes):
    """For an array whose equal values are contiguous: mask of the last element of each run."""
    import numpy as np

    return np.r_[codes[1:] != codes[:-1], True] if len(codes) else np.zeros(0, dtype=bool)


class TrainingState(NamedTuple):
    histories: dict[str, list[Behaviour]]          # raw user id -> behaviours, oldest first (or [])
    user_features: dict[str, dict[str, str]]       # raw user id -> user-side feature -> raw value
    users_in_training: int                         # users with at least one training row


def training_state(options: DataOptions, history_length: int) -> TrainingState:
    """Every user's state at the end of the training data, keyed by raw user id.

    histories: each user's last `history_length` training behaviours, oldest first ([] for a user
    without one). user_features: user-side feature name -> raw value from the user's last
    training row (from their first row if they have no training row); empty when the log has no
    user-side feature.
    """
    import numpy as np

    from model.data.datasets import load_log
    from model.data.examples import assign_splits, sort_log
    from service.store import Behaviour

    if history_length < 1:
        raise ValueError("history length must be at least 1")
    log = load_log(options)
    frame, user_codes = sort_log(log.frame)
    split = assign_splits(frame, options.resolved_split(), options.split_seed)
    in_train = split == "train"
    user_ids = frame["user_id"].to_numpy(dtype=object)

    # Training behaviours in (user, time, log order); keep the last `history_length` per user.
    rows = np.flatnonzero(in_train & frame["is_behaviour"].to_numpy(dtype=bool))
    run_ends = _run_ends(user_codes[rows])
    run_of_row = np.cumsum(run_ends) - run_ends                  # 0-based run (user) number per row
    from_end = np.flatnonzero(run_ends)[run_of_row] - np.arange(len(rows))   # 0 = the user's last
    kept = rows[from_end < history_length]

    behaviours = list(map(Behaviour, frame["item_id"].to_numpy(dtype=object)[kept],
                          frame["scenario"].to_numpy(dtype=object)[kept],
                          frame["timestamp"].to_numpy(dtype=np.float64)[kept].tolist()))
    ends = np.flatnonzero(_run_ends(user_codes[kept])) + 1
    starts = np.r_[0, ends[:-1]] if len(ends) else ends
    # Every user of the log is written, those without a training behaviour with an empty history,
    # so that re-seeding also clears what an earlier seed or live traffic left for them.
    first_row = np.flatnonzero(np.r_[True, user_codes[1:] != user_codes[:-1]]) if len(frame) else kept
    histories: dict[str, list[Behaviour]] = {user: [] for user in user_ids[first_row].tolist()}
    histories.update((user, behaviours[start:end]) for user, start, end
                     in zip(user_ids[kept][starts].tolist(), starts.tolist(), ends.tolist()))

    user_features: dict[str, dict[str, str]] = {}
    names = [f.name for f in log.features if f.side == "user"]
    if names:
        # Sorted by user code (0..U-1), so user k's rows start at first_row[k]. A user's values come
        # from their last training row; a user with no training row at all (all their events fall in
        # the valid/test period) still gets their profile, from their first row: user-side values
        # are static attributes, not behaviour, so this leaks nothing about held-out events.
        train_rows = np.flatnonzero(in_train)
        last_train_rows = train_rows[_run_ends(user_codes[train_rows])]
        chosen = first_row.copy()
        chosen[user_codes[last_train_rows]] = last_train_rows
        columns = [frame[name].to_numpy(dtype=object)[chosen].tolist() for name in names]
        user_features = {user: dict(zip(names, values))
                         for user, *values in zip(user_ids[chosen].tolist(), *columns)}
    users_in_training = int(_run_ends(user_codes[in_train]).sum())
    return TrainingState(histories, user_features, users_in_training)


def seed_histories(options: DataOptions, writer: RedisBulkWriter) -> dict:
    """Replaces every user's history and user features in the store with their end-of-training
    state (see the module docstring); returns a summary."""
    started = time.perf_counter()
    histories, user_features, users_in_training = training_state(options, writer.history_length)
    users = writer.write(histories, user_features)
    return {
        "dataset": options.dataset,
        "split": options.resolved_split(),
        "history_length": writer.history_length,
        "users": users,
        "users_with_history": sum(1 for h in histories.values() if h),
        "users_with_features": len(user_features),
        "users_without_training_rows": len(histories) - users_in_training,
        "behaviours": sum(len(h) for h in histories.values()),
        "seconds": round(time.perf_counter() - started, 3),
    }


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        return urlunsplit(parts._replace(netloc=user + netloc))
    except ValueError:
        return "<unparsable URL>"


def cmd_seed(args: argparse.Namespace, data_options: Callable[[argparse.Namespace], DataOptions]) -> int:
    import redis

    from model.data.datasets import check_data_options
    from service.settings import Settings
    from service.store import RedisBulkWriter, RedisClusterBulkWriter, check_prefix

    settings = Settings()     # the service's own settings: the same Redis (or cluster), key prefix and TTL
    url = args.redis_url or default_redis_url(settings)
    if args.history_length < 1:
        raise ValueError("history length must be at least 1")
    ttl_seconds = args.ttl_seconds if args.ttl_seconds is not None else settings.history_ttl_seconds
    if ttl_seconds is not None and ttl_seconds < 1:
        raise ValueError("--ttl-seconds must be at least 1")
    prefix = args.prefix or settings.redis_prefix
    options = data_options(args)
    check_data_options(options)                     # bad options are reported before Redis is tried
    try:
        check_prefix(prefix)
    except ValueError as error:
        raise ValueError(f"bad --prefix: {error}") from None
    writer_class = RedisClusterBulkWriter if settings.redis_cluster else RedisBulkWriter
    try:
        writer = writer_class(url, history_length=args.history_length, ttl_seconds=ttl_seconds, prefix=prefix)
    except ValueError as error:                     # a malformed URL
        raise ValueError(f"bad --redis-url {redact_url(url)!r}: {error}") from None
    except redis.RedisError as error:               # the cluster client reads the slot map at once
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"sainet: error: cannot seed the Redis Cluster at {redact_url(url)}: {message}", file=sys.stderr)
        return 2
    try:
        writer.client.ping()                        # fail before loading a large dataset
        summary = seed_histories(options, writer)
    except redis.RedisError as error:               # redis-py wraps socket errors in these
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"sainet: error: cannot seed Redis at {redact_url(url)}: {message}", file=sys.stderr)
        return 2
    finally:
        writer.close()
    summary["redis_url"] = redact_url(url)
    summary["prefix"] = prefix
    summary["cluster"] = settings.redis_cluster
    print(json.dumps(summary, indent=2))
    return 0


def add_seed_parser(commands, add_data_arguments: Callable[[argparse.ArgumentParser], None],
                    data_options: Callable[[argparse.Namespace], DataOptions]) -> argparse.ArgumentParser:
    """Registers `sainet seed` on an argparse subparsers object. `add_data_arguments` adds the
    dataset options (--dataset, --data-dir, --history-length, --split, ...) and `data_options`
    turns parsed arguments into `DataOptions`."""
    seed = commands.add_parser(
        "seed", help="load every user's end-of-training history and user features into Redis",
        description="Replaces each user's history in the feature store with their last "
                    "--history-length training behaviours (and their user-side features).")
    add_data_arguments(seed)
    store = seed.add_argument_group("feature store")
    store.add_argument("--redis-url", default=None,
                       help=f"redis:// or rediss:// URL (default: ${REDIS_URL_ENV}, else the embedded Redis of "
                            "`sainet serve` on 127.0.0.1:$SAINET_EMBEDDED_REDIS_PORT, 6399)")
    store.add_argument("--ttl-seconds", type=int, default=None,
                       help="expire seeded histories after this long (default: $SAINET_HISTORY_TTL_SECONDS, "
                            "else never)")
    store.add_argument("--prefix", default=None,
                       help="key prefix (default: the service's, $SAINET_REDIS_PREFIX, else sainet)")
    seed.set_defaults(handler=lambda args: cmd_seed(args, data_options))
    return seed
