"""A multi-scenario world with a known ground truth and a known best attainable predictor.

Items: each belongs to one of `topics` topics (in equal shares) and has an appeal in (0, 1]; every
topic's appeals sum to the same total. Users: a base taste `phi[u]`, a distribution over topics
drawn from Dirichlet(taste_concentration); in each scenario the user's taste is the base taste with
probability 1 - `divergence` and otherwise a taste of its own, drawn from the same prior. So at
divergence 0 a user has one taste everywhere and at 1 an unrelated one per scenario.

Events: the user visits a scenario from a personal mix, is shown a uniformly random item and
clicks with the known probability (kept per event as `oracle_prob`)

    p = peak_click_prob * scenario_factor[s] * appeal[i] * taste[u, s, topic[i]]

Clicks are the behaviours that later histories hold, so a model learns a user's taste only from
the topics of their past clicks, and, once divergence is high, only from the clicks tagged with the
target's scenario: exactly what SAINet's scenario tags are for.

The world is built so that the best predictor given what a model sees has a closed form
(`attainable_click_prob`). The click rate is linear in the taste and, as the topics' appeal totals
are equal, a user's chance of clicking on a random item does not depend on their taste: an unseen
non-click says nothing about it. The likelihood of a history is then a product of `taste[s, k]`
over its clicks, conjugate to the Dirichlet prior, and the per-scenario switch (base or own taste)
has 2**scenarios configurations, summed exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import gammaln

from model.data.examples import PreparedData
from model.data.logs import InteractionLog, validate_log
from model.data.schema import FIRST_KNOWN_INDEX


@dataclass(frozen=True)
class SyntheticConfig:
    # the synthetic sweep's world (docs/results/synthetic-world.md): about 12 clicks per history at test time
    users: int = 3000
    items: int = 200
    scenarios: int = 3
    events_per_user: int = 100
    # probability that a user's taste in a scenario is its own rather than the user's base taste
    divergence: float = 0.7
    topics: int = 4
    # Dirichlet parameter of every taste: below 1 a user's clicks gather on few topics
    taste_concentration: float = 0.5
    # click probability of an appeal-1 item in the clickiest scenario, for a user whose whole taste is
    # its topic
    peak_click_prob: float = 1.0
    seed: int = 7


@dataclass(frozen=True)
class ItemWorld:
    topic: np.ndarray            # [items] int, topic of item i (raw id f"i{i}")
    appeal: np.ndarray           # [items] float in (0, 1]
    scenario_factor: np.ndarray  # [scenarios] float in (0, 1], scenario s is raw f"s{s}"


def item_world(config: SyntheticConfig) -> ItemWorld:
    """The items and scenarios of the world: drawn first, from the master stream, shared by every
    user chunk."""
    return _item_world(config, np.random.default_rng(config.seed))


def _item_world(config: SyntheticConfig, rng: np.random.Generator) -> ItemWorld:
    if not 0.0 <= config.divergence <= 1.0:
        raise ValueError("divergence must lie in [0, 1]")
    if config.taste_concentration <= 0:
        raise ValueError("taste_concentration must be positive")
    if not 0.0 < config.peak_click_prob <= 1.0:
        raise ValueError("peak_click_prob must lie in (0, 1]")
    if config.items < config.topics:
        raise ValueError("every topic needs an item: items must be at least topics")
    topic = rng.permutation(np.arange(config.items) % config.topics)
    appeal = rng.uniform(0.3, 1.0, size=config.items)
    # Equal appeal totals per topic make a user's overall click rate independent of their taste.
    appeal /= np.bincount(topic, weights=appeal, minlength=config.topics)[topic]
    appeal /= appeal.max()
    return ItemWorld(topic=topic, appeal=appeal, scenario_factor=np.linspace(0.6, 1.0, config.scenarios))


def _user_events(config: SyntheticConfig, rng: np.random.Generator, world: ItemWorld,
                 first_user: int, users: int) -> pd.DataFrame:
    """The events of users first_user .. first_user + users - 1, drawn from `rng`."""
    u, s, t, k = users, config.scenarios, config.events_per_user, config.topics
    prior = np.full(k, config.taste_concentration)
    base = rng.dirichlet(prior, size=u)
    own = rng.dirichlet(prior, size=(u, s))
    has_own_taste = rng.random((u, s)) < config.divergence
    taste = np.where(has_own_taste[:, :, None], own, base[:, None, :])

    scenario_mix = rng.dirichlet(np.ones(s), size=u)
    scenario = (rng.random((u, t, 1)) > np.cumsum(scenario_mix, axis=1)[:, None, :]).sum(axis=2)
    scenario = np.minimum(scenario, s - 1)
    item = rng.integers(0, config.items, size=(u, t))
    user_index = np.repeat(np.arange(u), t).reshape(u, t)
    prob = (config.peak_click_prob * world.scenario_factor[scenario] * world.appeal[item]
            * taste[user_index, scenario, world.topic[item]])
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
    world = _item_world(config, rng)
    return _user_events(config, rng, world, 0, config.users)


def generate_synthetic_chunks(config: SyntheticConfig, chunk_users: int = 20_000) -> Iterator[pd.DataFrame]:
    """The same world, `chunk_users` users at a time, so that memory stays bounded at any size.

    Chunk 0 continues the master stream, so a log of at most `chunk_users` users is exactly
    `generate_synthetic(config)`; chunk c > 0 draws its users from the stream seeded (seed, c).
    """
    if chunk_users < 1:
        raise ValueError("chunk_users must be at least 1")
    rng = np.random.default_rng(config.seed)
    world = _item_world(config, rng)
    for chunk, first_user in enumerate(range(0, config.users, chunk_users)):
        chunk_rng = rng if chunk == 0 else np.random.default_rng([config.seed, chunk])
        yield _user_events(config, chunk_rng, world, first_user, min(chunk_users, config.users - first_user))


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


def _number_of_index(vocabulary_values: list[str], prefix: str, limit: int) -> np.ndarray:
    """For each encoded index (padding and OOV included): n for the raw value f"{prefix}{n}" with
    0 <= n < limit, else -1."""
    raw = pd.Series(list(vocabulary_values), dtype=object).astype(str)
    digits = raw.str.removeprefix(prefix)
    ok = raw.str.startswith(prefix) & digits.str.fullmatch(r"\d+")
    number = np.where(ok, pd.to_numeric(digits.where(ok, "-1")), -1)
    return np.r_[np.full(FIRST_KNOWN_INDEX, -1), np.where(number < limit, number, -1)].astype(np.int64)


def item_topic_of_index(config: SyntheticConfig, data: PreparedData) -> np.ndarray:
    """The topic of each encoded item index of `data` (-1 for padding and out-of-vocabulary)."""
    item = _number_of_index(data.vocabularies["item_id"].values, "i", config.items)
    return np.where(item >= 0, item_world(config).topic[item], -1)


def history_topic_counts(config: SyntheticConfig, data: PreparedData, split: str = "test") -> np.ndarray:
    """[n, scenarios, topics]: the clicks of each example's history per (scenario, topic).

    Reads the history exactly as a model receives it (the encoded split), so it holds the same
    behaviours: only earlier ones, truncated alike. Padding and out-of-vocabulary behaviours, whose
    topic a model cannot know, count nowhere.
    """
    examples = data.splits[split]
    topic_of_index = item_topic_of_index(config, data)
    scenario_of_index = _number_of_index(data.vocabularies["scenario"].values, "s", config.scenarios)
    topic, scenario = topic_of_index[examples.hist_items], scenario_of_index[examples.hist_scenarios]
    known = (topic >= 0) & (scenario >= 0)
    n, s, k = len(examples), config.scenarios, config.topics
    cell = (np.arange(n)[:, None] * s + scenario) * k + topic
    return np.bincount(cell[known], minlength=n * s * k).reshape(n, s, k).astype(np.float64)


def _log_dirichlet_multinomial(counts: np.ndarray, concentration: float) -> np.ndarray:
    """log P(an ordered sequence of topics with these per-topic counts | a Dirichlet(concentration)
    taste), the taste integrated out."""
    k = counts.shape[-1]
    return (gammaln(k * concentration) - gammaln(k * concentration + counts.sum(-1))
            + (gammaln(concentration + counts) - gammaln(concentration)).sum(-1))


def posterior_topic_taste(config: SyntheticConfig, counts: np.ndarray, target_scenario: np.ndarray,
                          pooled_only: bool = False) -> np.ndarray:
    """[n, topics]: E[taste[u, target scenario, k] | the history's clicks], exactly.

    `counts` [n, scenarios, topics] from `history_topic_counts`; `target_scenario` [n] scenario
    numbers. Sums over which scenarios use the user's base taste (prior weight 1 - divergence each):
    given that configuration, the base scenarios' clicks pool into one Dirichlet posterior and each
    own-taste scenario has its own. `pooled_only` treats every scenario as the base (the divergence-0
    posterior), the best a model can do that ignores the scenario tags when divergence is 0.
    """
    alpha, k, d = config.taste_concentration, config.topics, config.divergence
    rows = np.arange(len(counts))
    if pooled_only:
        pooled = counts.sum(axis=1)
        return (alpha + pooled) / (k * alpha + pooled.sum(-1, keepdims=True))
    log_weights, means = [], []
    for own in itertools.product((False, True), repeat=config.scenarios):
        own = np.array(own)
        prior = np.prod(np.where(own, d, 1 - d))
        if prior == 0:
            continue
        pooled = counts[:, ~own].sum(axis=1)
        log_weight = np.log(prior) + _log_dirichlet_multinomial(pooled, alpha)
        log_weight += _log_dirichlet_multinomial(counts[:, own], alpha).sum(-1)
        target_counts = np.where(own[target_scenario][:, None], counts[rows, target_scenario], pooled)
        log_weights.append(log_weight)
        means.append((alpha + target_counts) / (k * alpha + target_counts.sum(-1, keepdims=True)))
    log_weights = np.stack(log_weights)
    weights = np.exp(log_weights - log_weights.max(axis=0))
    weights /= weights.sum(axis=0)
    return np.einsum("cn,cnk->nk", weights, np.stack(means))


def attainable_click_prob(config: SyntheticConfig, data: PreparedData, split: str = "test",
                          pooled_only: bool = False) -> np.ndarray:
    """[n]: P(click | the example's history, target item, target scenario) for every example of one
    split of this world's prepared data, under the true generative model with its items, scenarios
    and priors known: the Bayes-optimal score given what a model sees.

    It reads only the example's encoded history (the behaviours strictly before it, truncated as the
    model's), so nothing later can enter. A target item outside the vocabulary (topic and appeal
    unknown to a model) gets the average item's chance.
    """
    world = item_world(config)
    examples = data.splits[split]
    counts = history_topic_counts(config, data, split)
    scenario = _number_of_index(data.vocabularies["scenario"].values, "s", config.scenarios)[
        examples.target_scenario]
    if (scenario < 0).any():
        raise ValueError("every target scenario must be one of the world's")
    taste = posterior_topic_taste(config, counts, scenario, pooled_only)
    item = _number_of_index(data.vocabularies["item_id"].values, "i", config.items)[examples.target_item]
    known = item >= 0
    item = np.where(known, item, 0)
    # an unknown item's topic is uniform; with equal appeal totals E[appeal * taste[topic]] = mean appeal / topics
    item_term = np.where(known, world.appeal[item] * taste[np.arange(len(item)), world.topic[item]],
                         world.appeal.mean() / config.topics)
    return config.peak_click_prob * world.scenario_factor[scenario] * item_term
