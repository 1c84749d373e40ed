"""Training with early stopping on validation AUC, and the run directory that export reads.

A run directory holds:
    checkpoint.pt          weights, model name and config, feature schema, data and train options
    schema.json, vocab/    the feature schema and vocabularies (also inside the checkpoint)
    item_features.parquet  raw item id -> raw item-side feature values (serving's lookup table)
    config.json            model, training and data options, as given
    metrics.json           test metrics (see `model.metrics.ctr_metrics`) plus timing and how training ended
    history.json, training_curve.png

The training regime converges by default: validation AUC is evaluated every `eval_every_steps`
optimizer steps and at the end of each epoch; training stops once `patience` evaluations in a row
bring no better validation AUC, or at the step budget (`epochs`, `max_steps`), and the weights of
the best evaluation are restored. At batch 512 on Amazon Food-Kitchen (about 1,300 steps an epoch)
validation AUC peaks within the first or second epoch, so the evaluations must come within an epoch.
A run that reaches its budget before early stopping has stopped it is flagged
`stopped_at_cap_improving`: its budget, not the validation AUC, decided where it stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from model.batch import examples_to_batch
from model.data.datasets import DataOptions, prepare_dataset
from model.data.examples import ExampleSet, PreparedData
from model.data.schema import FIRST_KNOWN_INDEX, FeatureSchema, Vocabulary
from model.data.synthetic import SyntheticConfig
from model.metrics import ctr_metrics, safe_auc
from model.models import build_model
from model.models.registry import training_outputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20                  # step budget in passes over the training split
    batch_size: int = 512
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 3                 # evaluations in a row without a better validation AUC before stopping
    seed: int = 42
    eval_batch_size: int = 8192
    threads: int | None = None        # torch intra-op threads; None keeps torch's default
    max_train_examples: int | None = None  # train on a seeded subsample (smoke runs, tests)
    progress: bool | None = None      # None: a progress bar only on a terminal
    eval_every_steps: int | None = 200  # validation AUC every this many steps (and at each epoch's end);
                                        # None or 0: at each epoch's end only
    max_steps: int | None = None      # step budget in optimizer steps (whichever of this and `epochs` comes first)


def set_determinism(seed: int, threads: int | None) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)


@torch.no_grad()
def predict(model: nn.Module, examples: ExampleSet, batch_size: int = 8192) -> np.ndarray:
    """Click probabilities [n] for the examples' own target items."""
    model.eval()
    probs = []
    for start in range(0, len(examples), batch_size):
        batch, _ = examples_to_batch(examples, slice(start, start + batch_size))
        probs.append(torch.sigmoid(model(batch))[:, 0].numpy())
    return np.concatenate(probs) if probs else np.zeros(0, dtype=np.float32)


def evaluate_examples(model: nn.Module, examples: ExampleSet, schema: FeatureSchema,
                      batch_size: int = 8192) -> dict:
    probs = predict(model, examples, batch_size)
    return ctr_metrics(examples.label, probs, examples.target_scenario, schema.scenarios,
                       FIRST_KNOWN_INDEX, examples.oracle_prob)


def train_model(data: PreparedData, model_name: str, model_overrides: dict, config: TrainConfig,
                out_dir: Path, data_options: DataOptions | None = None) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_determinism(config.seed, config.threads)
    rng = np.random.default_rng(config.seed)
    model = build_model(model_name, data.schema, **model_overrides)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    train = data.splits["train"]
    if config.max_train_examples and len(train) > config.max_train_examples:
        train = train.subset(np.sort(rng.choice(len(train), config.max_train_examples, replace=False)))

    history: dict[str, list] = {"step_loss": [], "epoch": [], "evals": []}
    best = {"auc": -np.inf, "state": None, "epoch": 0, "step": 0}
    stale, step, stop_reason = 0, 0, "cap"
    started = time.perf_counter()
    step_seconds, trained_examples = 0.0, 0
    valid = data.splits["valid"]

    def evaluate_now(epoch: int) -> bool:
        """Validation AUC at this step; True when early stopping says stop."""
        nonlocal stale
        valid_auc = safe_auc(valid.label, predict(model, valid, config.eval_batch_size))
        history["evals"].append({"step": step, "epoch": epoch, "valid_auc": valid_auc,
                                 "seconds": time.perf_counter() - started})
        log.info("step %d (epoch %d): valid AUC %s", step, epoch, valid_auc)
        model.train()
        if valid_auc is not None and valid_auc > best["auc"]:
            best.update(auc=valid_auc, epoch=epoch, step=step, state=copy.deepcopy(model.state_dict()))
            stale = 0
            return False
        stale += 1
        return stale >= config.patience

    stop = False
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(len(train))
        batches = range(0, len(train), config.batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch",
                   disable=None if config.progress is None else not config.progress, leave=False)
        losses = []
        for start in bar:
            t0 = time.perf_counter()
            batch, labels = examples_to_batch(train, order[start:start + config.batch_size])
            logits, auxiliary_loss = training_outputs(model, batch)
            loss = loss_fn(logits[:, 0], labels)
            if auxiliary_loss is not None:
                loss = loss + auxiliary_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            step_seconds += time.perf_counter() - t0
            trained_examples += len(labels)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            at_budget = config.max_steps is not None and step >= config.max_steps
            if config.eval_every_steps and step % config.eval_every_steps == 0 and not at_budget:
                if evaluate_now(epoch):
                    stop, stop_reason = True, "early_stop"
                    break
            if at_budget:
                break
        bar.close()
        history["step_loss"].extend(losses)
        if not stop:    # the epoch's (or the budget's) last step, unless it was just evaluated
            last = history["evals"][-1]["step"] if history["evals"] else -1
            if last != step and evaluate_now(epoch):
                stop, stop_reason = True, "early_stop"
        epoch_evals = [e["valid_auc"] for e in history["evals"] if e["epoch"] == epoch]
        history["epoch"].append({"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                                 "valid_auc": epoch_evals[-1] if epoch_evals else None, "steps": step,
                                 "seconds": time.perf_counter() - started})
        log.info("epoch %d: train loss %.4f, %d steps", epoch, np.mean(losses) if losses else np.nan, step)
        if stop:
            log.info("early stop at step %d: no better validation AUC for %d evaluations", step, stale)
            break
        if config.max_steps is not None and step >= config.max_steps:
            break
    train_seconds = time.perf_counter() - started
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    outcome = {
        "best_epoch": best["epoch"], "best_step": best["step"], "steps": step,
        "evaluations": len(history["evals"]), "evaluations_since_best": stale, "stop_reason": stop_reason,
        # the budget ended the run before early stopping did (fewer than `patience` evaluations since
        # its best): its best may lie beyond the budget
        "stopped_at_cap_improving": stop_reason == "cap",
        "valid_auc": None if best["auc"] == -np.inf else float(best["auc"]),
    }
    history.update(outcome)

    metrics = evaluate_examples(model, data.splits["test"], data.schema, config.eval_batch_size)
    metrics.update({
        **outcome,
        "train_seconds": train_seconds, "examples_per_second": trained_examples / max(step_seconds, 1e-9),
        "train_examples": len(train),
    })
    save_run(out_dir, model, model_name, data, config, data_options)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "history.json").write_text(json.dumps(history, indent=2))
    plot_training_curve(history, out_dir / "training_curve.png")
    return metrics


def save_run(out_dir: Path, model: nn.Module, model_name: str, data: PreparedData, config: TrainConfig,
             data_options: DataOptions | None) -> None:
    settings = {
        "model_name": model_name,
        "model_config": asdict(model.config),
        "train_config": asdict(config),
        "data_options": asdict(data_options) if data_options else None,
    }
    torch.save({**settings, "schema": data.schema.to_dict(), "state_dict": model.state_dict()},
               out_dir / "checkpoint.pt")
    (out_dir / "config.json").write_text(json.dumps(settings, indent=2))
    data.schema.save(out_dir / "schema.json")
    (out_dir / "vocab").mkdir(exist_ok=True)
    for name, vocab in data.vocabularies.items():
        vocab.save(out_dir / "vocab" / f"{name}.json")
    data.item_feature_table.to_parquet(out_dir / "item_features.parquet", index=False)


@dataclass
class LoadedRun:
    model: nn.Module
    model_name: str
    schema: FeatureSchema
    vocabularies: dict[str, Vocabulary]
    data_options: DataOptions | None
    train_config: TrainConfig


def data_options_from_dict(raw: dict | None) -> DataOptions | None:
    if raw is None:
        return None
    raw = dict(raw)
    raw["synthetic"] = SyntheticConfig(**raw.get("synthetic", {}))
    return DataOptions(**raw)


def load_run(run_dir: Path) -> LoadedRun:
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / "checkpoint.pt"
    if not checkpoint_path.exists():
        raise FileNotFoundError(f"{run_dir} has no checkpoint.pt; is it a `sainet train` run directory?")
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    schema = FeatureSchema.from_dict(checkpoint["schema"])
    model = build_model(checkpoint["model_name"], schema, **checkpoint["model_config"])
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    vocabularies = {p.stem: Vocabulary.load(p) for p in sorted((run_dir / "vocab").glob("*.json"))}
    known_train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    train_config = TrainConfig(**{k: v for k, v in checkpoint["train_config"].items() if k in known_train_fields})
    return LoadedRun(model, checkpoint["model_name"], schema, vocabularies,
                     data_options_from_dict(checkpoint["data_options"]), train_config)


def evaluate_run(run_dir: Path, data_dir: str | None = None) -> dict:
    """Rebuilds the run's test split from its recorded data options and recomputes the metrics."""
    run = load_run(run_dir)
    if run.data_options is None:
        raise ValueError(f"{run_dir} records no data options, so its test split cannot be rebuilt")
    options = run.data_options if data_dir is None else dataclasses.replace(run.data_options, data_dir=data_dir)
    data = prepare_dataset(options)
    changed = [name for name, vocab in run.vocabularies.items() if data.vocabularies.get(name) != vocab]
    if changed:
        raise ValueError(f"the data no longer matches the run: vocabularies {changed} differ")
    return evaluate_examples(run.model, data.splits["test"], run.schema, run.train_config.eval_batch_size)


def plot_training_curve(history: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 4))
    steps = np.asarray(history["step_loss"])
    ax_loss.plot(steps, alpha=0.35, label="batch")
    if len(steps) >= 10:
        window = max(len(steps) // 50, 5)
        ax_loss.plot(np.arange(window - 1, len(steps)), np.convolve(steps, np.ones(window) / window, "valid"),
                     label=f"moving mean ({window})")
    ax_loss.set(xlabel="step", ylabel="train BCE", title="training loss")
    ax_loss.legend()
    evals = history.get("evals", [])
    ax_auc.plot([e["step"] for e in evals], [e["valid_auc"] or np.nan for e in evals], marker="o")
    if history.get("best_step"):
        ax_auc.axvline(history["best_step"], color="grey", linestyle=":", label="best (restored)")
        ax_auc.legend()
    ax_auc.set(xlabel="step", ylabel="validation AUC", title="validation AUC")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
