"""How much a streamed evaluation pass grows the process: `predict_batches` over a prepared split,
with the peak RSS above the warmed baseline (sampled every 20 ms) and the wall time.

    .venv/bin/python scripts/profile_eval_memory.py RUN_DIR PREPARED [--split valid] [--configs ...]

RUN_DIR is a trained run (e.g. `sainet train --prepared PREPARED --max-steps 100 --out RUN_DIR`).
Each configuration is BATCH:TRIM (TRIM: hand freed memory back every TRIM batches, 0: only at the
pass's end); all run side by side in one process after a warm-up pass (default 8192:0,2048:0,2048:8).
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import psutil
import torch

from model.data.stream import ShardSource, StreamedData
from model.memory import release_freed_memory
from model.train import load_run, predict_batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("prepared", type=Path)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--configs", default="8192:0,2048:0,2048:8")
    args = parser.parse_args()
    torch.set_num_threads(1)
    process, peak, stop = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.02)

    model = load_run(args.run_dir).model
    source = ShardSource(StreamedData.open(args.prepared), 512, 0)
    predict_batches(model, source.eval_batches(args.split, 2048))
    threading.Thread(target=sample, daemon=True).start()
    print("| eval batch | trim every (batches) | seconds | peak above base MiB |\n|---|---|---|---|")
    for config in args.configs.split(","):
        batch_size, trim_every = (int(part) for part in config.split(":"))
        release_freed_memory()
        base = peak[0] = process.memory_info().rss
        started = time.perf_counter()
        predict_batches(model, source.eval_batches(args.split, batch_size), trim_every)
        print(f"| {batch_size} | {trim_every or 'end only'} | {time.perf_counter() - started:.1f} | "
              f"{(peak[0] - base) / 2**20:.0f} |", flush=True)
    stop.set()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
