"""Adapter for the C2DSR cross-domain sequential format (e.g. Amazon Food-Kitchen, Movie-Book).

Folder layout: `Alist.txt`, `Blist.txt` (`<orig id>\\t<ASIN>\\t<index>`), `userlist.txt`
(`<reviewer>\\t<index>`) and sequence files `*data_new.txt`, one user per line:
`<user index>\\t<sequence id>\\t<item>|<unix ts>|<date>\\t...`. Item numbers below len(Alist) are
domain A, the rest domain B (number - len(Alist)). Every review is a positive; negatives are
sampled per positive from the target scenario's items that the user never touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from model.data.logs import InteractionLog, validate_log

SEQUENCE_FILES = ("traindata_new.txt", "validdata_new.txt", "testdata_new.txt")


def _read_item_list(path: Path) -> np.ndarray:
    table = pd.read_csv(path, sep="\t", header=None, names=["orig", "asin", "index"],
                        dtype={"asin": str}, quoting=3)
    return table.sort_values("index")["asin"].to_numpy(dtype=object)


def scenario_names(data_dir: Path) -> tuple[str, str]:
    """"amazon-food-kitchen" or "Food-Kitchen" -> ("food", "kitchen"); otherwise ("A", "B")."""
    parts = data_dir.resolve().name.lower().split("-")
    return (parts[-2], parts[-1]) if len(parts) >= 2 and parts[-2] != parts[-1] else ("A", "B")


def read_sequences(data_dir: Path) -> pd.DataFrame:
    """All users' events in file order: user index, global item number, timestamp."""
    files = [data_dir / name for name in SEQUENCE_FILES if (data_dir / name).exists()]
    if not files:
        raise FileNotFoundError(f"{data_dir} holds none of {SEQUENCE_FILES}")
    lines = pd.concat([pd.read_csv(f, sep="\x01", header=None, names=["line"], dtype=str,
                                   quoting=3)["line"] for f in files], ignore_index=True)
    fields = lines.str.rstrip("\t").str.split("\t")
    events = pd.DataFrame({"user": fields.str[0].astype(np.int64), "event": fields.str[2:]})
    events = events.explode("event", ignore_index=True)
    events = events[events["event"].notna() & (events["event"] != "")]
    parts = events["event"].str.split("|")
    return pd.DataFrame({"user": events["user"].to_numpy(),
                         "item": parts.str[0].astype(np.int64).to_numpy(),
                         "timestamp": parts.str[1].astype(np.int64).to_numpy()})


def sample_negatives(user: np.ndarray, pool: np.ndarray, touched: np.ndarray, per_positive: int,
                     rng: np.random.Generator) -> np.ndarray:
    """[len(user), per_positive] items from `pool` that the user never touched.

    `touched` holds sorted keys user * key_base + item of every (user, item) the user interacted with.
    """
    key_base = np.int64(1 << 32)
    draws = pool[rng.integers(0, len(pool), size=(len(user), per_positive))]
    while True:
        clash = np.isin(user[:, None].astype(np.int64) * key_base + draws, touched)
        if not clash.any():
            return draws
        draws[clash] = pool[rng.integers(0, len(pool), size=int(clash.sum()))]


def load_amazon_cdsr(data_dir: Path, negatives_per_positive: int = 4, negative_seed: int = 2024,
                     **_) -> InteractionLog:
    data_dir = Path(data_dir)
    items_a = _read_item_list(data_dir / "Alist.txt")
    items_b = _read_item_list(data_dir / "Blist.txt")
    users = pd.read_csv(data_dir / "userlist.txt", sep="\t", header=None, names=["reviewer", "index"],
                        dtype={"reviewer": str}, quoting=3).sort_values("index")
    reviewer = users["reviewer"].to_numpy(dtype=object)
    name_a, name_b = scenario_names(data_dir)
    asin = np.concatenate([items_a, items_b])
    in_b = np.r_[np.zeros(len(items_a), bool), np.ones(len(items_b), bool)]

    events = read_sequences(data_dir)
    # Stable per-user time order; the file order breaks same-day ties.
    events = events.iloc[np.lexsort((np.arange(len(events)), events["timestamp"].to_numpy(),
                                     events["user"].to_numpy()))].reset_index(drop=True)
    user, item = events["user"].to_numpy(), events["item"].to_numpy()
    if item.max() >= len(asin):
        raise ValueError(f"item number {item.max()} exceeds the {len(asin)} items of Alist+Blist")

    # Leave-last-out per user on events: last -> test, second last -> valid.
    rank_from_end = events.groupby("user", sort=False).cumcount(ascending=False).to_numpy()
    split = np.where(rank_from_end == 0, "test", np.where(rank_from_end == 1, "valid", "train"))

    rng = np.random.default_rng(negative_seed)
    key_base = np.int64(1 << 32)
    touched = np.unique(user.astype(np.int64) * key_base + item)
    k = negatives_per_positive
    negatives = np.empty((len(events), k), dtype=np.int64)
    for scenario_is_b, pool in ((False, np.flatnonzero(~in_b)), (True, np.flatnonzero(in_b))):
        rows = np.flatnonzero(in_b[item] == scenario_is_b)
        negatives[rows] = sample_negatives(user[rows], pool, touched, k, rng)

    # Each positive is preceded in log order by its negatives (same time), so all of them see
    # exactly the same history: the behaviours strictly before the positive.
    group = np.repeat(np.arange(len(events)), k + 1)
    slot = np.tile(np.arange(k + 1), len(events))
    is_positive = slot == k
    all_items = np.where(is_positive, item[group], negatives[group, np.minimum(slot, k - 1)])
    frame = pd.DataFrame({
        "user_id": reviewer[user[group]],
        "item_id": asin[all_items],
        "scenario": np.where(in_b[item[group]], name_b, name_a),
        "timestamp": events["timestamp"].to_numpy()[group],
        "label": is_positive.astype(np.int8),
        "is_behaviour": is_positive,
        "split": split[group],
    })
    return validate_log(frame, features=[], scenario_order=[name_a, name_b])
