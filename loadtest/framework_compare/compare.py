"""`sainet serve` against the same job served by LitServe (`litserve_server.py`), loaded alike.

One invocation, one machine, one artifact: an embedded Redis seeded with the bench's users (as
`sainet bench` seeds them), then each server in turn, pinned to one CPU (as `taskset -c CPU` would:
the affinity is set before exec, so every process a server starts inherits it), with the load
generator (`sainet.bench.loadgen`) and Redis on the other CPU:

1. parity: the first `--parity-requests` bodies sent one at a time to each server; the scores must
   be identical (as float32) and the other fields equal (one request per batch on both sides, so
   int8's per-batch activation scale is the same too);
2. closed loop, `--concurrency` (32) connections: throughput, p50/p99, and the server's CPU time per
   request (utime + stime of its whole process tree, from /proc);
3. the highest sustained open-loop rate, stepping down from the closed-loop maximum by 10% exactly as
   `sainet bench` does (`runner.find_sustainable_rate`: >= 97% completed, <= 0.1% failed, p99 <= 500 ms).

Writes compare.json and compare.md (the ratios service / LitServe) under --out.

    .venv/bin/python loadtest/framework_compare/compare.py --model-dir artifacts --out docs/bench/framework-compare
    .venv/bin/python loadtest/framework_compare/compare.py --model-dir artifacts --out /tmp/fc --quick   # ~1-2 min
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtest.procs import proc_stats, process_tree  # noqa: E402
from model.provenance import git_commit  # noqa: E402
from sainet.bench.runner import (BenchConfig, Server, find_sustainable_rate, machine, pick_cpus,  # noqa: E402
                                 resolve_artifact_dir, run_load, seed_users)
from service.artifact import Artifact  # noqa: E402
from service.embedded_redis import EmbeddedRedis  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.testing import free_port  # noqa: E402

log = logging.getLogger("framework_compare")


def process_tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its descendants (LitServe runs several processes)."""
    stats = proc_stats()
    return sum(stats[p].cpu_seconds for p in process_tree(pid, stats) if p in stats)


def tree_affinity(pid: int) -> list[int]:
    """The CPUs any process of the server's tree may run on (one, when the pinning held)."""
    cpus: set[int] = set()
    for p in process_tree(pid):
        try:
            cpus |= os.sched_getaffinity(p)
        except OSError:
            pass
    return sorted(cpus)


def tree_rss_mb(pid: int) -> float:
    """Resident memory summed over the server's processes (shared pages counted in each)."""
    total = 0.0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def parity(answers: dict[str, list[dict]]) -> dict:
    service, other = answers["service"], answers["litserve"]
    diffs, mismatched_fields = [], []
    for i, (a, b) in enumerate(zip(service, other)):
        sa, sb = np.asarray(a["scores"], np.float32), np.asarray(b["scores"], np.float32)
        diffs.append(float(np.abs(sa - sb).max()) if sa.shape == sb.shape else float("inf"))
        for field in ("model", "history_length", "cold_start", "degraded"):
            if a.get(field) != b.get(field):
                mismatched_fields.append({"request": i, "field": field, "service": a.get(field),
                                          "litserve": b.get(field)})
    return {"requests": len(diffs), "max_abs_diff": max(diffs, default=0.0),
            "identical": bool(diffs) and max(diffs) == 0.0 and not mismatched_fields,
            "mismatched_fields": mismatched_fields[:10]}


def measure(name: str, server: Server, url: str, bodies: list[dict], bodies_path: Path, load_cpu: int,
            config: BenchConfig, parity_requests: int) -> tuple[dict, list[dict]]:
    answers = [post(url, body) for body in bodies[:parity_requests]]
    closed = dict(mode="closed", cpu=load_cpu, seconds=config.closed_seconds, warmup=config.warmup_seconds,
                  concurrency=config.concurrency)
    cpu_before, wall_before = process_tree_cpu_seconds(server.process.pid), time.perf_counter()
    result = {"closed": run_load(url, bodies_path, **closed)["summary"]}
    cpu = process_tree_cpu_seconds(server.process.pid) - cpu_before
    wall = time.perf_counter() - wall_before
    # The whole run (warm-up and drain included) over every answer sent: CPU per request.
    requests_served = result["closed"]["ok"] * (config.closed_seconds + config.warmup_seconds) / config.closed_seconds
    result["cpu_ms_per_request"] = 1e3 * cpu / max(requests_served, 1)
    result["cpu_busy_fraction"] = cpu / wall
    result["sustainable"] = find_sustainable_rate(url, bodies_path, load_cpu, result["closed"]["achieved_rate"], config)
    sustained = [p for p in result["sustainable"]["probes"] if p["offered_rate"] == result["sustainable"]["rate"]]
    result["sustainable_p99_ms"] = sustained[-1]["p99_ms"] if sustained else None
    result["memory"] = server.rss_mb()
    result["processes"] = len(process_tree(server.process.pid))
    result["tree_rss_mb"] = tree_rss_mb(server.process.pid)
    result["cpus_allowed"] = tree_affinity(server.process.pid)
    log.info("%s: closed %.0f/s (p99 %.1f ms), sustainable %.0f/s", name, result["closed"]["achieved_rate"],
             result["closed"]["p99_ms"], result["sustainable"]["rate"])
    return result, answers


def run_compare(model_dir: Path, out_dir: Path, config: BenchConfig, parity_requests: int = 20,
                max_batch_size: int = 64, batch_timeout: float = 0.002, fast_queue: bool = True,
                precision: str | None = None, repeats: int = 1) -> dict:
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    artifact_dir = resolve_artifact_dir(model_dir)
    artifact = Artifact(artifact_dir)
    server_cpu, load_cpu, isolated = pick_cpus()
    precision = precision or Settings().precision
    served = artifact.choose_precision(precision, on_gpu=False)
    redis_server = EmbeddedRedis(free_port())
    redis_url = redis_server.start()
    bodies_path = out_dir / ".bodies.json"
    python = sys.executable
    common_env = {"SAINET_INTRA_OP_THREADS": "1", "SAINET_INTER_OP_THREADS": "1", "SAINET_PRECISION": precision,
                  "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    servers = {
        "service": ([python, "-m", "sainet.cli", "serve", "--port", "{port}"], "/v2/health/ready", {
            "SAINET_MODEL_DIR": str(artifact_dir.parent.parent), "SAINET_MODEL_NAME": artifact_dir.parent.name,
            "SAINET_MODEL_VERSION": artifact_dir.name, "SAINET_REDIS_URL": redis_url,
            "SAINET_RELOAD_POLL_SECONDS": "0", "SAINET_HISTORY_LENGTH": str(artifact.history_length)}),
        "litserve": ([python, str(Path(__file__).with_name("litserve_server.py")), "--model-dir", str(artifact_dir),
                      "--redis-url", redis_url, "--port", "{port}", "--max-batch-size", str(max_batch_size),
                      "--batch-timeout", str(batch_timeout), "--fast-queue" if fast_queue else "--no-fast-queue"],
                     "/health", {}),
    }
    results: dict = {"config": dataclasses.asdict(config), "artifact": str(artifact_dir), "precision": served,
                     "litserve_options": {"max_batch_size": max_batch_size, "batch_timeout": batch_timeout,
                                          "fast_queue": fast_queue},
                     "cpus": {"server": server_cpu, "load_generator_and_redis": load_cpu, "isolated": isolated}}
    answers: dict[str, list[dict]] = {}
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    try:
        os.sched_setaffinity(redis_server.process.pid, {load_cpu})
        bodies = seed_users(redis_url, artifact, config)
        bodies_path.write_text(json.dumps(bodies))
        for repeat in range(repeats):     # alternating order (A B, B A, ...) so drift hits both alike
            for name in (list(servers) if repeat % 2 == 0 else list(reversed(servers))):
                command, ready, env = servers[name]
                port = free_port()
                log.info("%s on CPU %d (repeat %d of %d)", name, server_cpu, repeat + 1, repeats)
                with Server(name, [c.replace("{port}", str(port)) for c in command], server_cpu, port, ready,
                            env={**common_env, **env}, log_dir=out_dir) as server:
                    result, answers[name] = measure(name, server, f"http://127.0.0.1:{port}/score", bodies,
                                                    bodies_path, load_cpu, config, parity_requests)
                runs[name].append(result)
    finally:
        bodies_path.unlink(missing_ok=True)
        redis_server.stop()
    for name, measured in runs.items():
        # The run of median closed-loop throughput is shown; the ratios are of medians.
        ordered = sorted(measured, key=lambda r: r["closed"]["achieved_rate"])
        results[name] = {**ordered[(len(ordered) - 1) // 2], "repeats": len(measured),
                         "closed_rates": [r["closed"]["achieved_rate"] for r in measured],
                         "sustainable_rates": [r["sustainable"]["rate"] for r in measured],
                         "median_closed_rate": float(np.median([r["closed"]["achieved_rate"] for r in measured])),
                         "median_sustainable_rate": float(np.median([r["sustainable"]["rate"] for r in measured])),
                         "median_cpu_ms_per_request": float(np.median([r["cpu_ms_per_request"] for r in measured])),
                         "runs": measured}
    s, l = results["service"], results["litserve"]
    results.update({
        "parity": parity(answers),
        "closed_ratio": s["median_closed_rate"] / l["median_closed_rate"],
        "sustainable_ratio": s["median_sustainable_rate"] / l["median_sustainable_rate"],
        "cpu_per_request_ratio": l["median_cpu_ms_per_request"] / s["median_cpu_ms_per_request"],
        "machine": machine(), "commit": git_commit(), "litserve_version": _version("litserve"),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(), "wall_seconds": time.perf_counter() - started,
    })
    (out_dir / "compare.json").write_text(json.dumps(results, indent=2))
    (out_dir / "compare.md").write_text(markdown(results))
    return results


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def markdown(r: dict) -> str:
    c, s, l = r["config"], r["service"], r["litserve"]
    p = r["parity"]
    lines = [f"# `sainet serve` vs LitServe {r['litserve_version']}: C = {c['candidates']}, N = {c['history']}, "
             f"{r['precision']}", "",
             f"Machine: {r['machine']['cpu']} ({r['machine']['cpus']} CPUs); each server pinned to CPU "
             f"{r['cpus']['server']}, load generator and Redis on CPU {r['cpus']['load_generator_and_redis']}"
             f"{'' if r['cpus']['isolated'] else ' (the same CPU: figures are not isolated)'}. Commit "
             f"{r['commit'][:10]}, {r['finished_at'][:19]}Z, {r['wall_seconds']:.0f} s. LitServe: "
             f"max_batch_size={r['litserve_options']['max_batch_size']}, "
             f"batch_timeout={r['litserve_options']['batch_timeout']} s, fast_queue={r['litserve_options']['fast_queue']}.",
             "",
             "| figure | `sainet serve` | LitServe | service / LitServe |", "|---|---|---|---|",
             f"| closed loop ({c['concurrency']} connections), requests/s (median of {s['repeats']}) | "
             f"{s['median_closed_rate']:.0f} | {l['median_closed_rate']:.0f} | {r['closed_ratio']:.2f}x |",
             f"| closed loop p50 / p99, ms | {s['closed']['p50_ms']:.1f} / {s['closed']['p99_ms']:.1f} | "
             f"{l['closed']['p50_ms']:.1f} / {l['closed']['p99_ms']:.1f} | |",
             f"| closed loop failed | {s['closed']['failed']} | {l['closed']['failed']} | |",
             f"| highest sustained open-loop rate, requests/s (median) | {s['median_sustainable_rate']:.0f} | "
             f"{l['median_sustainable_rate']:.0f} | {r['sustainable_ratio']:.2f}x |",
             f"| p99 at that rate, ms | {_ms(s['sustainable_p99_ms'])} | {_ms(l['sustainable_p99_ms'])} | |",
             f"| server CPU per request (whole process tree, closed loop; median), ms | "
             f"{s['median_cpu_ms_per_request']:.2f} | {l['median_cpu_ms_per_request']:.2f} | "
             f"{r['cpu_per_request_ratio']:.2f}x less |",
             f"| server processes; RSS summed over them after the run, MB | {s['processes']}; {s['tree_rss_mb']:.0f} | "
             f"{l['processes']}; {l['tree_rss_mb']:.0f} | |", "",
             f"Scores: {p['requests']} requests sent one at a time to each; "
             + ("identical (float32) and every other field equal." if p["identical"] else
                f"max difference {p['max_abs_diff']:.3g}, mismatched fields {p['mismatched_fields']}."), "",
             "p50/p99 rows: the run of median closed-loop throughput. Every run (closed-loop requests/s; "
             "open-loop probes, offered -> achieved requests/s (p99 ms)):", ""]
    for name, result in (("service", s), ("LitServe", l)):
        for i, run in enumerate(result["runs"]):
            probes = ", ".join(f"{q['offered_rate']:.0f} -> {q['achieved_rate']:.0f} ({q['p99_ms']:.0f})"
                               for q in run["sustainable"]["probes"])
            lines.append(f"- {name}, run {i + 1}: closed {run['closed']['achieved_rate']:.0f}/s; {probes}")
    return "\n".join(lines) + "\n"


def _ms(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="model root, model folder or version folder")
    parser.add_argument("--out", required=True, help="folder for compare.json, compare.md and the server logs")
    parser.add_argument("--quick", action="store_true", help="short phases: about 1-2 minutes in all")
    parser.add_argument("--seconds", type=float, help="seconds per load phase (overrides the default)")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--parity-requests", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure each server this many times, in alternating order; medians are reported")
    parser.add_argument("--precision", choices=["auto", "fp32", "int8"], help="default: SAINET_PRECISION or auto")
    parser.add_argument("--max-batch-size", type=int, default=64, help="LitServe's max_batch_size")
    parser.add_argument("--batch-timeout", type=float, default=0.002, help="LitServe's batch_timeout (s)")
    parser.add_argument("--fast-queue", action=argparse.BooleanOptionalAction, default=True,
                        help="LitServe's ZeroMQ queue (its documented faster option)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"candidates": args.candidates, "history": args.history, "users": args.users,
                 "concurrency": args.concurrency}
    if args.seconds is not None:
        overrides.update(closed_seconds=args.seconds, open_seconds=args.seconds, probe_seconds=args.seconds)
    config = BenchConfig.quick(**overrides) if args.quick else dataclasses.replace(BenchConfig(), **overrides)
    results = run_compare(Path(args.model_dir), Path(args.out), config, args.parity_requests, args.max_batch_size,
                          args.batch_timeout, args.fast_queue, args.precision, args.repeats)
    print((Path(args.out) / "compare.md").read_text())
    return 0 if results["parity"]["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
