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

from dataclasses import dataclass

import numpy as np
import pandas as pd

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


def generate_synthetic(config: SyntheticConfig) -> pd.DataFrame:
    if not 0.0 <= config.divergence <= 1.0:
        raise ValueError("divergence must lie in [0, 1]")
    rng = np.random.default_rng(config.seed)
    u, s, t, k = config.users, config.scenarios, config.events_per_user, config.topics
    item_topic = rng.integers(0, k, size=config.items)
    item_bias = rng.normal(0.0, 0.5, size=config.items)
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
        "user_id": np.char.add("u", user_index.reshape(-1).astype(str)),
        "item_id": np.char.add("i", item.reshape(-1).astype(str)),
        "scenario": np.char.add("s", scenario.reshape(-1).astype(str)),
        "timestamp": timestamp.reshape(-1).astype(np.int64),
        "label": label.reshape(-1).astype(np.int8),
        "oracle_prob": prob.reshape(-1).astype(np.float32),
    })


def load_synthetic(synthetic: SyntheticConfig | None = None, **_) -> InteractionLog:
    config = synthetic or SyntheticConfig()
    frame = generate_synthetic(config)
    return validate_log(frame, features=[], scenario_order=[f"s{i}" for i in range(config.scenarios)])
