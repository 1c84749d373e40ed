"""Test metrics: AUC overall and per scenario (scikit-learn), logloss, and the oracle AUC."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


def safe_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """AUC, or None when only one class is present (AUC is undefined there)."""
    if len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


def per_scenario_auc(labels, scores, scenario_index, scenario_names: list[str],
                     first_index: int) -> dict[str, float | None]:
    """AUC within each scenario; `scenario_names[i]` has index `first_index + i`."""
    return {name: safe_auc(labels[scenario_index == first_index + i], scores[scenario_index == first_index + i])
            for i, name in enumerate(scenario_names)
            if (scenario_index == first_index + i).any()}


def per_scenario_logloss(labels, probs, scenario_index, scenario_names: list[str],
                         first_index: int) -> dict[str, float]:
    return {name: float(log_loss(labels[scenario_index == first_index + i], probs[scenario_index == first_index + i],
                                 labels=[0, 1]))
            for i, name in enumerate(scenario_names) if (scenario_index == first_index + i).any()}


def ctr_metrics(labels: np.ndarray, probs: np.ndarray, scenario_index: np.ndarray,
                scenario_names: list[str], first_index: int, oracle: np.ndarray | None = None) -> dict:
    probs = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    metrics = {
        "auc": {"overall": safe_auc(labels, probs),
                "per_scenario": per_scenario_auc(labels, probs, scenario_index, scenario_names, first_index)},
        "logloss": float(log_loss(labels, probs, labels=[0, 1])),
        "logloss_per_scenario": per_scenario_logloss(labels, probs, scenario_index, scenario_names, first_index),
        "examples": int(len(labels)),
        "positive_rate": float(labels.mean()) if len(labels) else None,
    }
    if oracle is not None:
        metrics["oracle_auc"] = safe_auc(labels, oracle)
        metrics["oracle_auc_per_scenario"] = per_scenario_auc(labels, oracle, scenario_index,
                                                              scenario_names, first_index)
    return metrics


def item_popularity(train_items: np.ndarray, train_labels: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Each item's click rate on the training split, add-one smoothed (unseen items get 0.5): the
    reference a CTR model must beat to have learned anything about users."""
    size = int(max(train_items.max(initial=0), items.max(initial=0))) + 1
    clicks = np.bincount(train_items, weights=train_labels, minlength=size)
    shows = np.bincount(train_items, minlength=size)
    return ((clicks + 1) / (shows + 2))[items]
