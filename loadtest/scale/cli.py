"""`python -m loadtest.scale --model-dir DIR --out OUT [--quick]`: both parts, then the report."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("loadtest.scale")


def parse_cpus(text: str | None) -> list[int] | None:
    if text is None or text.strip() in ("", "none", "unpinned"):
        return None
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus += list(range(int(lo), int(hi or lo) + 1))
    return cpus


def plan_cpus(replica_cpus: list[int] | None, load_cpus: str | None) -> tuple[list[int], list[int] | None, bool]:
    """(replica A's and B's CPUs, the load generator's/nginx's/Redis's CPUs or None for unpinned,
    whether the load generator is apart from the replicas)."""
    available = sorted(os.sched_getaffinity(0))
    replicas = replica_cpus or available[:2]
    if len(replicas) != 2 or len(set(replicas)) != 2:
        raise SystemExit(f"two distinct CPUs are needed for the two replicas (--cpus A,B); this process may use "
                         f"{available}")
    missing = [c for c in replicas if c not in available]
    if missing:
        raise SystemExit(f"--cpus {replicas}: CPUs {missing} are not available to this process ({available})")
    if load_cpus is not None:
        load = parse_cpus(load_cpus)
    else:
        rest = [c for c in available if c not in replicas]
        load = rest or None
    apart = load is not None and not set(load) & set(replicas)
    return replicas, load, apart


def tool_version(command: list[str]) -> str:
    try:
        answer = subprocess.run(command, capture_output=True, text=True, timeout=10)
        return (answer.stdout + answer.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m loadtest.scale", description=__doc__)
    parser.add_argument("--model-dir", required=True, type=Path,
                        help="model root (<root>/<name>/<version>), a name directory or a version directory")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--quick", action="store_true", help="short runs (1.5-2.5 minutes instead of 5-7)")
    parser.add_argument("--cpus", help="the two replicas' CPUs, A,B (default: the first two this process may use)")
    parser.add_argument("--load-cpus", help="CPUs of the load generator, nginx and Redis (default: the CPUs left "
                                            "after the replicas', unpinned when none is left)")
    parser.add_argument("--part", choices=["both", "replicas", "cluster"], default="both")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from loadtest.scale import cluster as cluster_part
    from loadtest.scale import replicas as replica_part
    from loadtest.scale.nginx import SHIPPED_CONF, nginx_binary, render
    from loadtest.scale.report import markdown, plot
    from model.provenance import git_commit
    from sainet.bench.runner import machine, resolve_artifact_dir
    from service.artifact import Artifact

    replica_cpus, load_cpus, apart = plan_cpus(parse_cpus(args.cpus), args.load_cpus)
    artifact_dir = resolve_artifact_dir(args.model_dir).resolve()
    artifact = Artifact(artifact_dir)
    out = args.out
    (out / "logs").mkdir(parents=True, exist_ok=True)
    nginx = nginx_binary()
    if args.part != "cluster" and nginx is None:
        raise SystemExit("nginx is not installed: the replicas part needs it (or run --part cluster)")

    def terminate(signum, frame):     # SIGTERM runs the finally blocks, as Ctrl-C does
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, terminate)

    started = time.perf_counter()
    results: dict = {
        "command": "python -m loadtest.scale " + shlex.join(argv), "quick": args.quick,
        "artifact": str(artifact_dir),
        "model": {"precision_files": sorted(p.name for p in artifact_dir.glob("*.onnx"))},
        "machine": {**machine(), "nginx": tool_version([nginx, "-v"]) if nginx else None,
                    "redis": " ".join(tool_version(["redis-server", "--version"]).split()[:3])},
        "commit": git_commit(), "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "loadavg_before": os.getloadavg(),
        "cpus": {"replicas": replica_cpus, "load_generator_nginx_redis": load_cpus or "unpinned",
                 "load_generator_apart": apart},
        "nginx_substitutions": render(SHIPPED_CONF.read_text(), ["PORT_A", "PORT_B"], "PORT",
                                      Path("RUN_DIR")).substituted,
    }
    work = Path(tempfile.mkdtemp(prefix="sainet-scale-"))
    try:
        if args.part in ("both", "replicas"):
            config = replica_part.ReplicaConfig.quick() if args.quick else replica_part.ReplicaConfig()
            results["replicas_config"] = config.__dict__
            results["replicas"] = replica_part.run_part(artifact_dir, work / "replicas", out / "logs", replica_cpus,
                                                        load_cpus, config, nginx)
        if args.part in ("both", "cluster"):
            config = cluster_part.ClusterConfig.quick() if args.quick else cluster_part.ClusterConfig()
            results["cluster_config"] = {**config.__dict__, "batch_sizes": list(config.batch_sizes)}
            # the cluster part's servers and this (client) process share the load generator's CPUs
            own = os.sched_getaffinity(0)
            if load_cpus:
                os.sched_setaffinity(0, set(load_cpus))
            try:
                results["cluster"] = cluster_part.run_part(work / "cluster", out / "logs", list(artifact.item_index),
                                                           list(artifact.scenarios), config, load_cpus)
            finally:
                os.sched_setaffinity(0, own)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results.update({"loadavg_after": os.getloadavg(), "wall_seconds": time.perf_counter() - started,
                    "finished_at": dt.datetime.now(dt.timezone.utc).isoformat()})
    text = json.dumps(results, indent=2, default=str)
    (out / "scale.json").write_text(text)
    results = json.loads(text)        # the report reads what scale.json holds (string keys)
    (out / "scale.md").write_text(markdown(results))
    plot(results, out / "scale.png")
    print((out / "scale.md").read_text())
    return 0
