"""The data-scale benchmark of issue 15: generate, prepare and train on synthetic logs of growing size,
with wall time, throughput and peak memory of each step, run as a user would run them (the `sainet`
commands, each in a process of its own).

    .venv/bin/python scripts/bench_data.py --out docs/bench/data [--sizes 1M,5M,20M] [--work /scratch]

Per size (events = users x 50):
  generate   `sainet data generate`: the canonical log as parquet shards
  sort       DuckDB's own plain sort of the same log (user, time) into one parquet file: the floor
             that `prepare` is measured against (the issue's goal: within 2x of it)
  prepare    `sainet data prepare --engine duckdb` (out of core)
  memory     `sainet data prepare --engine memory` (today's pandas path) where it fits (--memory-sizes)
  train      `sainet train --prepared`, --train-steps optimizer steps of the streamed path (every size
             the same number, so the RSS column says whether memory grows with the dataset)
  epoch      one whole epoch of the streamed path at the sizes in --epoch-sizes (and the model
             --epoch-model), to show the stream runs to its end in bounded memory

With --ddp-data AMAZON_DIR, also: `sainet train --dataset amazon-cdsr --nproc P` for P = 1 and 2 at the
same global batch and seed (the converging defaults: early stopping on validation AUC), each run's
validation AUC, test AUC and examples/s (issue 15: two processes within 0.003 of one).

Peak RSS is the sum over the command's process tree, sampled every 50 ms (psutil), so worker
processes count. Results: <out>/bench_data.json and <out>/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
SAINET = str(Path(sys.executable).with_name("sainet"))
EVENTS_PER_USER = 50


def parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("KM")) * scale)


def measured(command: list[str], env: dict | None = None) -> dict:
    """Runs `command`; wall seconds, peak RSS (MiB) of its process tree, exit code and output tail."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})})
    peak = 0
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    root = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    reader.join(timeout=10)
    result = {"command": " ".join(command), "seconds": time.perf_counter() - started,
              "peak_rss_mib": peak / 2**20, "returncode": process.returncode}
    if process.returncode:
        result["output_tail"] = "".join(output)[-3000:]
    return result


def plain_sort(log_dir: Path, out: Path, memory_limit: str, threads: int, temp_dir: Path) -> list[str]:
    script = (
        "import duckdb, sys; c = duckdb.connect(config={'memory_limit': sys.argv[3], 'threads': int(sys.argv[4]),"
        " 'temp_directory': sys.argv[5], 'preserve_insertion_order': False});"
        " c.execute(f\"COPY (SELECT * FROM read_parquet('{sys.argv[1]}/part-*.parquet') ORDER BY user_id, timestamp)"
        " TO '{sys.argv[2]}' (FORMAT parquet)\")")
    return [sys.executable, "-c", script, str(log_dir), str(out), memory_limit, str(threads), str(temp_dir)]


def examples_in(prepared: Path) -> dict:
    return json.loads((prepared / "prepared.json").read_text()).get("examples", {})


def bench_size(events: int, args, work: Path) -> dict:
    users = events // EVENTS_PER_USER
    label = f"{events / 1e6:g}M"
    log_dir, prepared, memory_prepared = work / f"log-{label}", work / f"prepared-{label}", work / f"memory-{label}"
    synthetic = ["--synthetic-users", str(users), "--synthetic-events", str(EVENTS_PER_USER),
                 "--synthetic-items", str(args.items)]
    row: dict = {"events": events, "users": users}
    for path in (log_dir, prepared, memory_prepared):
        shutil.rmtree(path, ignore_errors=True)
    row["generate"] = measured([SAINET, "data", "generate", "--dataset", "synthetic", *synthetic, "--out", str(log_dir)])
    (work / "spill").mkdir(parents=True, exist_ok=True)
    engine = ["--memory-limit", args.memory_limit, "--engine-threads", str(args.threads), "--temp-dir", str(work / "spill")]
    row["sort"] = measured(plain_sort(log_dir, work / "sorted.parquet", args.memory_limit, args.threads, work / "spill"))
    (work / "sorted.parquet").unlink(missing_ok=True)
    row["prepare"] = measured([SAINET, "data", "prepare", "--dataset", "logs", "--data-dir", str(log_dir),
                               "--history-length", str(args.history_length), *engine, "--out", str(prepared)])
    if row["prepare"]["returncode"] == 0:
        row["examples"] = examples_in(prepared)
    if events in args.memory_sizes:
        row["memory"] = measured([SAINET, "data", "prepare", "--dataset", "synthetic", *synthetic, "--engine", "memory",
                                  "--history-length", str(args.history_length), "--out", str(memory_prepared)])
        shutil.rmtree(memory_prepared, ignore_errors=True)
    train = [SAINET, "train", "--prepared", str(prepared), "--threads", str(args.threads), "--eval-every-steps", "0"]
    if row["prepare"]["returncode"] == 0:
        row["train"] = measured([*train, "--model", args.train_model, "--max-steps", str(args.train_steps),
                                 "--batch-size", str(args.batch_size), "--out", str(work / f"run-{label}")])
        row["train"]["metrics"] = read_metrics(work / f"run-{label}")
        if events in args.epoch_sizes:
            row["epoch"] = measured([*train, "--model", args.epoch_model, "--epochs", "1",
                                     "--batch-size", str(args.batch_size), "--out", str(work / f"epoch-{label}")])
            row["epoch"]["metrics"] = read_metrics(work / f"epoch-{label}")
    if not args.keep:
        for path in (log_dir, prepared):
            shutil.rmtree(path, ignore_errors=True)
    return row


def bench_processes(args, work: Path) -> list[dict]:
    rows = []
    for processes in (1, 2):
        run = work / f"amazon-nproc{processes}"
        shutil.rmtree(run, ignore_errors=True)
        step = measured([SAINET, "train", "--dataset", "amazon-cdsr", "--data-dir", args.ddp_data, "--nproc",
                         str(processes), "--threads", "1", "--seed", "0", "--out", str(run)])
        step["processes"] = processes
        step["metrics"] = read_metrics(run)
        if step["metrics"]:
            step["metrics"]["test_auc"] = json.loads((run / "metrics.json").read_text())["auc"]["overall"]
        rows.append(step)
    return rows


def read_metrics(run: Path) -> dict | None:
    path = run / "metrics.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    return {k: metrics.get(k) for k in ("steps", "examples_per_second", "train_seconds", "valid_auc", "train_examples")}


def succeeded(step: dict | None) -> bool:
    return bool(step) and not step["returncode"]


def all_under(report: dict, mib: float) -> bool:
    """Whether every successful out-of-core step (prepare, train, epoch) peaked below `mib`."""
    return all(row[step]["peak_rss_mib"] < mib for row in report["rows"] for step in ("prepare", "train", "epoch")
               if succeeded(row.get(step)))


def markdown(report: dict) -> str:
    def cell(step: dict | None, key: str, digits: int = 0) -> str:
        if not step:
            return "–"
        if step.get("returncode"):
            return f"failed ({step['returncode']})"
        return f"{step[key]:,.{digits}f}"

    def rate(metrics: dict) -> str:
        return "–" if not metrics.get("examples_per_second") else f"{metrics['examples_per_second']:,.0f}"

    lines = ["# Data scale: generate, prepare and train on synthetic logs", "",
             f"Command: `{report['command']}`  ", f"Commit {report['commit']}, {report['machine']}, {report['finished_at']}.",
             *([f"Conditions: {report['conditions']}"] if report.get("conditions") else []),
             "", "Where `prepare` spends its time, step by step: `scripts/profile_prepare.py LOG_DIR`; what evaluation "
             "holds at its peak: `scripts/profile_eval_memory.py RUN PREPARED`.",
             "", "Wall seconds / peak RSS in MiB (the command's whole process tree). `sort` is DuckDB's own plain sort "
             "of the same log, the floor for `prepare`; `memory` is the pandas path (`--engine memory`).", "",
             "| events | examples (train) | generate s | sort s | prepare s | prepare / sort | prepare MiB | memory s | "
             "memory MiB | train s | train ex/s | train MiB | epoch s | epoch ex/s | epoch MiB |",
             "|" + "---|" * 15]
    for row in report["rows"]:
        ratio = "–"
        if succeeded(row.get("sort")) and succeeded(row.get("prepare")):
            ratio = f"{row['prepare']['seconds'] / row['sort']['seconds']:.2f}"
        train_rate = (row.get("train") or {}).get("metrics") or {}
        epoch_rate = (row.get("epoch") or {}).get("metrics") or {}
        lines.append(
            f"| {row['events']:,} | {row.get('examples', {}).get('train', 0):,} | {cell(row.get('generate'), 'seconds', 1)} | "
            f"{cell(row.get('sort'), 'seconds', 1)} | {cell(row.get('prepare'), 'seconds', 1)} | {ratio} | "
            f"{cell(row.get('prepare'), 'peak_rss_mib')} | {cell(row.get('memory'), 'seconds', 1)} | "
            f"{cell(row.get('memory'), 'peak_rss_mib')} | {cell(row.get('train'), 'seconds', 1)} | "
            f"{rate(train_rate)} | {cell(row.get('train'), 'peak_rss_mib')} | "
            f"{cell(row.get('epoch'), 'seconds', 1)} | {rate(epoch_rate)} | "
            f"{cell(row.get('epoch'), 'peak_rss_mib')} |")
    ratios = {row["events"]: row["prepare"]["seconds"] / row["sort"]["seconds"] for row in report["rows"]
              if succeeded(row.get("sort")) and succeeded(row.get("prepare"))}
    if ratios:
        met = [f"{events:,}" for events, ratio in ratios.items() if ratio <= 2]
        lines += ["", f"Goal (issue 15): `prepare` within 2x of `sort`. Met at: {', '.join(met) or 'no size'} "
                  f"(prepare / sort {min(ratios.values()):.1f}x to {max(ratios.values()):.1f}x). Peak RSS under "
                  f"2 GiB at every size: {'yes' if all_under(report, 2048) else 'no'}."]
    if report.get("processes"):
        lines += ["", "## One and two training processes (torchrun, gloo) on Amazon Food-Kitchen", "",
                  "Same global batch (512) and seed, the converging defaults; examples/s of the training steps over "
                  "all processes.", "",
                  "| processes | validation AUC | test AUC | steps | examples/s | wall s | peak MiB |", "|---|---|---|---|---|---|---|"]
        for step in report["processes"]:
            m = step.get("metrics") or {}
            if step["returncode"] or not m:
                lines.append(f"| {step['processes']} | failed ({step['returncode']}) | | | | | |")
                continue
            lines.append(f"| {step['processes']} | {m['valid_auc']:.4f} | {m['test_auc']:.4f} | {m['steps']} | "
                         f"{m['examples_per_second']:,.0f} | {step['seconds']:.0f} | {step['peak_rss_mib']:.0f} |")
    settings = report["settings"]
    lines += ["", f"Settings: history length {settings['history_length']}, {settings['items']} items, "
              f"{settings['threads']} thread(s), DuckDB memory limit {settings['memory_limit']}; train: "
              f"{settings['train_model']} for {settings['train_steps']} steps at batch {settings['batch_size']}; "
              f"epoch: {settings['epoch_model']}."]
    failures = [(row["events"], name, step["output_tail"]) for row in report["rows"]
                for name, step in row.items() if isinstance(step, dict) and step.get("returncode")]
    for events, name, tail in failures:
        lines += ["", f"## {name} at {events:,} events failed", "", "```", tail.strip()[-1500:], "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--sizes", default="1M,5M,20M", help="events per log, comma separated")
    parser.add_argument("--memory-sizes", default="1M,5M", help="sizes at which the pandas path runs too")
    parser.add_argument("--epoch-sizes", default="1M,20M", help="sizes at which one whole epoch is trained")
    parser.add_argument("--work", help="scratch folder (default: a temporary folder, removed at the end)")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--history-length", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="engine and torch threads")
    parser.add_argument("--memory-limit", default="1.5GB", help="DuckDB memory limit (peak RSS is about 0.3 GB above it)")
    parser.add_argument("--train-model", default="sainet")
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--epoch-model", default="dnn", help="the model of the whole-epoch runs")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--keep", action="store_true", help="keep logs and prepared folders")
    parser.add_argument("--ddp-data", help="the amazon-food-kitchen folder: also train on it with 1 and 2 processes")
    parser.add_argument("--conditions", help="what else ran on the machine, written into the report")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite README.md from <out>/bench_data.json (with --conditions, if given); run nothing")
    args = parser.parse_args()
    if args.render_only:
        report = json.loads((Path(args.out) / "bench_data.json").read_text())
        if args.conditions:
            report["conditions"] = args.conditions
        (Path(args.out) / "bench_data.json").write_text(json.dumps(report, indent=2))
        (Path(args.out) / "README.md").write_text(markdown(report))
        return 0
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    args.memory_sizes = {parse_size(s) for s in args.memory_sizes.split(",") if s}
    args.epoch_sizes = {parse_size(s) for s in args.epoch_sizes.split(",") if s}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = None if args.work else tempfile.TemporaryDirectory(prefix="sainet-bench-data-")
    work = Path(args.work or scratch.name)
    work.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    report = {"command": "python scripts/bench_data.py " + " ".join(sys.argv[1:]), "commit": commit,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
                         f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
              "settings": {k: v for k, v in vars(args).items()
                           if isinstance(v, (int, str)) and k not in ("conditions", "render_only")}, "rows": [],
              "conditions": args.conditions}
    def write() -> None:
        report["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        (out / "bench_data.json").write_text(json.dumps(report, indent=2))
        (out / "README.md").write_text(markdown(report))

    try:
        if args.ddp_data:
            report["processes"] = bench_processes(args, work)
            write()
        for events in sizes:
            report["rows"].append(bench_size(events, args, work))
            write()
            print(json.dumps(report["rows"][-1], indent=2, default=str), flush=True)
    finally:
        if scratch is not None:
            scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
