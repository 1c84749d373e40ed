"""Chaos and overload measurement of the scoring service (issue 13, "Measure it").

    python -m loadtest.chaos --model-dir artifacts --out /tmp/chaos [--quick] [--baseline-ref 8799bbc]

Starts its own redis-server, a delaying TCP proxy in front of it (`loadtest.chaos.proxy`) and the
service (`python -m sainet serve`, SAINET_* settings), pinned like `sainet bench` (service on the
first CPU; load generator, proxy and Redis on the second), runs the scenarios of
`loadtest.chaos.harness` and writes `report.json`, `report.md` and plots into `--out`. With
`--baseline-ref REF` a `git worktree` of REF runs through the same scenarios in the same sitting,
and the report puts both side by side. `main(argv)` is the entry point (for a `sainet bench
--chaos` hook).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default="artifacts", help="model root, name or version directory")
    parser.add_argument("--out", required=True, help="directory for report.json, report.md, plots and logs")
    parser.add_argument("--quick", action="store_true", help="a few seconds per phase, 10,000 events")
    parser.add_argument("--baseline-ref", help="also measure this commit's service (a temporary git worktree)")
    parser.add_argument("--only", choices=["current", "baseline"], help="measure one version only")
    parser.add_argument("--phase-seconds", type=float, help="seconds per measured phase")
    parser.add_argument("--events", type=int, help="events sent in the events-under-load scenario")
    parser.add_argument("--deadline-ms", type=float, help="request deadline (SAINET_REQUEST_TIMEOUT_MS and the "
                        "X-Request-Timeout-Ms header); default 1000")
    parser.add_argument("--kill-seconds", type=float, help="how long Redis stays killed")
    parser.add_argument("--scenarios", help="comma-separated subset of closed,overload,delays,kill,flood,events "
                        "(default: all; overload without closed starts its search at 100/s)")
    parser.add_argument("--service-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the services (e.g. SAINET_PRECISION=fp32); repeatable")
    return parser.parse_args(argv)


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    from loadtest.chaos.harness import ChaosConfig, run_chaos

    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)     # so that every finally block stops its processes
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {k: v for k, v in {"phase_seconds": args.phase_seconds, "events_total": args.events,
                                   "deadline_ms": args.deadline_ms, "kill_seconds": args.kill_seconds}.items()
                 if v is not None}
    config = ChaosConfig.quick(**overrides) if args.quick else ChaosConfig(**overrides)
    service_env = dict(item.split("=", 1) for item in args.service_env)
    results = run_chaos(Path(args.model_dir), Path(args.out), config, baseline_ref=args.baseline_ref,
                        service_env=service_env, only=args.only,
                        scenarios=tuple(x for x in (args.scenarios or "").split(",") if x))
    print((Path(args.out) / "report.md").read_text())
    return 1 if any(t.get("errors") for t in results["targets"].values()) else 0


__all__ = ["main"]

if __name__ == "__main__":   # pragma: no cover
    sys.exit(main())
