"""Part 1: one vs two `sainet serve` replicas behind the repository's nginx, on loopback.

Two replicas run for the whole part, each pinned to its own core (taskset), in front of one Redis
seeded with the bench's users. Two nginx instances are rendered from deploy/nginx/nginx.conf, one
with replica A as its only upstream, one with A and B; both stay up, so the closed-loop runs can
alternate 1, 2, 1, 2 ... (noise hits both alike) with no restart between them. The load generator
is sainet/bench/loadgen.py (closed and open loop), run as a subprocess.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from loadtest.scale.cpu import CpuMeter
from loadtest.scale.nginx import Nginx
from loadtest.procs import LOOPBACK, GroupProcess, free_port, http_get, http_ok, pinned, wait_until
from sainet.bench.runner import sustained

log = logging.getLogger(__name__)

SEARCH_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)


@dataclass(frozen=True)
class ReplicaConfig:
    candidates: int = 100
    history: int = 50
    users: int = 2000
    concurrency_per_replica: int = 32    # closed loop: 32 connections per replica (the bench's 32 for one)
    closed_seconds: float = 15.0
    closed_repeats: int = 2              # alternating 1, 2, 1, 2 ...
    open_seconds: float = 20.0
    probe_seconds: float = 8.0
    warmup_seconds: float = 2.0
    half_fraction: float = 0.5
    seed: int = 0

    @classmethod
    def quick(cls) -> "ReplicaConfig":
        return cls(closed_seconds=5.0, closed_repeats=1, open_seconds=6.0, probe_seconds=4.0, warmup_seconds=1.0,
                   users=500)


def run_load(url: str, bodies_path: Path, mode: str, seconds: float, warmup: float, cpus: list[int] | None,
             concurrency: int | None = None, rate: float | None = None) -> dict:
    """One sainet.bench.loadgen run (a subprocess, pinned to `cpus` if given); its summary."""
    with tempfile.NamedTemporaryFile(prefix="scale-load-", suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = [sys.executable, "-m", "sainet.bench.loadgen", "--url", url, "--bodies", str(bodies_path),
               "--mode", mode, "--seconds", str(seconds), "--warmup", str(warmup), "--out", str(out)]
    if concurrency:
        command += ["--concurrency", str(concurrency)]
    if rate:
        command += ["--rate", f"{rate:.3f}"]
    try:
        subprocess.run(pinned(command, cpus), check=True, timeout=seconds + warmup + 90,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return json.loads(out.read_text())["summary"]
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"load generator failed: {error.stderr.decode(errors='replace')[-800:]}") from None
    finally:
        out.unlink(missing_ok=True)


def score_requests(metrics_text: str) -> float:
    """/score requests a replica has answered (any status), from its Prometheus text."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("sainet_request_duration_seconds_count{") and 'endpoint="/score"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


class Replica:
    def __init__(self, name: str, cpu: int, artifact_dir: Path, history_length: int, redis_url: str,
                 log_dir: Path):
        self.name, self.cpu, self.port = name, cpu, free_port()
        env = {"SAINET_MODEL_DIR": str(artifact_dir.parent.parent), "SAINET_MODEL_NAME": artifact_dir.parent.name,
               "SAINET_MODEL_VERSION": artifact_dir.name, "SAINET_REDIS_URL": redis_url,
               "SAINET_INTRA_OP_THREADS": "1", "SAINET_RELOAD_POLL_SECONDS": "0",
               "SAINET_HISTORY_LENGTH": str(history_length)}
        command = [sys.executable, "-m", "sainet.cli", "serve", "--host", LOOPBACK, "--port", str(self.port)]
        self.proc = GroupProcess(f"replica-{name}", pinned(command, [cpu]), Path(log_dir) / f"replica-{name}.log",
                                 env=env)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def requests(self) -> float:
        return score_requests(http_get(f"{self.url}/metrics"))

    def wait_ready(self, timeout: float = 180.0) -> None:
        wait_until(lambda: http_ok(f"{self.url}/v2/health/ready"), timeout, f"replica {self.name} to be ready",
                   interval=0.25, alive=self.proc.check_alive)


class Setup:
    """What the measurements need: the two nginx instances, the replicas, the load generator's CPUs."""

    def __init__(self, front: dict[int, Nginx], replicas: list[Replica], bodies_path: Path,
                 load_cpus: list[int] | None, groups: dict[str, int], config: ReplicaConfig):
        self.front, self.replicas, self.bodies_path = front, replicas, bodies_path
        self.load_cpus, self.groups, self.config = load_cpus, groups, config

    def url(self, n: int) -> str:
        return f"{self.front[n].url}/score"

    def load(self, n: int, mode: str, seconds: float, **kwargs) -> dict:
        """One run through the nginx of `n` replicas, with the CPU accounting and each replica's share."""
        before = [r.requests() for r in self.replicas]
        with CpuMeter(self.groups) as meter:
            summary = run_load(self.url(n), self.bodies_path, mode, seconds, self.config.warmup_seconds,
                               self.load_cpus, **kwargs)
        after = [r.requests() for r in self.replicas]
        summary["replica_requests"] = {r.name: after[i] - before[i] for i, r in enumerate(self.replicas)}
        summary["cpu"] = meter.result
        return summary


def closed_runs(setup: Setup) -> dict:
    c = setup.config
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for repeat in range(c.closed_repeats):
        for n in (1, 2):
            log.info("closed loop, %d replica(s), %d connections (repeat %d)", n, n * c.concurrency_per_replica,
                     repeat + 1)
            runs[n].append(setup.load(n, "closed", c.closed_seconds, concurrency=n * c.concurrency_per_replica))
    out = {}
    for n, items in runs.items():
        rates = [r["achieved_rate"] for r in items]
        out[n] = {"concurrency": n * c.concurrency_per_replica, "rates": rates, "median_rate": statistics.median(rates),
                  "runs": items}
    out["ratio"] = out[2]["median_rate"] / out[1]["median_rate"]
    out["pair_ratios"] = [b["achieved_rate"] / a["achieved_rate"] for a, b in zip(runs[1], runs[2])]
    return out


def find_sustainable(setup: Setup, n: int, closed_max: float) -> dict:
    """As `sainet bench`: the highest open-loop rate, stepping down from the closed-loop maximum by
    10%, that is kept up (>= 97% completed, <= 0.1% failed, p99 <= 500 ms)."""
    probes = []
    for fraction in SEARCH_FRACTIONS:
        rate = max(fraction * closed_max, 1.0)
        log.info("open loop, %d replica(s): probe at %.0f/s (%.0f%% of closed max)", n, rate, 100 * fraction)
        summary = setup.load(n, "open", setup.config.probe_seconds, rate=rate)
        probes.append({"fraction_of_closed_max": fraction, **summary})
        if sustained(summary):
            return {"rate": summary["offered_rate"], "probes": probes}
    return {"rate": probes[-1]["offered_rate"], "probes": probes, "note": "no probe was sustained"}


def measure(setup: Setup) -> dict:
    c = setup.config
    result: dict = {"closed": closed_runs(setup)}
    sustainable, half = {}, {}
    for n in (1, 2):
        sustainable[n] = find_sustainable(setup, n, result["closed"][n]["median_rate"])
    for n in (1, 2):
        rate = c.half_fraction * sustainable[n]["rate"]
        log.info("open loop, %d replica(s) at %.0f%% of sustainable: %.0f/s", n, 100 * c.half_fraction, rate)
        half[n] = setup.load(n, "open", c.open_seconds, rate=rate)
    rate = c.half_fraction * sustainable[1]["rate"]
    log.info("open loop, 2 replicas at one replica's half load: %.0f/s", rate)
    same = setup.load(2, "open", c.open_seconds, rate=rate)
    result.update({"sustainable": sustainable, "half_load": half, "two_at_one_half_load": same,
                   "sustainable_ratio": sustainable[2]["rate"] / sustainable[1]["rate"]})
    return result


def run_part(artifact_dir: Path, work_dir: Path, log_dir: Path, replica_cpus: list[int], load_cpus: list[int] | None,
             config: ReplicaConfig, nginx_binary: str | None = None) -> dict:
    """Starts Redis, seeds it, starts the replicas and both nginx instances, measures, stops them all."""
    from sainet.bench.runner import BenchConfig, seed_users
    from service.artifact import Artifact
    from service.embedded_redis import redis_server_binary

    artifact = Artifact(artifact_dir)
    if config.history > artifact.history_length:
        raise ValueError(f"history {config.history} exceeds the model's maximum {artifact.history_length}")
    started = time.perf_counter()
    stack: list = []       # everything started, stopped in reverse order whatever happens
    try:
        redis_port = free_port()
        redis_dir = work_dir / "redis"
        redis_dir.mkdir(parents=True)
        command = [redis_server_binary(), "--port", str(redis_port), "--bind", LOOPBACK, "--dir", str(redis_dir),
                   "--save", "", "--appendonly", "no"]
        redis = GroupProcess("redis", pinned(command, load_cpus), log_dir / "redis.log").start()
        stack.append(redis.stop)
        import redis as redis_py

        client = redis_py.Redis(host=LOOPBACK, port=redis_port, socket_timeout=1)
        try:
            wait_until(client.ping, 20, "redis-server to answer", alive=redis.check_alive)
        finally:
            client.close()
        redis_url = f"redis://{LOOPBACK}:{redis_port}/0"
        log.info("seeding %d users (N = %d) into %s", config.users, config.history, redis_url)
        bodies = seed_users(redis_url, artifact, BenchConfig(candidates=config.candidates, history=config.history,
                                                              users=config.users, seed=config.seed))
        bodies_path = work_dir / "bodies.json"
        bodies_path.write_text(json.dumps(bodies))

        replicas = [Replica(name, cpu, artifact_dir, artifact.history_length, redis_url, log_dir)
                    for name, cpu in zip("AB", replica_cpus)]
        for replica in replicas:
            replica.proc.start()
            stack.append(replica.proc.stop)
        for replica in replicas:
            replica.wait_ready()
        served = json.loads(http_get(f"{replicas[0].url}/v2/models"))["models"][0]
        log.info("replicas ready: %s", ", ".join(f"{r.name} on CPU {r.cpu} (:{r.port})" for r in replicas))

        front = {}
        for n in (1, 2):
            nginx = Nginx(f"nginx-{n}", [r.port for r in replicas[:n]], free_port(), work_dir / f"nginx-{n}", log_dir,
                          binary=nginx_binary, cpus=load_cpus)
            stack.append(nginx.stop)
            front[n] = nginx.start()
        for n, nginx in front.items():
            (log_dir / f"nginx-{n}.conf").write_text(nginx.conf.read_text())

        groups = {**{f"replica {r.name}": r.proc.pid for r in replicas},
                  **{f"nginx-{n}": front[n].proc.pid for n in front}, "redis": redis.pid}
        setup = Setup(front, replicas, bodies_path, load_cpus, groups, config)
        # warm-up through each front (connections, the replicas' first batches)
        for n in (1, 2):
            run_load(setup.url(n), bodies_path, "closed", 2.0, 0.5, load_cpus, concurrency=8)
        result = measure(setup)
        result["layout"] = {"replicas": {r.name: {"cpu": r.cpu, "port": r.port} for r in replicas},
                            "load_generator_nginx_redis_cpus": load_cpus or "unpinned",
                            "nginx_ports": {n: f.port for n, f in front.items()},
                            "served": {k: served.get(k) for k in ("name", "version", "precision", "provider")}}
        for r in replicas:
            try:
                rss = {}
                for line in Path(f"/proc/{r.proc.pid}/status").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in ("VmRSS", "VmHWM"):
                        rss[key] = int(value.split()[0]) / 1024
                result["layout"]["replicas"][r.name]["peak_rss_mb"] = rss.get("VmHWM")
            except OSError:
                pass
        result["wall_seconds"] = time.perf_counter() - started
        return result
    finally:
        for stop in reversed(stack):
            try:
                stop()
            except Exception as error:   # keep stopping the rest
                log.warning("cleanup: %r", error)
