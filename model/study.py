"""The reproduction study: every model x seed on the same splits, per-scenario AUC tables with
Welch's t-test, the ablation table and hyper-parameter curves.

Resumable: each finished (model, variant, seed) cell is written to the cells folder (`<out>/cells/`
unless `cells_dir` says where) as soon as it completes and skipped when the command is rerun; the
tables are rebuilt from all finished cells. Several workers may run the same command on one
REPORT_DIR at once (one per core): each cell is claimed with an advisory file lock, which the
operating system releases if a worker dies.

Learning rate: with a grid (`StudyConfig.lr_grid`), each model first trains one cell per grid
point on seed `tune_seed` (variant `lr=<value>`); the point with the best VALIDATION AUC is the
model's learning rate for every other cell of that model (test AUC is never used for a choice).
The main table's `tune_seed` cell is the chosen grid cell itself. The grid, every point's
validation AUC and the choice are written to `tuning.json` and the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import logging
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from scipy import stats as scipy_stats

import numpy as np
import pandas as pd

from model.data.datasets import DataOptions, prepare_dataset
from model.data.examples import PreparedData
from model.data.schema import FIRST_KNOWN_INDEX
from model.data.synthetic import SyntheticConfig, attainable_click_prob
from model.diagnostics import history_path_diagnostics
from model.metrics import item_popularity, per_scenario_auc, safe_auc
from model.models import MODEL_REGISTRY
from model.provenance import git_commit
from model.train import TrainConfig, can_resume, load_run, train_model

log = logging.getLogger(__name__)

MAIN_MODEL = "sainet"
ABLATIONS = ("sainet", "sainet-no-sie", "sainet-no-stm", "sainet-no-tif", "sainet-no-sdt")
# The paper's Figure 4 (and the grid): SAINet's blocks L, STM gamma and SIE heads.
CURVES: dict[str, tuple] = {
    "blocks": (1, 2, 3, 4),
    "gamma": (0.8, 1.2, 1.6, 2.0, 2.4, 2.8),
    "heads": (1, 2, 4, 8),
}

# The readings of the paper that SAINet's config documents (model/models/sainet.py), as overrides of
# the registered `sainet`; "literal" (no override) is the main table's SAINet. Each other reading is
# one choice changed (and one pair of them), so the table says which choice moves validation AUC.
READINGS: dict[str, dict] = {
    "literal": {},
    "sie-residual-layer-norm": {"sie_residual": True, "sie_layer_norm": True},
    "tif-scaled": {"tif_scaled": True},
    "sdt-gate-scale-2": {"sdt_gate_scale": 2.0},
    "sdt-gate-scenario-only": {"sdt_gate_input": "scenario"},
    "init-all": {"init_scope": "all"},
    "sie-residual-layer-norm+tif-scaled": {"sie_residual": True, "sie_layer_norm": True, "tif_scaled": True},
}
READING_PREFIX = "reading="

# The Scenario-Wise Rec benchmark's exact setting (movielens-1m), as `sainet study` option values
# that the protocol fixes (its features, dense min-max age and the empty history come with the data
# protocol, model/data/movielens.py), and what it runs unless told otherwise. Sources, in their
# repository: scripts/run_movielens_rank_multi_domain.py's argparse defaults (--epoch 1,
# --learning_rate 1e-3, --batch_size 4096, --weight_decay 1e-5, --seed 2022), its CTRTrainer call
# (earlystop_patience=4, Adam; the StepLR it names is never built: no scheduler_fn is passed) and its
# SparseFeature(..., embed_dim=16). Seeds 2022 and 2023: the seed values themselves, not indices.
PROTOCOL_SETTINGS: dict[str, dict] = {
    "scenario-wise-rec": {"dataset": "movielens-1m", "split": "random", "no_curves": True, "epochs": 1,
                          "patience": 4, "eval_every_steps": 0, "lr_grid": (), "batch_size": 4096, "lr": 1e-3,
                          "weight_decay": 1e-5, "embed_dim": 16, "first_seed": 2022},
}

# The benchmark's own MLP (scenario_wise_rec/basic/layers.py `MLP`: Linear, BatchNorm1d, ReLU, dropout 0
# per layer) and initialisation (basic/features.py: SparseFeature(initializer=RandomNormal(0, 0.0001));
# Linear layers keep PyTorch's default).
_SCENARIO_WISE_REC_MLP = {"batch_norm": True, "dropout": 0.0, "embedding_init_std": 1e-4, "linear_init": "pytorch"}
# Their feature lists (scripts/run_movielens_rank_multi_domain.py): sparse_features = user_id, movie_id,
# gender, occupation, zip, cate_id (first genre); dense_features = age; scenario_features = domain_indicator.
# Our field names for them (`BaselineInputs.field_names`); no model of theirs reads a history.
_SPARSE = ("item_id", "first_genre", "user", "gender", "occupation", "zip")
# Per protocol, per model: the config overrides that give each model the protocol's architecture,
# applied to every cell of that model (after the study-wide overrides such as embed_dim). Each entry
# is that benchmark's constructor call in scripts/run_movielens_rank_multi_domain.py (domain_num = 3).
PROTOCOL_MODEL_OVERRIDES: dict[str, dict[str, dict]] = {
    "scenario-wise-rec": {
        # SharedBottom(dense_feas+sparse_feas, domain_num, bottom_params={"dims": [128]}, tower_params={"dims": [8]})
        "shared-bottom": {**_SCENARIO_WISE_REC_MLP, "input_fields": (*_SPARSE, "age"), "tower": (128, 8),
                          "bottom_layers": 1},
        # MMOE(dense_feas+sparse_feas, domain_num, n_expert=domain_num, expert_params={"dims": [16]},
        #      tower_params={"dims": [8]})
        "mmoe": {**_SCENARIO_WISE_REC_MLP, "input_fields": (*_SPARSE, "age"), "tower": (16, 8), "expert_layers": 1,
                 "experts": 3},
        # PLE(dense_feas+sparse_feas, domain_num, n_level=1, n_expert_specific=2, n_expert_shared=1,
        #     expert_params={"dims": [16]}, tower_params={"dims": [8]})
        "ple": {**_SCENARIO_WISE_REC_MLP, "input_fields": (*_SPARSE, "age"), "tower": (16, 8), "levels": 1,
                "specific_experts": 2, "shared_experts": 1, "expert_layers": 1},
        # AdaSparse(sce_features=scenario_feas, agn_features=sparse_feas (no age), form='Fusion', epsilon=1e-2,
        #           alpha=1.0, delta_alpha=1e-4, mlp_params={"dims": [32, 32], "dropout": 0.2, "activation": "relu"});
        # beta=2.0 by default; Pruner: Linear(bias=False); the first pruner prunes the input embeddings
        "adasparse": {**_SCENARIO_WISE_REC_MLP, "input_fields": (*_SPARSE, "scenario"), "tower": (32, 32),
                      "dropout": 0.2, "form": "fusion", "epsilon": 1e-2, "alpha": 1.0, "alpha_step": 1e-4,
                      "beta": 2.0, "prune_input": True, "pruner_bias": False, "sparsity_lambda": 0.0},
        # PPNet(id_features=[user_id, movie_id], agn_features=sparse_feas+dense_feas+scenario_feas, domain_num,
        #       fcn_dims=[128, 64, 32]); one PPTowerBlock per domain, GateNU(hidden_dim=output_dim, gemma=2.0)
        "pepnet": {**_SCENARIO_WISE_REC_MLP, "form": "ppnet", "input_fields": (*_SPARSE, "age", "scenario"),
                   "prior_fields": ("item_id", "user"), "tower": (128, 64, 32), "gate_hidden": None, "gamma": 2.0,
                   "scenario_towers": True},
    },
}
PROTOCOL_DEFAULTS: dict[str, dict] = {
    "scenario-wise-rec": {"models": ",".join(PROTOCOL_MODEL_OVERRIDES["scenario-wise-rec"]), "seeds": 2}}


def protocol_model_overrides(protocol: str, model: str) -> dict:
    """The protocol's architecture for `model` ({} for a model the protocol does not define)."""
    return dict(PROTOCOL_MODEL_OVERRIDES.get(protocol, {}).get(model, {}))


def cell_model_options(config: StudyConfig, model: str, overrides: dict) -> dict:
    """A cell's model config overrides: the study-wide ones, the protocol's for this model, the cell's own."""
    return {**dict(config.model_overrides), **protocol_model_overrides(config.protocol, model), **overrides}


@dataclass(frozen=True)
class StudyConfig:
    models: tuple[str, ...]
    seeds: int = 5
    curve_seeds: int = 3
    curves: bool = True
    train: TrainConfig = TrainConfig()
    model_overrides: tuple[tuple[str, object], ...] = ()   # applied to every model (e.g. embed_dim)
    lr_grid: tuple[float, ...] = ()     # per-model learning-rate grid chosen on validation; () = train.learning_rate
    tune_seed: int = 0                  # the seed the grid is trained on
    cells_dir: str | None = None        # where the cells live; None: <out>/cells
    reading_seeds: int = 0              # seeds of each SAINet reading (READINGS), compared on validation; 0: none
    protocol: str = "default"           # whose per-model architecture (PROTOCOL_MODEL_OVERRIDES) the cells use
    first_seed: int = 0                 # the main cells' seeds are first_seed .. first_seed + seeds - 1

    def __post_init__(self):
        if self.first_seed and self.reading_seeds:
            raise ValueError("SAINet's readings are compared with the main cells of seeds 0..; keep first_seed 0")

    @property
    def main_seeds(self) -> range:
        return range(self.first_seed, self.first_seed + self.seeds)


TUNE_PREFIX = "lr="


def lr_variant(lr: float) -> str:
    return f"{TUNE_PREFIX}{lr:g}"


def cells_folder(config: StudyConfig, out_dir: Path) -> Path:
    return Path(config.cells_dir) if config.cells_dir else Path(out_dir) / "cells"


def read_cell(cells: Path, model: str, variant: str, seed: int) -> dict | None:
    path = cells / f"{cell_name(model, variant, seed)}.json"
    return json.loads(path.read_text()) if path.exists() else None


def step_budget(train: TrainConfig, train_examples: int, batch_size: int) -> int:
    """The optimizer steps `train` allows on `train_examples` (the last batch of an epoch may be short)."""
    epoch_steps = train.epochs * math.ceil(train_examples / batch_size)
    return epoch_steps if train.max_steps is None else min(epoch_steps, train.max_steps)


def budget_grew(cell: dict, config: StudyConfig) -> bool:
    """True for a cell that stopped at its step budget while still improving when the study's budget
    now allows it more steps than it took: it is trained again, since its best may lie beyond."""
    ran = [cell.get(k) for k in ("train_examples", "batch_size", "steps")]
    if cell.get("stop_reason") != "cap" or None in ran:     # an early stop, or an old cell that cannot tell
        return False
    train_examples, batch_size, steps = ran
    return step_budget(config.train, train_examples, batch_size) > steps


def trained_at_other_lr(trained: float | None, assigned: float | None) -> bool:
    """True for a cell trained at a learning rate other than the one it is assigned now (a grid grown
    since it ran may choose another): it is trained again and left out of the reports. False while
    the choice is pending (None) or for an old cell that does not record its rate (None or NaN)."""
    if assigned is None or trained is None or math.isnan(trained):
        return False
    return not math.isclose(trained, assigned, rel_tol=1e-9)


def is_finished(cell: dict | None, config: StudyConfig, lr: float | None) -> bool:
    """The cell is on disk and stands: neither its step budget nor its assigned learning rate `lr`
    has changed since it was trained."""
    return (cell is not None and not budget_grew(cell, config)
            and not trained_at_other_lr(cell.get("learning_rate"), lr))


def tuning_points(config: StudyConfig, cells: Path, model: str) -> list[dict]:
    """The model's grid points on disk: lr, validation AUC (overall) and how each run ended."""
    points = []
    for lr in config.lr_grid:
        cell = read_cell(cells, model, lr_variant(lr), config.tune_seed)
        points.append({"lr": lr, "finished": is_finished(cell, config, lr),
                       **({} if cell is None else {k: cell.get(k) for k in (
                           "valid_auc", "best_step", "steps", "stop_reason", "stopped_at_cap_improving")})})
    return points


def chosen_lr(config: StudyConfig, cells: Path, model: str) -> float | None:
    """The model's learning rate: the grid point with the best validation AUC (the smaller lr on a
    tie), None while a grid point is unfinished; train.learning_rate without a grid."""
    if not config.lr_grid:
        return config.train.learning_rate
    points = tuning_points(config, cells, model)
    if not all(p["finished"] for p in points):
        return None
    scored = [p for p in points if p.get("valid_auc") is not None]
    if not scored:
        return config.train.learning_rate
    return max(scored, key=lambda p: (p["valid_auc"], -p["lr"]))["lr"]


def assigned_lr(config: StudyConfig, cells: Path, model: str, variant: str) -> float | None:
    """The learning rate a cell trains at: a grid cell's own point, every other cell its model's
    chosen rate (None while the grid is unfinished)."""
    if variant.startswith(TUNE_PREFIX):
        return float(variant[len(TUNE_PREFIX):])
    return chosen_lr(config, cells, model)


def resolve_models(spec: str) -> tuple[str, ...]:
    """"all" -> every registered model, "baselines" -> every model but SAINet and its ablations;
    else a comma list, each name checked against the registry."""
    if spec == "all":
        return tuple(sorted(MODEL_REGISTRY, key=lambda n: (n.startswith("sainet"), n)))
    if spec == "baselines":
        return tuple(sorted(n for n in MODEL_REGISTRY if not n.startswith("sainet")))
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    unknown = [n for n in names if n not in MODEL_REGISTRY]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {sorted(MODEL_REGISTRY)} or 'all'")
    return names


def cell_name(model: str, variant: str, seed: int) -> str:
    return f"{model}__{variant}__seed{seed}"


@contextlib.contextmanager
def claim_cell(cell_path: Path):
    """Yields True while this process holds the cell's lock, False when another worker holds it.

    The lock file is removed once the cell is written; a worker that opened it just before then
    finds the cell file on its own re-check and does not train the cell again.
    """
    lock_path = cell_path.with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            lock_path.unlink(missing_ok=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_cell(data: PreparedData, options: DataOptions, model: str, variant: str, overrides: dict, seed: int,
             config: StudyConfig, out_dir: Path) -> str:
    """Trains one cell unless it is finished or another worker is training it now; returns which:
    "trained", "finished", "busy" or "waiting" (its model's learning-rate grid is not finished yet).
    The reports read the finished cells from disk."""
    cells = cells_folder(config, out_dir)
    path = cells / f"{cell_name(model, variant, seed)}.json"
    lr = assigned_lr(config, cells, model, variant)
    if lr is None:
        return "waiting"
    if is_finished(read_cell(cells, model, variant, seed), config, lr):
        return "finished"
    if config.lr_grid and variant == "main" and seed == config.tune_seed:
        # the chosen grid point is this cell: the same model, seed and learning rate
        write_cell(path, {**read_cell(cells, model, lr_variant(lr), seed), "variant": "main",
                          "copied_from": cell_name(model, lr_variant(lr), seed), "seconds": 0.0,
                          "cpu_seconds": 0.0})
        return "finished"
    with claim_cell(path) as claimed:
        if not claimed:
            return "busy"
        if is_finished(read_cell(cells, model, variant, seed), config, lr):
            return "finished"   # by another worker between the check above and the lock
        train_cell(data, options, model, variant, overrides, seed, config, path, lr)
        return "trained"


def write_cell(path: Path, cell: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cell, indent=2))
    tmp.replace(path)       # a cell appears whole or not at all


# A cell in training writes a checkpoint this often (when its TrainConfig sets no other interval), so
# that a worker stopped mid-cell (a session's end, a reboot) loses at most these steps: the next
# worker to claim the cell continues from it. Resumed, a run ends exactly as an uninterrupted one.
CELL_CHECKPOINT_STEPS = 200


def cell_scratch_dir(cell_path: Path) -> Path:
    """The run directory of a cell while it trains (checkpoint and all); removed once the cell is written."""
    return cell_path.parent / ".scratch" / cell_path.stem


def train_cell(data: PreparedData, options: DataOptions, model: str, variant: str, overrides: dict, seed: int,
               config: StudyConfig, path: Path, lr: float | None = None) -> dict:
    """Trains one cell (the caller holds its lock), continuing from the checkpoint of an earlier
    worker that was stopped while training it, when it has one of the same settings."""
    started, cpu_started = time.perf_counter(), time.process_time()
    train_config = dataclasses.replace(config.train, seed=seed,
                                       learning_rate=config.train.learning_rate if lr is None else lr,
                                       checkpoint_every_steps=config.train.checkpoint_every_steps
                                       or CELL_CHECKPOINT_STEPS)
    run_dir = cell_scratch_dir(path)
    model_options = cell_model_options(config, model, overrides)
    resume = can_resume(run_dir, model, model_options, train_config)
    if resume:
        log.info("cell %s: continuing from its checkpoint in %s", path.stem, run_dir)
    elif run_dir.exists():
        shutil.rmtree(run_dir)      # a finished run's leftovers, or a checkpoint of other settings
    metrics = train_model(data, model, model_options, train_config, run_dir, options, resume=resume)
    history_path = history_path_diagnostics(load_run(run_dir).model, data.splits["valid"])
    earlier = metrics["earlier_sittings"]
    rows = [{"scenario": "overall", "auc": metrics["auc"]["overall"], "logloss": metrics["logloss"]}]
    rows += [{"scenario": scenario, "auc": auc, "logloss": metrics["logloss_per_scenario"][scenario]}
             for scenario, auc in metrics["auc"]["per_scenario"].items()]
    cell = {"model": model, "variant": variant, "seed": seed, "overrides": overrides,
            "model_options": {k: list(v) if isinstance(v, tuple) else v for k, v in model_options.items()},
            "rows": rows,
            "learning_rate": train_config.learning_rate, "batch_size": train_config.batch_size,
            "valid_auc": metrics["valid_auc"], "best_epoch": metrics["best_epoch"],
            "best_step": metrics["best_step"], "steps": metrics["steps"], "stop_reason": metrics["stop_reason"],
            "stopped_at_cap_improving": metrics["stopped_at_cap_improving"],
            "budget": {"epochs": train_config.epochs, "max_steps": train_config.max_steps,
                       "patience": train_config.patience, "eval_every_steps": train_config.eval_every_steps},
            # of every sitting that trained it (an interrupted one up to its last checkpoint)
            "seconds": time.perf_counter() - started + earlier["seconds"],
            # CPU seconds of this process: unlike wall time, not inflated by other work on the machine
            "cpu_seconds": time.process_time() - cpu_started + earlier["cpu_seconds"],
            "resumed": resume, "train_examples": metrics["train_examples"], "history_path": history_path}
    write_cell(path, cell)
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):      # another worker's cell may be training there still
        run_dir.parent.rmdir()
    return cell


def planned_cells(config: StudyConfig) -> list[tuple[str, str, dict, int]]:
    """In the order a worker trains them: every model's learning-rate grid, then the main cells seed by
    seed (so that every model has a few seeds early), then the curves."""
    cells = [(m, lr_variant(lr), {}, config.tune_seed) for m in config.models for lr in config.lr_grid]
    cells += [(m, "main", {}, s) for s in config.main_seeds for m in config.models]
    # seed by seed, so that a partial comparison covers every reading; the literal reading's cells are
    # the main table's SAINet cells
    cells += [(MAIN_MODEL, f"{READING_PREFIX}{name}", overrides, s) for s in range(config.reading_seeds)
              for name, overrides in READINGS.items() if overrides]
    if config.curves and MAIN_MODEL in MODEL_REGISTRY:
        defaults = dataclasses.asdict(MODEL_REGISTRY[MAIN_MODEL].model_class.Config())
        for name, values in CURVES.items():
            for value in values:
                for seed in range(config.curve_seeds):
                    if value == defaults[name] and MAIN_MODEL in config.models and seed in config.main_seeds:
                        continue  # the main table's SAINet cell is this point of the curve
                    cells.append((MAIN_MODEL, f"{name}={value}", {name: value}, seed))
    return cells


def run_study(options: DataOptions, config: StudyConfig, out_dir: Path, command: str = "",
              train: bool = True) -> dict:
    """Trains every planned cell not yet finished (none when `train` is False), then rebuilds the reports."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = prepare_dataset(options)
    references = reference_aucs(data, options.synthetic if options.dataset == "synthetic" else None)
    cells = planned_cells(config)
    trained_here = 0
    # Passes over the plan until one trains nothing: a pass can finish a grid that later cells wait for.
    while train:
        trained_this_pass = 0
        for i, (model, variant, overrides, seed) in enumerate(cells, 1):
            outcome = run_cell(data, options, model, variant, overrides, seed, config, out_dir)
            if outcome == "trained":
                log.info("cell %d/%d: %s %s seed %d trained", i, len(cells), model, variant, seed)
            trained_this_pass += outcome == "trained"
            if outcome == "busy":
                log.info("cell %d/%d is being trained by another worker; skipped", i, len(cells))
            elif outcome == "waiting":
                log.info("cell %d/%d waits for %s's learning-rate grid", i, len(cells), model)
        trained_here += trained_this_pass
        if not trained_this_pass:
            break
    # Workers that finish together take turns: each rebuilds the reports from all cells then on disk.
    with open(out_dir / "reports.lock", "a") as reports_lock:
        fcntl.flock(reports_lock, fcntl.LOCK_EX)
        return write_reports(out_dir, config, data.schema.scenarios, command, time.perf_counter() - started,
                             options, references, planned=len(cells), cells_trained=trained_here)


def reference_aucs(data: PreparedData,
                   synthetic: SyntheticConfig | None = None) -> dict[str, dict[str, float | None]]:
    """Test AUC of scores that are not models: item popularity (training click rate per item) and,
    for the synthetic world `synthetic` the data was generated from, the best score attainable from
    what a model sees (the true model's posterior given the history) and the true click
    probabilities (the oracle, which knows each user's taste and no model can reach)."""
    train, test = data.splits["train"], data.splits["test"]
    scores = {"item popularity (training CTR)": item_popularity(train.target_item, train.label, test.target_item)}
    if synthetic is not None:
        scores["attainable (posterior given the history)"] = attainable_click_prob(synthetic, data)
    if test.oracle_prob is not None:
        scores["oracle (true click probability, full information)"] = test.oracle_prob
    return {name: {**per_scenario_auc(test.label, score, test.target_scenario, data.schema.scenarios,
                                      FIRST_KNOWN_INDEX), "overall": safe_auc(test.label, score)}
            for name, score in scores.items()}


CELL_COLUMNS = ["model", "variant", "seed", "scenario", "auc", "logloss", "seconds", "cpu_seconds",
                "learning_rate", "valid_auc", "best_step", "steps", "stop_reason", "stopped_at_cap_improving"]


def load_cells(cells: Path) -> pd.DataFrame:
    """One row per cell x scenario; `valid_auc` is the cell's overall validation AUC (at its best
    evaluation), the same on each of its rows. Cells from before the converging regime lack it."""
    rows = []
    for path in sorted(Path(cells).glob("*.json")):
        cell = json.loads(path.read_text())
        for row in cell["rows"]:
            rows.append({"model": cell["model"], "variant": cell["variant"], "seed": cell["seed"], **row,
                         "seconds": cell["seconds"], "cpu_seconds": cell.get("cpu_seconds"),
                         **{k: cell.get(k) for k in CELL_COLUMNS[8:]}})
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


def current_cells(frame: pd.DataFrame, config: StudyConfig, cells: Path) -> tuple[pd.DataFrame, int]:
    """`frame` without the cells trained at a learning rate other than the one they are assigned now
    (`assigned_lr`), and how many cells were dropped."""
    assigned = {key: assigned_lr(config, cells, *key)
                for key in frame[["model", "variant"]].drop_duplicates().itertuples(index=False, name=None)}
    stale = pd.Series([trained_at_other_lr(trained, assigned[(model, variant)])
                       for model, variant, trained in zip(frame.model, frame.variant, frame.learning_rate)],
                      index=frame.index, dtype=bool)
    dropped = frame[stale].drop_duplicates(["model", "variant", "seed"])
    return frame[~stale], len(dropped)


def seed_aucs(frame: pd.DataFrame, model: str, scenario: str) -> np.ndarray:
    """One model's test AUC in one scenario, one value per seed."""
    return frame[(frame.model == model) & (frame.scenario == scenario)]["auc"].to_numpy()


def format_stat(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def t_test_outcome(t: float | None, p: float | None, alpha: float = 0.05) -> str:
    """SAINet against its rival in words: which one is significantly higher, if either."""
    if p is None:
        return "n/a (too few seeds)"
    if p >= alpha:
        return "no significant difference"
    return "SAINet higher" if t > 0 else "SAINet lower"


def confidence_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of the mean over seeds; None with fewer than two."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return None
    half = scipy_stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def difference_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """Welch's interval of mean(a) - mean(b) (Welch-Satterthwaite degrees of freedom); None with
    fewer than two seeds a side."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    difference = a.mean() - b.mean()
    se = np.sqrt(va + vb)
    if se == 0:
        return float(difference), float(difference)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = scipy_stats.t.ppf(0.5 + level / 2, dof) * se
    return float(difference - half), float(difference + half)


def interval_outcome(interval: tuple[float, float] | None) -> str:
    """SAINet against its rival in words, from the 95% interval of SAINet - rival: where it
    straddles 0 there is no ranking."""
    if interval is None:
        return "n/a (too few seeds)"
    low, high = interval
    if low <= 0 <= high:
        return "no significant difference"
    return "SAINet higher" if low > 0 else "SAINet lower"


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    """Welch's t statistic and p-value of a against b; (None, None) with fewer than two seeds a side."""
    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2:
        return None, None
    result = ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def auc_table(frame: pd.DataFrame, models: list[str], scenarios: list[str]) -> tuple[str, dict]:
    """Markdown table of AUC mean +- std (best per scenario in bold) and the t-test of SAINet against
    the best baseline in each scenario."""
    stats = frame.groupby(["model", "scenario"])["auc"].agg(["mean", "std", "count"])
    header = "| model | seeds | " + " | ".join(scenarios) + " |\n|---|---|" + "---|" * len(scenarios) + "\n"
    best = {s: stats.xs(s, level="scenario")["mean"].idxmax() for s in scenarios
            if s in stats.index.get_level_values("scenario")}
    lines = []
    for model in models:
        cells = []
        for s in scenarios:
            if (model, s) not in stats.index:
                cells.append("n/a")
                continue
            mean, std, n = stats.loc[(model, s)]
            text = f"{mean:.4f}" if n < 2 else f"{mean:.4f} ± {std:.4f}"    # one seed has no spread
            text = f"**{text}**" if best.get(s) == model else text
            interval = confidence_interval(seed_aucs(frame, model, s))
            cells.append(text if interval is None else f"{text} [{interval[0]:.4f}, {interval[1]:.4f}]")
        seeds = frame[frame.model == model]["seed"].nunique()
        lines.append(f"| {model} | {seeds} | " + " | ".join(cells) + " |")
    tests = {}
    baselines = [m for m in models if not m.startswith("sainet")]
    for s in scenarios:
        if (MAIN_MODEL, s) not in stats.index or not baselines:
            continue
        means = {m: stats.loc[(m, s)]["mean"] for m in baselines if (m, s) in stats.index}
        if not means:
            continue
        rival = max(means, key=means.get)
        ours, theirs = seed_aucs(frame, MAIN_MODEL, s), seed_aucs(frame, rival, s)
        t, p = welch(ours, theirs)
        interval = difference_interval(ours, theirs)
        tests[s] = {"best_baseline": rival, "sainet_mean": float(stats.loc[(MAIN_MODEL, s)]["mean"]),
                    "baseline_mean": float(means[rival]), "difference": float(ours.mean() - theirs.mean()),
                    "difference_ci95": interval, "seeds": [len(ours), len(theirs)], "t": t, "p": p,
                    "outcome": interval_outcome(interval)}
    return header + "\n".join(lines) + "\n", tests


def ablation_tests(frame: pd.DataFrame, ablations: list[str], scenarios: list[str]) -> tuple[str, dict]:
    """Welch's t-test of each ablation against full SAINet per scenario (positive t: the variant
    scores higher), as a markdown table and a dict."""
    lines = ["| variant | scenario | variant - SAINet | t | p |", "|---|---|---|---|---|"]
    tests: dict[str, dict] = {}
    for variant in ablations:
        for s in scenarios:
            ours, full = seed_aucs(frame, variant, s), seed_aucs(frame, MAIN_MODEL, s)
            if not len(ours) or not len(full):
                continue
            t, p = welch(ours, full)
            difference = float(ours.mean() - full.mean())
            tests.setdefault(variant, {})[s] = {"difference": difference, "t": t, "p": p}
            lines.append(f"| {variant} | {s} | {difference:+.4f} | {format_stat(t, 3)} | {format_stat(p, 3)} |")
    return "\n".join(lines) + "\n", tests


def write_reports(out_dir: Path, config: StudyConfig, scenarios: list[str], command: str, seconds: float,
                  options: DataOptions | None = None, references: dict | None = None,
                  planned: int | None = None, cells_trained: int = 0) -> dict:
    cells = cells_folder(config, out_dir)
    frame, stale = current_cells(load_cells(cells), config, cells)
    finished_cells = frame.drop_duplicates(["model", "variant", "seed"])   # one row per cell
    frame.to_csv(out_dir / "results.csv", index=False)
    scenario_columns = [*scenarios, "overall"]
    main = frame[frame.variant == "main"]
    models = [m for m in config.models if m in set(main.model)]
    table, tests = auc_table(main, models, scenario_columns)
    reference_lines = []
    if references:
        reference_lines = ["References (not models): " + "; ".join(
            f"{name}: " + ", ".join(f"{s} {aucs[s]:.4f}" for s in scenario_columns if aucs.get(s) is not None)
            for name, aucs in references.items()), ""]
    progress = [] if planned is None or len(finished_cells) >= planned else [
        f"**Partial: {len(finished_cells)} of {planned} cells finished"
        + (f" ({stale} more trained at a learning rate no longer chosen, left out until retrained)"
           if stale else "") + ".**", ""]
    tuning = tuning_report(config, cells)
    (out_dir / "tuning.json").write_text(json.dumps(tuning, indent=2))
    setting = config.train
    lines = ["# Per-scenario test AUC", "",
             f"Mean ± std over seeds [95% confidence interval of the mean] (mean alone for one seed; best in bold). "
             f"Each cell trained at batch {setting.batch_size}, validation AUC every "
             f"{setting.eval_every_steps or 'epoch'} steps and at each epoch's end, early stop after "
             f"{setting.patience} evaluations without a better one, budget {setting.epochs} epochs"
             + (f" or {setting.max_steps} steps" if setting.max_steps else "")
             + ", best-validation weights restored; "
             + ("each model at its learning rate chosen on validation (below)." if config.lr_grid
                else f"lr {setting.learning_rate:g} for every model."), "",
             *progress, table,
             "", *reference_lines,
             "## SAINet against the best baseline (Welch's t-test)", "",
             "Where the 95% interval of SAINet - baseline straddles 0 the outcome is \"no significant difference\", "
             "not a ranking.", "",
             "| scenario | best baseline | SAINet | baseline | SAINet - baseline [95% CI] | t | p | outcome |",
             "|---|---|---|---|---|---|---|---|"]
    if not tests:
        missing = "SAINet" if MAIN_MODEL not in models else "baseline"
        lines.append(f"| (no {missing} in this study) | | | | | | | |")
    for s, t in tests.items():
        interval = t["difference_ci95"]
        difference = f"{t['difference']:+.4f}" + ("" if interval is None else
                                                  f" [{interval[0]:+.4f}, {interval[1]:+.4f}]")
        lines.append(f"| {s} | {t['best_baseline']} | {t['sainet_mean']:.4f} | {t['baseline_mean']:.4f} | "
                     f"{difference} | {format_stat(t['t'], 4)} | {format_stat(t['p'], 4)} | {t['outcome']} |")
    lines += tuning_lines(tuning, config)
    lines += convergence_lines(finished_cells)
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")

    ablation_models = [m for m in ABLATIONS if m in set(main.model)]
    ablation, _ = auc_table(main, ablation_models, scenario_columns)
    variants = [m for m in ablation_models if m != MAIN_MODEL]
    ablation_table, ablation_t_tests = ablation_tests(main, variants, scenario_columns) \
        if MAIN_MODEL in ablation_models else ("", {})
    history_paths = history_path_report(cells, config)
    (out_dir / "ablation.md").write_text(
        "# Ablations (the paper's Table 3)\n\n" + ablation
        + ("\n## Each variant against SAINet (Welch's t-test)\n\n" + ablation_table if ablation_table else "")
        + history_path_markdown(history_paths))
    if ablation_models:
        plot_ablation(main[main.model.isin(ablation_models)], ablation_models, scenario_columns,
                      out_dir / "ablation.png")
    curves = curves_report(frame, cells) if config.curves else {}
    if curves:
        plot_curves(curves, out_dir)
        (out_dir / "curves.md").write_text(curves_markdown(curves))
    readings = readings_report(cells, config.reading_seeds)
    if readings:
        (out_dir / "readings.md").write_text(readings_markdown(readings, config.reading_seeds))

    meta = {"command": command, "commit": git_commit(), "machine": f"{platform.node()} {platform.machine()} "
            f"{platform.processor() or ''} cpus={os.cpu_count()}".strip(),
            "python": platform.python_version(), "finished_at": dt.datetime.now(dt.UTC).isoformat(),
            "wall_seconds_this_invocation": seconds,
            "cell_seconds_total": float(finished_cells["seconds"].sum()),
            "cell_cpu_seconds_total": float(finished_cells["cpu_seconds"].fillna(0).sum()),
            "cells": len(finished_cells), "cells_planned": planned,
            "data": None if options is None else dataclasses.asdict(options),
            "train": dataclasses.asdict(config.train), "model_overrides": dict(config.model_overrides),
            "protocol": config.protocol,
            "protocol_model_overrides": PROTOCOL_MODEL_OVERRIDES.get(config.protocol, {}),
            "seeds": list(config.main_seeds),
            "cells_dir": str(cells), "lr_grid": list(config.lr_grid), "tune_seed": config.tune_seed,
            "learning_rates": {m: v["chosen_lr"] for m, v in tuning.items()},
            "stopped_at_cap_improving": sorted(
                cell_name(r.model, r.variant, r.seed) for r in finished_cells.itertuples()
                if r.stop_reason == "cap"),
            "t_tests": tests, "ablation_t_tests": ablation_t_tests, "curves": curves, "readings": readings,
            "history_path": history_paths, "references": references}
    # Every invocation's wall time is kept: a study that ran over several sittings reports all of them.
    previous = out_dir / "study.json"
    invocations = json.loads(previous.read_text()).get("invocations", []) if previous.exists() else []
    meta["invocations"] = [*invocations, {"command": command, "commit": meta["commit"],
                                          "finished_at": meta["finished_at"], "wall_seconds": seconds,
                                          "cells_trained": cells_trained, "trained": cells_trained > 0}]
    # Invocations that trained nothing (report-only rebuilds, reruns of a finished study) are left out
    # of the sum; an invocation stopped before its end is not listed (its finished cells' own times are
    # in cell_seconds_total).
    meta["wall_seconds_all_invocations"] = float(sum(i["wall_seconds"] for i in meta["invocations"]
                                                     if i.get("trained", True)))
    (out_dir / "study.json").write_text(json.dumps(meta, indent=2))
    return meta


HISTORY_PATH_FIGURES = ("sie_entropy_ratio_last_block", "tif_entropy_ratio", "cosine_raw", "cosine_after_blocks")


def history_path_means(cells: list[dict]) -> dict:
    """The mean over cells of what their SAINet's history path does (`model.diagnostics`)."""
    figures = [c["history_path"] for c in cells if c.get("history_path") and "cosine_raw" in c["history_path"]]
    values = {name: [] for name in HISTORY_PATH_FIGURES}
    for f in figures:
        last_sie = f["sie_entropy_ratio"][-1] if f["sie_entropy_ratio"] else None
        for name, value in zip(HISTORY_PATH_FIGURES, (last_sie, f["tif_entropy_ratio"], f["cosine_raw"],
                                                      f["cosine_after_blocks"])):
            if value is not None:
                values[name].append(value)
    return {"cells": len(figures), **{name: float(np.mean(v)) if v else None for name, v in values.items()}}


def history_path_columns(path: dict) -> str:
    """SIE entropy / uniform | TIF entropy / uniform | cosine raw → after blocks (table cells)."""
    def figure(name: str) -> str:
        return "n/a" if path.get(name) is None else f"{path[name]:.3f}"
    return (f"{figure('sie_entropy_ratio_last_block')} | {figure('tif_entropy_ratio')} | "
            f"{figure('cosine_raw')} → {figure('cosine_after_blocks')}")


HISTORY_PATH_HEADER = "| SIE entropy / uniform | TIF entropy / uniform | cosine raw → after blocks |"


def history_path_report(cells_dir: Path, config: StudyConfig) -> dict:
    """Per SAINet-family model of the main table: what its history path does, over its seeds."""
    report = {}
    for model in config.models:
        cells = [c for c in (read_cell(cells_dir, model, "main", s) for s in config.main_seeds) if c]
        figures = history_path_means(cells)
        if figures["cells"]:
            report[model] = figures
    return report


def history_path_markdown(report: dict) -> str:
    if not report:
        return ""
    lines = ["", "## What the history path does", "",
             "On validation (`model/diagnostics.py`), mean over the seeds: attention entropy relative to uniform "
             "(1 = uniform: the block mean-pools the behaviours) of the last SIE block and of TIF, and the mean "
             "pairwise cosine of a request's behaviours as item embeddings and after the blocks (near 1: the "
             "behaviours have become one vector). n/a: the model has no such block.", "",
             "| model | seeds " + HISTORY_PATH_HEADER, "|---|---|---|---|---|"]
    lines += [f"| {model} | {figures['cells']} | {history_path_columns(figures)} |" for model, figures in report.items()]
    return "\n".join(lines) + "\n"


def readings_report(cells_dir: Path, seeds: int) -> dict:
    """Per SAINet reading: validation AUC (overall) over seeds 0..seeds-1, the test AUC beside it (for
    the record, never for the choice), what its history path does, and, once every reading has all
    its seeds, the chosen one (`choose_reading`). Empty when the study runs no readings."""
    if not seeds:
        return {}
    report: dict = {"seeds": seeds, "readings": {}}
    for name, overrides in READINGS.items():
        variant = f"{READING_PREFIX}{name}" if overrides else "main"
        cells = [c for c in (read_cell(cells_dir, MAIN_MODEL, variant, s) for s in range(seeds)) if c]
        valid = np.array([c["valid_auc"] for c in cells if c.get("valid_auc") is not None], dtype=float)
        test = [next(r["auc"] for r in c["rows"] if r["scenario"] == "overall") for c in cells]
        report["readings"][name] = {
            "overrides": overrides, "seeds_finished": len(cells),
            "valid_auc_mean": float(valid.mean()) if len(valid) else None,
            "valid_auc_std": float(valid.std(ddof=1)) if len(valid) > 1 else None,
            "valid_auc_per_seed": valid.tolist(),
            "test_auc_mean": float(np.mean(test)) if test else None,
            "history_path": history_path_means(cells)}
    literal = report["readings"]["literal"]["valid_auc_per_seed"]
    for entry in report["readings"].values():     # paired by seed: the seeds share data order and init
        ours = entry["valid_auc_per_seed"]
        n = min(len(ours), len(literal))
        entry["valid_minus_literal"] = float(np.mean(np.subtract(ours[:n], literal[:n]))) if n else None
        entry["paired_t_p"] = float(scipy_stats.ttest_rel(ours[:n], literal[:n]).pvalue) \
            if n > 1 and ours[:n] != literal[:n] else None
    complete = len([r for r in report["readings"].values() if r["seeds_finished"] >= seeds]) == len(READINGS)
    report["chosen"] = choose_reading(report["readings"]) if complete else None
    return report


def choose_reading(readings: dict, alpha: float = 0.05) -> str:
    """The paper's literal reading unless another beats it on validation significantly (a positive
    paired difference with p < alpha); among those, the best mean. A gain inside the seeds' noise
    is no evidence for changing the model, so it does not."""
    better = {name: r for name, r in readings.items() if name != "literal"
              and (r["valid_minus_literal"] or 0) > 0 and r["paired_t_p"] is not None and r["paired_t_p"] < alpha}
    return max(better, key=lambda name: better[name]["valid_auc_mean"]) if better else "literal"


def readings_markdown(report: dict, seeds: int) -> str:
    lines = ["# SAINet's readings, compared on validation", "",
             f"Overall validation AUC (best evaluation) of each reading over seeds 0-{seeds - 1}; the chosen reading "
             "in bold: the literal one unless another is better on validation significantly (paired t-test, "
             "p < 0.05; among those, the best mean). The difference to the literal reading is paired by seed (same data order), "
             "with the paired t-test's p. Test AUC is listed for the record and is never used for the choice.", "",
             "The history path (validation, `model/diagnostics.py`; mean over the seeds that recorded it): attention "
             "entropy relative to uniform (1 = uniform) of the last SIE block and of TIF, and the mean pairwise cosine "
             "of a request's behaviours as item embeddings and after the blocks.", "",
             "| reading | overrides | seeds | validation AUC | - literal | p | test AUC (overall) " + HISTORY_PATH_HEADER,
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["readings"].items():
        valid = "…" if r["valid_auc_mean"] is None else f"{r['valid_auc_mean']:.4f}" + (
            "" if r["valid_auc_std"] is None else f" ± {r['valid_auc_std']:.4f}")
        label = f"**{name}**" if name == report["chosen"] else name
        overrides = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "(none)"
        delta = "" if r["valid_minus_literal"] is None or name == "literal" else f"{r['valid_minus_literal']:+.4f}"
        test = "…" if r["test_auc_mean"] is None else f"{r['test_auc_mean']:.4f}"
        lines.append(f"| {label} | {overrides} | {r['seeds_finished']} | {valid} | {delta} | "
                     f"{format_stat(r['paired_t_p'], 3)} | {test} | {history_path_columns(r['history_path'])} |")
    lines += ["", f"Chosen: {report['chosen'] or 'pending (not every reading has all its seeds)'}."]
    return "\n".join(lines) + "\n"


def tuning_report(config: StudyConfig, cells: Path) -> dict:
    """Per model: the grid, each point's validation AUC (seed `tune_seed`) and the chosen lr."""
    if not config.lr_grid:
        return {}
    return {model: {"seed": config.tune_seed, "grid": tuning_points(config, cells, model),
                    "chosen_lr": chosen_lr(config, cells, model)} for model in config.models}


def tuning_lines(tuning: dict, config: StudyConfig) -> list[str]:
    if not tuning:
        return []
    lines = ["", f"## Learning rate, chosen on validation (seed {config.tune_seed}; test AUC is never used)", "",
             "Overall validation AUC at each grid point's best evaluation (the step it was reached); the chosen "
             "point in bold.", "",
             "| model | " + " | ".join(f"lr {lr:g}" for lr in config.lr_grid) + " | chosen |",
             "|---|" + "---|" * (len(config.lr_grid) + 1)]
    for model, entry in tuning.items():
        texts = []
        for point in entry["grid"]:
            if not point["finished"]:
                texts.append("…")
                continue
            text = "n/a" if point.get("valid_auc") is None else f"{point['valid_auc']:.4f} (step {point['best_step']})"
            if point.get("stop_reason") == "cap":
                text += " cap!"
            texts.append(f"**{text}**" if point["lr"] == entry["chosen_lr"] else text)
        chosen = "pending" if entry["chosen_lr"] is None else f"{entry['chosen_lr']:g}"
        lines.append(f"| {model} | " + " | ".join(texts) + f" | {chosen} |")
    return lines


def convergence_lines(finished_cells: pd.DataFrame) -> list[str]:
    """Which cells reached their step budget while their last evaluation was still their best."""
    known = finished_cells[finished_cells.stop_reason.notna()]
    if not len(known):
        return []
    # a cell that reached its budget before its patience ran out: its best may lie beyond the budget
    capped = known[known.stop_reason == "cap"]
    lines = ["", "## Convergence", "",
             f"Of {len(known)} cells, {int((known.stop_reason == 'early_stop').sum())} stopped early on validation "
             f"AUC; {len(capped)} reached the step budget while still improving (before early stopping acted)"
             + (":" if len(capped) else ".")]
    for row in capped.itertuples():
        lines.append(f"- `{cell_name(row.model, row.variant, row.seed)}` (best step {row.best_step} of {row.steps})")
    main = known[known.variant == "main"]
    if len(main):
        lines += ["", "| model | learning rate | validation AUC (overall, mean ± std) | mean best step | mean steps trained "
                  "| mean CPU s per cell |", "|---|---|---|---|---|---|"]
        trained = main[main.cpu_seconds > 0]
        for model, group in main.groupby("model", sort=False):
            cpu = trained[trained.model == model]["cpu_seconds"]
            rates = ", ".join(f"{lr:g}" for lr in sorted(group.learning_rate.dropna().unique()))
            valid = group.valid_auc.dropna()
            valid_text = "n/a" if not len(valid) else (f"{valid.mean():.4f}" if len(valid) < 2
                                                       else f"{valid.mean():.4f} ± {valid.std():.4f}")
            lines.append(f"| {model} | {rates} | {valid_text} | {group.best_step.mean():.0f} | {group.steps.mean():.0f} | "
                         + (f"{cpu.mean():.1f}" if len(cpu) else "n/a") + " |")
    return lines


def plot_ablation(frame: pd.DataFrame, models: list[str], scenarios: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(scenarios), 4))
    width = 0.8 / max(len(models), 1)
    stats = frame.groupby(["model", "scenario"])["auc"].agg(["mean", "std"])
    for i, model in enumerate(models):
        means = [stats.loc[(model, s)]["mean"] if (model, s) in stats.index else np.nan for s in scenarios]
        stds = [stats.loc[(model, s)]["std"] if (model, s) in stats.index else np.nan for s in scenarios]
        ax.bar(np.arange(len(scenarios)) + i * width, means, width, yerr=np.nan_to_num(stds), label=model)
    ax.set_xticks(np.arange(len(scenarios)) + width * (len(models) - 1) / 2, scenarios)
    ax.set_ylabel("test AUC")
    finite = frame["auc"].dropna()
    if len(finite):
        ax.set_ylim(finite.min() - 0.01, finite.max() + 0.01)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def curves_report(frame: pd.DataFrame, cells_dir: Path) -> dict:
    """Per hyper-parameter of `CURVES` with at least two points: each value's overall test and
    validation AUC (mean, std, seeds; the default's point is the main table's cells), its
    validation AUC against the default's, paired by seed (the seeds share data order), with the
    paired t-test's p, and what its history path does (`history_path_means`). The curves are a
    description, as the paper's Figure 4; nothing is chosen from them, and never on test."""
    defaults = dataclasses.asdict(MODEL_REGISTRY[MAIN_MODEL].model_class.Config())
    overall = frame[(frame.model == MAIN_MODEL) & (frame.scenario == "overall")]
    default_rows = overall[overall.variant == "main"]
    default_valid = dict(zip(default_rows.seed, default_rows.valid_auc))
    summary = {}
    for name, values in CURVES.items():
        points = []
        for value in values:
            rows = overall[overall.variant == f"{name}={value}"]
            if value == defaults[name]:
                rows = pd.concat([rows, default_rows])
            if not len(rows):
                continue
            valid = rows.valid_auc.dropna()
            is_default = value == defaults[name]
            pairs = [(v, default_valid.get(seed)) for seed, v in zip(rows.seed, rows.valid_auc)]
            pairs = np.array([p for p in pairs if pd.notna(p[0]) and pd.notna(p[1])],
                             dtype=float).reshape(-1, 2)
            difference = pairs[:, 0] - pairs[:, 1]
            points.append({
                "value": value, "default": is_default, "seeds": len(rows),
                "auc_mean": float(rows.auc.mean()),
                "auc_std": float(rows.auc.std()) if len(rows) > 1 else None,
                "valid_auc_mean": float(valid.mean()) if len(valid) else None,
                "valid_auc_std": float(valid.std()) if len(valid) > 1 else None,
                "valid_minus_default": None if is_default or not len(pairs) else float(difference.mean()),
                "paired_t_p": (float(scipy_stats.ttest_rel(pairs[:, 0], pairs[:, 1]).pvalue)
                               if not is_default and len(pairs) > 1 and difference.any() else None),
                "history_path": history_path_means([read_cell(cells_dir, MAIN_MODEL, variant, seed) or {}
                                                    for variant, seed in zip(rows.variant, rows.seed)])})
        if len(points) >= 2:     # the default alone (the main cells) is no curve yet
            summary[name] = points
    return summary


def plot_curves(summary: dict, out_dir: Path) -> None:
    """One PNG per hyper-parameter: overall test and validation AUC (mean ± std over seeds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, points in summary.items():
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        xs = [p["value"] for p in points]
        for split, key in (("test", "auc"), ("validation", "valid_auc")):
            shown = [(x, p[f"{key}_mean"], p[f"{key}_std"] or 0.0) for x, p in zip(xs, points)
                     if p[f"{key}_mean"] is not None]
            if shown:
                ax.errorbar(*zip(*shown), marker="o", capsize=3, label=split)
        ax.set(xlabel=name, ylabel="AUC (overall)", title=f"SAINet: {name}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / f"curve_{name}.png", dpi=100)
        plt.close(fig)


def curves_markdown(summary: dict) -> str:
    def spread(mean: float | None, std: float | None) -> str:
        return "…" if mean is None else f"{mean:.4f}" + ("" if std is None else f" ± {std:.4f}")

    lines = ["# SAINet's hyper-parameter curves (the paper's Figure 4)", "",
             "Overall AUC of SAINet at each value of one hyper-parameter, the others at their defaults (in "
             "bold; its point is the main table's cells, so it has more seeds). The difference to the "
             "default is on validation, paired by seed (same data order), with the paired t-test's p. The "
             "curves describe the model; nothing is chosen from them, and never on test. The history "
             "path's columns as in `ablation.md` (validation, mean over the seeds that recorded it). "
             "Plots: `curve_<name>.png`."]
    for name, points in summary.items():
        lines += ["", f"## {name}", "",
                  "| value | seeds | validation AUC | - default (validation) | p | test AUC "
                  + HISTORY_PATH_HEADER,
                  "|---|---|---|---|---|---|---|---|---|"]
        for p in points:
            value = f"**{p['value']}**" if p["default"] else str(p["value"])
            delta = "" if p["valid_minus_default"] is None else f"{p['valid_minus_default']:+.4f}"
            valid, test = spread(p["valid_auc_mean"], p["valid_auc_std"]), spread(p["auc_mean"], p["auc_std"])
            lines.append(f"| {value} | {p['seeds']} | {valid} | {delta} | {format_stat(p['paired_t_p'], 3)} "
                         f"| {test} | {history_path_columns(p['history_path'])} |")
    return "\n".join(lines) + "\n"
