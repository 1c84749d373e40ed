"""Training with early stopping on validation AUC, and the run directory that export reads.

A run directory holds:
    checkpoint.pt          weights, model name and config, feature schema, data and train options
    schema.json, vocab/    the feature schema and vocabularies (also inside the checkpoint)
    item_features.parquet  raw item id -> raw item-side feature values (serving's lookup table)
    config.json            model, training and data options, as given
    metrics.json           test metrics (see `model.metrics.ctr_metrics`) plus timing and how training ended
    history.json, training_curve.png
    training_state.pt      while training with `checkpoint_every_steps`: everything `resume` continues
                           from (weights, optimizer, RNG states, position in the data, best so far,
                           early-stopping counters, history); removed once the run is finished

The training regime converges by default: validation AUC is evaluated every `eval_every_steps`
optimizer steps and at the end of each epoch; training stops once `patience` evaluations in a row
bring no better validation AUC, or at the step budget (`epochs`, `max_steps`), and the weights of
the best evaluation are restored. At batch 512 on Amazon Food-Kitchen (about 1,300 steps an epoch)
validation AUC peaks within the first or second epoch, so the evaluations must come within an epoch.
A run that reaches its budget before early stopping has stopped it is flagged
`stopped_at_cap_improving`: its budget, not the validation AUC, decided where it stopped.

One loop, two sources (`model.data.stream`): a split in memory (`PreparedData`) or a prepared
folder's shards streamed (`StreamedData`). Under torchrun the loop runs on every rank with
DistributedDataParallel: each rank trains on its share with batch `batch_size / world size` (the
global batch stays `batch_size`), evaluates its share of a split, and rank 0 gathers the
predictions (labels, probabilities, scenarios: small), computes the AUC and broadcasts it; every
rank applies the same early-stopping rule to that one number, so all stop at the same step. Only
rank 0 writes the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.batch import Batch, examples_to_batch
from model.data.datasets import DataOptions, prepare_dataset
from model.data.examples import ExampleSet, PreparedData
from model.data.schema import FIRST_KNOWN_INDEX, FeatureSchema, Vocabulary
from model.data.stream import DEFAULT_SHUFFLE_BUFFER, BatchRows, MemorySource, ShardSource, StreamedData
from model.data.synthetic import SyntheticConfig
from model.distributed import Processes, current_processes
from model.memory import release_freed_memory
from model.metrics import ctr_metrics, safe_auc
from model.models import build_model
from model.models.registry import training_outputs

log = logging.getLogger(__name__)

TRAINING_STATE = "training_state.pt"
# Evaluation batch: a SAINet forward's working set grows with it (attention maps); 2048 evaluates
# faster than 8192 here (31 s against 38 s over 500 K examples) at under half the peak memory.
EVAL_BATCH_SIZE = 2048
# Evaluation hands freed memory back this often (model/memory.py). It costs ~13% of a pass, but
# without it the heap creeps with the pass's length: a 20 M-event run peaked at 1,732 MiB trimming
# only at each pass's end, 1,263 MiB trimming every 8 batches.
TRIM_EVERY_BATCHES = 8


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20                  # step budget in passes over the training split
    batch_size: int = 512             # global: under torchrun each rank takes batch_size / world size
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 3                 # evaluations in a row without a better validation AUC before stopping
    seed: int = 42
    eval_batch_size: int = EVAL_BATCH_SIZE
    threads: int | None = None        # torch intra-op threads; None keeps torch's default
    max_train_examples: int | None = None  # train on a seeded subsample (smoke runs, tests; data in memory)
    progress: bool | None = None      # None: a progress bar only on a terminal
    eval_every_steps: int | None = 200  # validation AUC every this many steps (and at each epoch's end);
                                        # None or 0: at each epoch's end only
    max_steps: int | None = None      # step budget in optimizer steps (whichever of this and `epochs` comes first)
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER  # streamed data: examples in the shuffle buffer (0: none)
    checkpoint_every_steps: int | None = None     # write training_state.pt every this many steps


# Settings that may differ between a run and its resumption (they do not change what is computed).
RESUMABLE_CHANGES = ("checkpoint_every_steps", "progress", "threads")


def set_determinism(seed: int, threads: int | None) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)


def to_device(batch: Batch, device: torch.device) -> Batch:
    return Batch(*(tensor.to(device) for tensor in batch))


@dataclass
class Predictions:
    """What the metrics need of an evaluated split: small next to the examples themselves."""

    label: np.ndarray
    prob: np.ndarray
    scenario: np.ndarray
    oracle: np.ndarray | None

    @classmethod
    def concat(cls, parts: list[Predictions]) -> Predictions:
        oracles = [p.oracle for p in parts]
        return cls(np.concatenate([p.label for p in parts]), np.concatenate([p.prob for p in parts]),
                   np.concatenate([p.scenario for p in parts]),
                   None if any(o is None for o in oracles) else np.concatenate(oracles))


@torch.no_grad()
def predict_batches(model: nn.Module, batches: Iterable[BatchRows],
                    trim_every: int = TRIM_EVERY_BATCHES) -> Predictions:
    """Predictions of every batch; freed memory goes back to the OS every `trim_every` batches (0:
    never) and at the pass's end."""
    model.eval()
    device = next(model.parameters()).device
    labels, probs, scenarios, oracles = [], [], [], []
    for index, (examples, rows) in enumerate(batches):
        batch, label = examples_to_batch(examples, rows)
        probs.append(torch.sigmoid(model(to_device(batch, device)))[:, 0].cpu().numpy())
        labels.append(label.numpy())
        scenarios.append(examples.target_scenario[rows])
        oracles.append(None if examples.oracle_prob is None else examples.oracle_prob[rows])
        if trim_every and index % trim_every == trim_every - 1:
            release_freed_memory()
    release_freed_memory()
    if not probs:
        return Predictions(np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), None)
    return Predictions.concat([Predictions(*part) for part in zip(labels, probs, scenarios, oracles)])


def _chunks(examples: ExampleSet, batch_size: int) -> Iterable[BatchRows]:
    return ((examples, slice(start, start + batch_size)) for start in range(0, len(examples), batch_size))


def predict(model: nn.Module, examples: ExampleSet, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Click probabilities [n] for the examples' own target items."""
    return predict_batches(model, _chunks(examples, batch_size)).prob


def prediction_metrics(predictions: Predictions, schema: FeatureSchema) -> dict:
    return ctr_metrics(predictions.label, predictions.prob, predictions.scenario, schema.scenarios,
                       FIRST_KNOWN_INDEX, predictions.oracle)


def evaluate_examples(model: nn.Module, examples: ExampleSet, schema: FeatureSchema,
                      batch_size: int = EVAL_BATCH_SIZE) -> dict:
    return prediction_metrics(predict_batches(model, _chunks(examples, batch_size)), schema)


def gathered_predictions(processes: Processes, model: nn.Module, batches: Iterable[BatchRows]) -> Predictions | None:
    """Every rank's predictions of its share, on rank 0 (None on the others)."""
    parts = processes.gather(predict_batches(model, batches))
    return Predictions.concat(parts) if processes.is_main else None


class TrainingStep(nn.Module):
    """A training forward (logits and the model's auxiliary loss) as a module's forward: DDP prepares
    its gradient reduction in forward, so the step must go through it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        return training_outputs(self.model, batch)


@dataclass
class Progress:
    """Where training stands: all of it goes into the training checkpoint."""

    epoch: int = 1                  # the epoch under way
    batch_in_epoch: int = 0         # batches of it already trained
    step: int = 0
    stale: int = 0                  # evaluations since the best one
    best_auc: float = -np.inf
    best_state: dict | None = None
    best_epoch: int = 0
    best_step: int = 0
    history: dict = field(default_factory=lambda: {"step_loss": [], "epoch": [], "evals": []})
    epoch_losses: list = field(default_factory=list)
    step_seconds: float = 0.0
    trained_examples: int = 0
    seconds: float = 0.0            # wall time of the fit so far, over all sittings
    cpu_seconds: float = 0.0        # CPU time of this process in the fit so far, over all sittings


def _per_rank_batch(batch_size: int, world_size: int) -> int:
    if batch_size % world_size:
        raise ValueError(f"the batch size {batch_size} must divide evenly among {world_size} processes")
    return batch_size // world_size


def _identity(model_name: str, model_overrides: dict, config: TrainConfig, world_size: int) -> dict:
    """What a resumed run must share with the run it continues (JSON-normalised)."""
    train = {k: v for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES}
    return json.loads(json.dumps({"model_name": model_name, "model_overrides": model_overrides,
                                  "train_config": train, "world_size": world_size}))


def _rng_states(device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def save_training_state(path: Path, processes: Processes, progress: Progress, model: nn.Module,
                        optimizer: torch.optim.Optimizer, source, identity: dict) -> None:
    """The training checkpoint, written whole or not at all (a temporary file renamed over it).
    Collective under torchrun: every rank sends its RNG states to rank 0, which writes."""
    rng_by_rank = processes.gather(_rng_states(processes.device))
    if not processes.is_main:
        return
    state = {"identity": identity, "progress": dict(vars(progress)), "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "rng_by_rank": rng_by_rank, "source": source.state_dict()}
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def can_resume(out_dir: Path, model_name: str, model_overrides: dict, config: TrainConfig,
               world_size: int = 1) -> bool:
    """Whether `out_dir` holds a training checkpoint that `train_model(..., resume=True)` with these
    settings would continue (False when there is none, or it is of other settings)."""
    path = Path(out_dir) / TRAINING_STATE
    if not path.exists():
        return False
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state["identity"] == _identity(model_name, model_overrides, config, world_size)


def load_training_state(path: Path, processes: Processes, model: nn.Module, optimizer: torch.optim.Optimizer,
                        source, identity: dict) -> Progress:
    if not path.exists():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist (a run writes it with "
                                f"--checkpoint-every-steps, and removes it once finished)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["identity"] != identity:
        differ = sorted(k for k in identity if state["identity"].get(k) != identity[k])
        raise ValueError(f"{path} was written by a run with other settings ({', '.join(differ)}); "
                         f"resume with the same model, training options and number of processes")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    source.load_state_dict(state["source"])
    rng = state["rng_by_rank"][processes.rank]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"], processes.device)
    return Progress(**state["progress"])


def training_source(data: PreparedData | StreamedData, config: TrainConfig, processes: Processes):
    batch_size = _per_rank_batch(config.batch_size, processes.world_size)
    if isinstance(data, StreamedData):
        if config.max_train_examples:
            raise ValueError("max_train_examples subsamples data held in memory; to stream less, prepare a "
                             "smaller log")
        return ShardSource(data, batch_size, config.seed, processes.rank, processes.world_size,
                           config.shuffle_buffer)
    return MemorySource(data, batch_size, config.seed, processes.rank, processes.world_size,
                        config.max_train_examples)


def train_model(data: PreparedData | StreamedData, model_name: str, model_overrides: dict, config: TrainConfig,
                out_dir: Path, data_options: DataOptions | None = None, resume: bool = False) -> dict:
    """Trains and writes the run directory (rank 0); returns the test metrics (on every rank).
    `resume`: continue from `out_dir`'s training checkpoint instead of starting afresh."""
    processes = current_processes()
    out_dir = Path(out_dir)
    if processes.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    set_determinism(config.seed, config.threads)
    source = training_source(data, config, processes)
    model = build_model(model_name, data.schema, **model_overrides).to(processes.device)
    if processes.distributed:   # the weights came from the seed alone; dropout masks differ per rank
        torch.manual_seed(config.seed * 1_000 + processes.rank)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    identity = _identity(model_name, model_overrides, config, processes.world_size)
    state_path = out_dir / TRAINING_STATE
    progress = (load_training_state(state_path, processes, model, optimizer, source, identity) if resume
                else Progress())
    step_module: nn.Module = TrainingStep(model)
    if processes.distributed:
        step_module = DistributedDataParallel(
            step_module, device_ids=[processes.device.index] if processes.device.type == "cuda" else None)
    history = progress.history
    # what earlier sittings spent, up to their last checkpoint (the steps after it are trained again)
    earlier_seconds, earlier_cpu_seconds = progress.seconds, progress.cpu_seconds
    started = time.perf_counter() - progress.seconds
    cpu_started = time.process_time() - progress.cpu_seconds
    stop_reason = "cap"

    def evaluate_now(epoch: int) -> bool:
        """Validation AUC at this step; True when early stopping says stop."""
        predictions = gathered_predictions(processes, model, source.eval_batches("valid", config.eval_batch_size))
        valid_auc = processes.from_main(safe_auc(predictions.label, predictions.prob) if processes.is_main
                                        else None)
        history["evals"].append({"step": progress.step, "epoch": epoch, "valid_auc": valid_auc,
                                 "seconds": time.perf_counter() - started})
        log.info("step %d (epoch %d): valid AUC %s", progress.step, epoch, valid_auc)
        step_module.train()
        if valid_auc is not None and valid_auc > progress.best_auc:
            progress.best_auc, progress.best_epoch, progress.best_step = valid_auc, epoch, progress.step
            progress.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            progress.stale = 0
            return False
        progress.stale += 1
        return progress.stale >= config.patience

    def at_budget() -> bool:
        return config.max_steps is not None and progress.step >= config.max_steps

    # None: a bar only on a terminal; one bar per run, rank 0's
    progress_bar_disabled = (None if config.progress is None else not config.progress) if processes.is_main else True
    stop = False
    for epoch in range(progress.epoch, config.epochs + 1):
        if epoch > progress.epoch:
            progress.epoch, progress.batch_in_epoch, progress.epoch_losses = epoch, 0, []
        losses = progress.epoch_losses
        step_module.train()
        steps = source.steps_in_epoch(epoch)
        bar = tqdm(source.train_batches(epoch, progress.batch_in_epoch), total=steps - progress.batch_in_epoch,
                   desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False,
                   disable=progress_bar_disabled)
        for examples, rows in bar:
            t0 = time.perf_counter()
            batch, labels = examples_to_batch(examples, rows)
            logits, auxiliary_loss = step_module(to_device(batch, processes.device))
            loss = loss_fn(logits[:, 0], labels.to(processes.device))
            if auxiliary_loss is not None:
                loss = loss + auxiliary_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            progress.step += 1
            progress.batch_in_epoch += 1
            progress.step_seconds += time.perf_counter() - t0
            progress.trained_examples += len(labels)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            evaluation_due = config.eval_every_steps and progress.step % config.eval_every_steps == 0
            if evaluation_due and not at_budget() and evaluate_now(epoch):
                stop, stop_reason = True, "early_stop"
                break
            if at_budget():
                break
            if config.checkpoint_every_steps and progress.step % config.checkpoint_every_steps == 0:
                progress.seconds = time.perf_counter() - started
                progress.cpu_seconds = time.process_time() - cpu_started
                save_training_state(state_path, processes, progress, model, optimizer, source, identity)
        bar.close()
        losses = processes.mean(losses)     # each rank's loss is over its own share of the batch
        history["step_loss"].extend(losses)
        if not stop:    # the epoch's (or the budget's) last step, unless it was just evaluated
            last = history["evals"][-1]["step"] if history["evals"] else -1
            if last != progress.step and evaluate_now(epoch):
                stop, stop_reason = True, "early_stop"
        epoch_evals = [e["valid_auc"] for e in history["evals"] if e["epoch"] == epoch]
        history["epoch"].append({"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                                 "valid_auc": epoch_evals[-1] if epoch_evals else None, "steps": progress.step,
                                 "seconds": time.perf_counter() - started})
        log.info("epoch %d: train loss %.4f, %d steps", epoch, np.mean(losses) if losses else np.nan,
                 progress.step)
        if stop:
            log.info("early stop at step %d: no better validation AUC for %d evaluations", progress.step,
                     progress.stale)
            break
        if at_budget():
            break
    train_seconds, train_cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    outcome = {
        "best_epoch": progress.best_epoch, "best_step": progress.best_step, "steps": progress.step,
        "evaluations": len(history["evals"]), "evaluations_since_best": progress.stale, "stop_reason": stop_reason,
        # the budget ended the run before early stopping did (fewer than `patience` evaluations since
        # its best): its best may lie beyond the budget
        "stopped_at_cap_improving": stop_reason == "cap",
        "valid_auc": None if progress.best_auc == -np.inf else float(progress.best_auc),
    }
    history.update(outcome)

    test = gathered_predictions(processes, model, source.eval_batches("test", config.eval_batch_size))
    metrics = processes.from_main(prediction_metrics(test, data.schema) if processes.is_main else None)
    trained_examples = processes.total(progress.trained_examples)
    metrics.update({
        **outcome,
        "train_seconds": train_seconds, "examples_per_second": trained_examples / max(progress.step_seconds, 1e-9),
        "train_cpu_seconds": train_cpu_seconds, "train_examples": source.train_examples,
        "earlier_sittings": {"seconds": earlier_seconds, "cpu_seconds": earlier_cpu_seconds},
    })
    if processes.distributed:
        metrics["processes"] = processes.world_size
    if processes.is_main:
        save_run(out_dir, model, model_name, data, config, data_options)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (out_dir / "history.json").write_text(json.dumps(history, indent=2))
        plot_training_curve(history, out_dir / "training_curve.png")
        state_path.unlink(missing_ok=True)     # the run is finished: nothing left to resume
    return metrics


def save_run(out_dir: Path, model: nn.Module, model_name: str, data: PreparedData | StreamedData, config: TrainConfig,
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
    data_options_problem: str | None = None     # why `data_options` is None although the run recorded some


def data_options_from_dict(raw: dict | None) -> DataOptions | None:
    """Recorded data options (a run's or a prepared folder's). Fields this version does not know (an
    older version's) are an error naming them: ignoring one could rebuild other data than the run's."""
    if raw is None:
        return None
    raw = dict(raw)
    synthetic = dict(raw.get("synthetic", {}))
    unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(DataOptions)})
    unknown += [f"synthetic.{name}" for name in sorted(set(synthetic) - {f.name for f in dataclasses.fields(SyntheticConfig)})]
    if unknown:
        raise ValueError(f"the recorded data options hold fields this version does not know: {unknown} (written "
                         "by an older version); rebuild the data, or train the run again, with this version")
    raw["synthetic"] = SyntheticConfig(**synthetic)
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
    try:    # the model stays usable (export, diagnostics) when only its data cannot be rebuilt
        data_options, problem = data_options_from_dict(checkpoint["data_options"]), None
    except ValueError as error:
        data_options, problem = None, str(error)
    return LoadedRun(model, checkpoint["model_name"], schema, vocabularies, data_options, train_config, problem)


def evaluate_run(run_dir: Path, data_dir: str | None = None) -> dict:
    """Rebuilds the run's test split from its recorded data options and recomputes the metrics."""
    run = load_run(run_dir)
    if run.data_options is None:
        raise ValueError(f"{run_dir}: its test split cannot be rebuilt: "
                         f"{run.data_options_problem or 'the run records no data options'}")
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
