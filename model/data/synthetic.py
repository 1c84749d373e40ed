"""A multi-scenario world with a known ground truth.

Every item belongs to one of `topics` topics. Each user has a base taste per topic and one taste
per scenario, `taste[u, s] = sqrt(1 - divergence) * base[u] + sqrt(divergence) * specific[u, s]`,
so `divergence` in [0, 1] sets how far a user's tastes differ across scenarios. Over time the
user visits scenarios from a personal mix, is shown a random item, and clicks with the known
probability `sigmoid(sharpness * taste[u, s, topic[i]] + item_bias[i] + scenario_bias[s] + offset)`.
Clicks are behaviours, so a user's interest in scenario s is only visible through the history,
and only through the behaviours tagged with s once divergence is high: exactly what SAINet's
scenario tags are for. The true probability is kept per example (`oracle_prob`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from model.data.logs import InteractionLog, validate_log


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 4000
    items: int = 500
    scenarios: int = 3
    events_per_user: int = 60
    divergence: float = 0.7
    topics: int = 8
    sharpness: float = 2.5
    offset: float = -1.0
    seed: int = 7


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _item_world(config: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Every item's topic and bias: drawn first, from the master stream, shared by every user chunk."""
    if not 0.0 <= config.divergence <= 1.0:
        raise ValueError("divergence must lie in [0, 1]")
    item_topic = rng.integers(0, config.topics, size=config.items)
    item_bias = rng.normal(0.0, 0.5, size=config.items)
    return item_topic, item_bias


def _user_events(config: SyntheticConfig, rng: np.random.Generator, item_topic: np.ndarray,
                 item_bias: np.ndarray, first_user: int, users: int) -> pd.DataFrame:
    """The events of users first_user .. first_user + users - 1, drawn from `rng`."""
    u, s, t, k = users, config.scenarios, config.events_per_user, config.topics
    scenario_bias = np.linspace(-0.4, 0.4, s)
    base = rng.normal(size=(u, k))
    specific = rng.normal(size=(u, s, k))
    taste = np.sqrt(1 - config.divergence) * base[:, None, :] + np.sqrt(config.divergence) * specific

    scenario_mix = rng.dirichlet(np.ones(s), size=u)
    scenario = (rng.random((u, t, 1)) > np.cumsum(scenario_mix, axis=1)[:, None, :]).sum(axis=2)
    scenario = np.minimum(scenario, s - 1)
    item = rng.integers(0, config.items, size=(u, t))
    user_index = np.repeat(np.arange(u), t).reshape(u, t)
    affinity = taste[user_index, scenario, item_topic[item]]
    prob = _sigmoid(config.sharpness * affinity + item_bias[item] + scenario_bias[scenario] + config.offset)
    label = rng.random((u, t)) < prob
    # Users live on one shared clock so that a global time split is meaningful.
    timestamp = np.cumsum(rng.exponential(3600.0, size=(u, t)), axis=1).round() + 1_600_000_000

    return pd.DataFrame({
        "user_id": np.char.add("u", (user_index.reshape(-1) + first_user).astype(str)),
        "item_id": np.char.add("i", item.reshape(-1).astype(str)),
        "scenario": np.char.add("s", scenario.reshape(-1).astype(str)),
        "timestamp": timestamp.reshape(-1).astype(np.int64),
        "label": label.reshape(-1).astype(np.int8),
        "oracle_prob": prob.reshape(-1).astype(np.float32),
    })


def generate_synthetic(config: SyntheticConfig) -> pd.DataFrame:
    rng = np.random.default_rng(config.seed)
    item_topic, item_bias = _item_world(config, rng)
    return _user_events(config, rng, item_topic, item_bias, 0, config.users)


def generate_synthetic_chunks(config: SyntheticConfig, chunk_users: int = 20_000) -> Iterator[pd.DataFrame]:
    """The same world, `chunk_users` users at a time, so that memory stays bounded at any size.

    Chunk 0 continues the master stream, so a log of at most `chunk_users` users is exactly
    `generate_synthetic(config)`; chunk c > 0 draws its users from the stream seeded (seed, c).
    """
    if chunk_users < 1:
        raise ValueError("chunk_users must be at least 1")
    rng = np.random.default_rng(config.seed)
    item_topic, item_bias = _item_world(config, rng)
    for chunk, first_user in enumerate(range(0, config.users, chunk_users)):
        chunk_rng = rng if chunk == 0 else np.random.default_rng([config.seed, chunk])
        yield _user_events(config, chunk_rng, item_topic, item_bias, first_user,
                           min(chunk_users, config.users - first_user))


def write_synthetic_log(config: SyntheticConfig, out_dir: Path, chunk_users: int = 20_000) -> list[Path]:
    """Writes the canonical log as parquet shards `out_dir/part-NNNNN.parquet`, one per user chunk."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("part-*.parquet"):
        stale.unlink()
    paths = []
    for chunk, frame in enumerate(generate_synthetic_chunks(config, chunk_users)):
        path = out_dir / f"part-{chunk:05d}.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=1 << 20)
        paths.append(path)
    return paths


def load_synthetic(synthetic: SyntheticConfig | None = None, **_) -> InteractionLog:
    config = synthetic or SyntheticConfig()
    frame = generate_synthetic(config)
    return validate_log(frame, features=[], scenario_order=[f"s{i}" for i in range(config.scenarios)])
