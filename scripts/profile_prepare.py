"""Where `sainet data prepare --engine duckdb` spends its time: the wall seconds of each engine step
(materialised tables, queries, split writes) of one preparation, and the process's peak RSS.

    .venv/bin/python scripts/profile_prepare.py LOG_DIR [--out PREPARED] [--threads 1] [--memory-limit 2GB]

LOG_DIR holds a canonical log (e.g. from `sainet data generate --dataset synthetic ... --out LOG_DIR`).
It profiles the `model` package on the path (PYTHONPATH=OTHER_CHECKOUT profiles another commit's).
The whole-pipeline figures (against DuckDB's plain sort, per log size) are `scripts/bench_data.py`'s.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from model.data import engines
from model.data.logs import log_files

STEPS = ("materialize", "rows", "write_split", "to_pandas")


def timed_engine(timings: list[tuple[str, str, float]]) -> None:
    """Wraps the DuckDB engine's steps so that each call appends (step, what, seconds)."""
    for name in STEPS:
        original = getattr(engines._DuckDBEngine, name)

        def wrapper(self, first, *rest, _original=original, _name=name, **kwargs):
            started = time.perf_counter()
            result = _original(self, first, *rest, **kwargs)
            what = first if len(first) < 40 else " ".join(first.split())[:40]
            timings.append((_name, what, time.perf_counter() - started))
            return result
        setattr(engines._DuckDBEngine, name, wrapper)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log_dir")
    parser.add_argument("--out", help="prepared folder (default: a temporary one, removed)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory-limit", default="2GB")
    parser.add_argument("--history-length", type=int, default=50)
    parser.add_argument("--split", default="time")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="profile-prepare-"))
    timings: list[tuple[str, str, float]] = []
    timed_engine(timings)
    started = time.perf_counter()
    summary = engines.prepare_log_files(
        log_files(Path(args.log_dir)), out, dataset="logs", history_length=args.history_length, split=args.split,
        split_seed=0, engine=engines.EngineOptions(memory_limit=args.memory_limit, threads=args.threads))
    total = time.perf_counter() - started
    for step, what, seconds in timings:
        if seconds >= 0.1:
            print(f"{seconds:8.2f} s  {step:12s} {what}")
    print(f"{total:8.2f} s  total, {sum(summary['examples'].values()):,} examples, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:,.0f} MiB")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
