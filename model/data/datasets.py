"""The registry of built-in datasets: name -> adapter, default split and whether files are needed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from model.data.amazon_cdsr import load_amazon_cdsr
from model.data.examples import PreparedData, SplitMethod, build_prepared_data
from model.data.logs import InteractionLog, read_log_file, validate_log
from model.data.movielens import load_movielens
from model.data.synthetic import SyntheticConfig, load_synthetic


@dataclass(frozen=True)
class DatasetSpec:
    load: Callable[..., InteractionLog]
    default_split: SplitMethod
    splits: tuple[SplitMethod, ...]
    needs_data_dir: bool
    description: str


def _load_user_logs(data_dir: Path, numeric: tuple[str, ...] = (), **_) -> InteractionLog:
    return validate_log(read_log_file(data_dir), numeric=numeric)


DATASETS: dict[str, DatasetSpec] = {
    "synthetic": DatasetSpec(load_synthetic, "time", ("time", "random", "leave-last-out"), False,
                             "generated multi-scenario world with known click probabilities"),
    "amazon-cdsr": DatasetSpec(load_amazon_cdsr, "given", ("given",), True,
                               "C2DSR-format folder (e.g. Amazon Food-Kitchen); leave-last-out split"),
    "movielens-1m": DatasetSpec(load_movielens, "time", ("time", "random"), True,
                                "MovieLens-1M (RecBole atomic or GroupLens .dat files)"),
    "logs": DatasetSpec(_load_user_logs, "time", ("time", "random", "leave-last-out", "given"), True,
                        "your own canonical interaction log (parquet/CSV file or folder)"),
}


# protocol -> the datasets it is defined for (the default protocol fits every dataset)
PROTOCOLS: dict[str, tuple[str, ...]] = {"default": tuple(DATASETS), "scenario-wise-rec": ("movielens-1m",)}


@dataclass(frozen=True)
class DataOptions:
    """Everything that determines a prepared dataset; saved with each run so it can be rebuilt."""

    dataset: str = "synthetic"
    data_dir: str | None = None
    history_length: int = 50
    split: SplitMethod | None = None
    split_seed: int = 1234
    negatives_per_positive: int = 4
    negative_seed: int = 2024
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    # "default", or "scenario-wise-rec" (movielens-1m only): that benchmark's features and no
    # behaviour history, so its published baselines can be checked against ours.
    protocol: str = "default"
    # `logs` only: columns read as numbers (dense features) beside the fractional float columns
    numeric: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "numeric", tuple(self.numeric))   # a JSON list when a run's options are read back

    def resolved_split(self) -> SplitMethod:
        return self.split or DATASETS[self.dataset].default_split


def check_data_options(options: DataOptions) -> None:
    """Rejects bad options before anything is read."""
    if options.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {options.dataset!r}; choose from {sorted(DATASETS)}")
    spec = DATASETS[options.dataset]
    split = options.resolved_split()
    if split not in spec.splits:
        raise ValueError(f"dataset {options.dataset!r} supports splits {spec.splits}, not {split!r}")
    if spec.needs_data_dir and not options.data_dir:
        raise ValueError(f"dataset {options.dataset!r} needs --data-dir")
    if options.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {options.protocol!r}; choose from {sorted(PROTOCOLS)}")
    if options.protocol != "default" and options.dataset not in PROTOCOLS[options.protocol]:
        raise ValueError(f"protocol {options.protocol!r} is defined for {PROTOCOLS[options.protocol]}, "
                         f"not {options.dataset!r}")
    if options.history_length < 1:
        raise ValueError("history length must be at least 1")
    if options.numeric and options.dataset != "logs":
        raise ValueError(f"--numeric declares columns of your own log (--dataset logs), not of {options.dataset!r}")


def load_log(options: DataOptions) -> InteractionLog:
    """The dataset's canonical interaction log."""
    check_data_options(options)
    return DATASETS[options.dataset].load(
        data_dir=Path(options.data_dir) if options.data_dir else None,
        negatives_per_positive=options.negatives_per_positive,
        negative_seed=options.negative_seed, synthetic=options.synthetic, protocol=options.protocol,
        numeric=tuple(options.numeric))


def prepare_dataset(options: DataOptions) -> PreparedData:
    log = load_log(options)
    return build_prepared_data(log, options.dataset, options.history_length, options.resolved_split(),
                               options.split_seed)
