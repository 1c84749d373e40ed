"""How much of the synthetic world a cheap learner can get above item popularity, with and without
the scenario tags of the history, as the divergence knob grows (docs/results/synthetic-world.md).

For each divergence it builds the study's examples and trains gradient-boosted trees on counts of
the history's clicks with the items' true topics known: `pooled` sees the clicks on the target's
topic and all clicks, over every scenario; `per-scenario` also sees both counts within the target's
scenario. Both also get the item's training CTR and the target scenario. Beside them: the exact
posterior given the history (attainable) and, from pooled counts only, the divergence-0 posterior.

    .venv/bin/python scripts/synthetic_headroom.py [--divergences 0,0.35,0.7,1] [world options]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from model.data.datasets import DataOptions, prepare_dataset
from model.data.synthetic import SyntheticConfig, attainable_click_prob, history_topic_counts, item_topic_of_index
from model.data.schema import FIRST_KNOWN_INDEX
from model.metrics import item_popularity


def count_features(config: SyntheticConfig, data, split: str, item_ctr: np.ndarray) -> dict[str, np.ndarray]:
    """The learners' inputs for one split: pooled ones, and those plus the target scenario's counts."""
    examples = data.splits[split]
    counts = history_topic_counts(config, data, split)
    rows = np.arange(len(examples))
    # an out-of-vocabulary target (none at these sizes) would count as topic 0
    topic = np.maximum(item_topic_of_index(config, data)[examples.target_item], 0)
    scenario = examples.target_scenario - FIRST_KNOWN_INDEX
    pooled = counts.sum(axis=1)
    common = [item_ctr[examples.target_item], scenario, pooled[rows, topic], pooled.sum(-1)]
    in_scenario = counts[rows, scenario]
    return {"pooled": np.column_stack(common),
            "per-scenario": np.column_stack([*common, in_scenario[rows, topic], in_scenario.sum(-1)])}


def headroom(config: SyntheticConfig, history_length: int) -> dict[str, float]:
    data = prepare_dataset(DataOptions(history_length=history_length, synthetic=config))
    train, test = data.splits["train"], data.splits["test"]
    item_ctr = item_popularity(train.target_item, train.label, np.arange(data.schema.vocab_sizes["item_id"]))
    features = {split: count_features(config, data, split, item_ctr) for split in ("train", "test")}
    aucs = {"popularity": roc_auc_score(test.label, item_ctr[test.target_item])}
    for name in ("pooled", "per-scenario"):
        trees = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, categorical_features=[1],
                                               early_stopping=True, random_state=0)
        trees.fit(features["train"][name], train.label)
        aucs[f"trees {name}"] = roc_auc_score(test.label, trees.predict_proba(features["test"][name])[:, 1])
    aucs["posterior from pooled clicks"] = roc_auc_score(
        test.label, attainable_click_prob(config, data, pooled_only=True))
    aucs["attainable"] = roc_auc_score(test.label, attainable_click_prob(config, data))
    aucs["oracle"] = roc_auc_score(test.label, test.oracle_prob)
    aucs["test examples"] = len(test)
    return aucs


def main() -> None:
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--divergences", default="0,0.35,0.7,1")
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--items", type=int, default=defaults.items)
    parser.add_argument("--events", type=int, default=defaults.events_per_user)
    parser.add_argument("--topics", type=int, default=defaults.topics)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--history-length", type=int, default=DataOptions.history_length)
    args = parser.parse_args()
    print(f"world: users {args.users}, items {args.items}, events per user {args.events}, topics {args.topics}, "
          f"seed {args.seed}, history length {args.history_length}; test AUC\n")
    columns = ["popularity", "trees pooled", "trees per-scenario", "posterior from pooled clicks",
               "attainable", "oracle"]
    print("| divergence | " + " | ".join(columns) + " | trees: per-scenario gain | attainable - popularity |"
          " test examples | seconds |")
    print("|---" * (len(columns) + 5) + "|")
    for divergence in (float(d) for d in args.divergences.split(",")):
        started = time.perf_counter()
        config = SyntheticConfig(users=args.users, items=args.items, events_per_user=args.events,
                                 topics=args.topics, divergence=divergence, seed=args.seed)
        aucs = headroom(config, args.history_length)
        print(f"| {divergence:g} | " + " | ".join(f"{aucs[c]:.4f}" for c in columns)
              + f" | {aucs['trees per-scenario'] - aucs['trees pooled']:+.4f}"
              f" | {aucs['attainable'] - aucs['popularity']:+.4f} | {aucs['test examples']}"
              f" | {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
