"""Turns locust's `<prefix>_stats_history.csv` into a PNG of throughput and p50/p95/p99 over time.

    python loadtest/plot_history.py loadtest/out/run_stats_history.csv loadtest/out/run.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot(history_csv: str, out_png: str) -> None:
    frame = pd.read_csv(history_csv)
    frame = frame[frame["Name"] == "Aggregated"].copy()
    if frame.empty:
        raise SystemExit(f"{history_csv} has no Aggregated rows")
    seconds = frame["Timestamp"] - frame["Timestamp"].iloc[0]
    fig, (ax_rate, ax_latency) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax_rate.plot(seconds, frame["Requests/s"], label="requests/s")
    ax_rate.plot(seconds, frame["Failures/s"], label="failures/s")
    ax_rate.set(ylabel="per second", title="throughput")
    ax_rate.legend()
    for column in ("50%", "95%", "99%"):
        ax_latency.plot(seconds, pd.to_numeric(frame[column], errors="coerce"), label=f"p{column[:-1]}")
    ax_latency.set(xlabel="seconds", ylabel="ms", title="latency")
    ax_latency.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("history_csv")
    parser.add_argument("out_png")
    args = parser.parse_args()
    plot(args.history_csv, args.out_png)


if __name__ == "__main__":
    main()
