"""`sainet bench`: the service measured side by side with its own limits, in one invocation on one
machine and one model (see docs/performance.md for how to read it).

1. compute limit: raw ONNX Runtime requests/s for R requests x C candidates, in-process, for each
   precision the artifact holds, with its FLOPs counted from the graph and its GFLOP/s against the
   core's fp32 FMA peak (`sainet.bench.flops`);
2. framework floor: the same HTTP stack answering C zeros (no Redis, no model);
3. the service end to end: max throughput (closed loop), the max sustainable rate (the highest
   open-loop rate it keeps up with), then p50/p99 at 25/50/75% of that rate (open loop);
4. naive baseline: the same API without batching, one PyTorch eager forward per request;
5. replicated variant: the history encoded once per candidate instead of once per request.

Servers run pinned to one CPU and the load generator (with Redis, which plays the remote feature
store) to another, when the machine has two.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model.provenance import git_commit
from service.artifact import Artifact, list_versions, resolve_model_root
from service.embedded_redis import EmbeddedRedis
from service.settings import Settings
from service.store import Behaviour, RedisBulkWriter
from service.testing import free_port

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    candidates: int = 100
    history: int = 50
    users: int = 2000
    concurrency: int = 32             # closed-loop connections
    closed_seconds: float = 20.0
    open_seconds: float = 20.0
    warmup_seconds: float = 2.0
    probe_seconds: float = 8.0        # each open-loop step of the search for the sustainable rate
    compute_seconds: float = 2.0      # per compute-limit point
    batch_sizes: tuple[int, ...] = (1, 4, 16, 64)
    replicated_batch: int = 8
    load_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    seed: int = 0

    @classmethod
    def quick(cls, **overrides) -> "BenchConfig":
        return cls(**{"closed_seconds": 6.0, "open_seconds": 6.0, "probe_seconds": 4.0, "warmup_seconds": 1.0,
                      "compute_seconds": 0.5, **overrides})


def resolve_artifact_dir(model_dir: Path) -> Path:
    """A version directory from a model root (<root>/<name>/<version>), a name dir or a version dir."""
    model_dir = Path(model_dir)
    if (model_dir / "meta.json").exists():
        return model_dir
    root = model_dir if list_versions(model_dir) else resolve_model_root(model_dir, None)
    versions = list_versions(root)
    if not versions:
        raise FileNotFoundError(f"no model version under {model_dir}")
    return root / versions[-1]


def pick_cpus() -> tuple[int, int, bool]:
    """(server CPU, load-generator CPU, whether they differ)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) == 1:
        return cpus[0], cpus[0], False
    return cpus[0], cpus[1], True


def seed_users(url: str, artifact: Artifact, config: BenchConfig) -> list[dict]:
    """Writes `users` full histories to Redis and returns request bodies for them."""
    rng = np.random.default_rng(config.seed)
    items, scenarios = list(artifact.item_index), artifact.scenarios
    writer = RedisBulkWriter(url, history_length=max(config.history, 1), prefix="sainet")
    histories = {}
    for u in range(config.users):
        picks = rng.integers(len(items), size=config.history)
        tags = rng.integers(len(scenarios), size=config.history)
        histories[f"bench-{u}"] = [Behaviour(items[i], scenarios[t], float(k)) for k, (i, t) in
                                   enumerate(zip(picks, tags))]
    writer.write(histories, {})
    writer.close()
    bodies = []
    for u in range(config.users):
        cands = rng.integers(len(items), size=config.candidates)
        bodies.append({"user_id": f"bench-{u}", "scenario": scenarios[u % len(scenarios)],
                       "candidates": [items[i] for i in cands]})
    return bodies


class Server:
    """A server subprocess pinned to one CPU; started, waited for, measured (RSS) and stopped."""

    def __init__(self, name: str, command: list[str], cpu: int, port: int, ready_path: str,
                 env: dict[str, str] | None = None, log_dir: Path | None = None):
        self.name, self.command, self.cpu, self.port, self.ready_path = name, command, cpu, port, ready_path
        self.env = {**os.environ, **(env or {})}
        self.log_path = (log_dir or Path(tempfile.gettempdir())) / f"bench-{name}.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Server":
        cpu = self.cpu
        self._log = open(self.log_path, "w")
        # its own process group: a server that starts workers of its own (LitServe) is stopped whole
        self.process = subprocess.Popen(self.command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}), start_new_session=True)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}{self.ready_path}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} server exited ({self.process.returncode}); see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} server not ready within {timeout}s; see {self.log_path}")

    def rss_mb(self) -> dict[str, float]:
        """Resident memory now and at its peak (VmHWM), from /proc."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
        return {"rss_mb": fields.get("VmRSS", float("nan")), "peak_rss_mb": fields.get("VmHWM", float("nan"))}

    def __exit__(self, *exc) -> None:
        if self.process:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            try:     # whatever it started and left behind
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._log.close()


def run_load(url: str, bodies_path: Path, mode: str, cpu: int, seconds: float, warmup: float,
             concurrency: int | None = None, rate: float | None = None) -> dict:
    out = Path(tempfile.mkstemp(prefix="bench-load-", suffix=".json")[1])
    command = [sys.executable, "-m", "sainet.bench.loadgen", "--url", url, "--bodies", str(bodies_path),
               "--mode", mode, "--seconds", str(seconds), "--warmup", str(warmup), "--cpu", str(cpu),
               "--out", str(out)]
    if concurrency:
        command += ["--concurrency", str(concurrency)]
    if rate:
        command += ["--rate", str(rate)]
    subprocess.run(command, check=True, timeout=seconds + warmup + 120)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def sustained(summary: dict) -> bool:
    """An open-loop run kept up: it completed what was offered, with almost no failures and a
    bounded tail (a queue that grows for the whole run fails the last two)."""
    return (summary["achieved_rate"] >= 0.97 * summary["offered_rate"] and summary["failed"] <= 0.001 * summary["sent"]
            and summary["p99_ms"] <= 500.0)


def find_sustainable_rate(url: str, bodies_path: Path, cpu: int, closed_max: float, config: BenchConfig) -> dict:
    """The highest open-loop rate, stepping down from the closed-loop maximum by 10%, that the
    service sustains. The closed loop overstates it: its 32 clients wait for each other, so batches
    stay full, while open-loop arrivals also come while a batch runs."""
    probes = []
    for fraction in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3):
        summary = run_load(url, bodies_path, "open", cpu, config.probe_seconds, config.warmup_seconds,
                           rate=max(fraction * closed_max, 1.0))["summary"]
        probes.append({"fraction_of_closed_max": fraction, **summary})
        if sustained(summary):
            return {"rate": summary["offered_rate"], "probes": probes}
    return {"rate": probes[-1]["offered_rate"], "probes": probes, "note": "no probe was sustained"}


def run_bench(model_dir: Path, out_dir: Path, config: BenchConfig) -> dict:
    from sainet.bench.compute import compute_limits

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    artifact_dir = resolve_artifact_dir(model_dir)
    artifact = Artifact(artifact_dir)
    if config.history > artifact.history_length:
        raise ValueError(f"history {config.history} exceeds the model's maximum {artifact.history_length}")
    server_cpu, load_cpu, isolated = pick_cpus()
    results: dict = {"config": asdict(config), "artifact": str(artifact_dir), "cpus": {
        "server": server_cpu, "load_generator_and_redis": load_cpu, "isolated": isolated}}

    log.info("compute limit (in-process, CPU %d)", server_cpu)
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {server_cpu})
    try:
        # Every precision the artifact holds, each against the core's peak; the top level is the one
        # `sainet serve` will pick, which the service's figures are held against.
        results["compute"] = compute_limits(artifact, config.candidates, config.history, config.batch_sizes,
                                            threads=1, seconds_per_point=config.compute_seconds,
                                            replicated_batch=config.replicated_batch,
                                            precision=Settings().precision)
    finally:
        os.sched_setaffinity(0, own)

    redis_server = EmbeddedRedis(free_port())
    redis_url = redis_server.start()
    bodies_path = out_dir / ".bodies.json"
    try:
        os.sched_setaffinity(redis_server.process.pid, {load_cpu})
        bodies_path.write_text(json.dumps(seed_users(redis_url, artifact, config)))
        closed = dict(mode="closed", cpu=load_cpu, seconds=config.closed_seconds, warmup=config.warmup_seconds,
                      concurrency=config.concurrency)
        python = sys.executable

        log.info("framework floor")
        port = free_port()
        with Server("floor", [python, "-m", "sainet.bench.targets", "--kind", "floor", "--model-dir",
                              str(artifact_dir), "--port", str(port)], server_cpu, port, "/docs", log_dir=out_dir):
            results["floor"] = run_load(f"http://127.0.0.1:{port}/score", bodies_path, **closed)["summary"]

        log.info("service end to end")
        port = free_port()
        env = {"SAINET_MODEL_DIR": str(artifact_dir.parent.parent), "SAINET_MODEL_NAME": artifact_dir.parent.name,
               "SAINET_MODEL_VERSION": artifact_dir.name, "SAINET_REDIS_URL": redis_url,
               "SAINET_INTRA_OP_THREADS": "1", "SAINET_RELOAD_POLL_SECONDS": "0",
               "SAINET_HISTORY_LENGTH": str(artifact.history_length)}
        service: dict = {}
        with Server("service", [python, "-m", "sainet.cli", "serve", "--port", str(port)], server_cpu, port,
                    "/v2/health/ready", env=env, log_dir=out_dir) as server:
            url = f"http://127.0.0.1:{port}/score"
            service["max"] = run_load(url, bodies_path, **closed)["summary"]
            service["sustainable"] = find_sustainable_rate(url, bodies_path, load_cpu, service["max"]["achieved_rate"],
                                                           config)
            max_rate = service["sustainable"]["rate"]
            service["load_points"] = []
            for fraction in config.load_fractions:
                rate = max(fraction * max_rate, 1.0)
                summary = run_load(url, bodies_path, "open", load_cpu, config.open_seconds, config.warmup_seconds,
                                   rate=rate)["summary"]
                service["load_points"].append({"fraction": fraction, **summary})
            service["memory"] = server.rss_mb()
        results["service"] = service

        log.info("naive PyTorch baseline")
        port = free_port()
        with Server("naive", [python, "-m", "sainet.bench.targets", "--kind", "naive", "--model-dir",
                              str(artifact_dir), "--redis-url", redis_url, "--port", str(port)], server_cpu, port,
                    "/docs", log_dir=out_dir):
            results["naive"] = run_load(f"http://127.0.0.1:{port}/score", bodies_path, **closed)["summary"]
    finally:
        bodies_path.unlink(missing_ok=True)
        redis_server.stop()

    e2e = results["service"]["max"]["achieved_rate"]
    half = next((p for p in results["service"]["load_points"] if p["fraction"] == 0.5), None)
    results.update({
        "ratio_to_framework_floor": e2e / results["floor"]["achieved_rate"],
        "speedup_vs_naive": e2e / results["naive"]["achieved_rate"],
        "shared_history_speedup": results["compute"]["replicated"]["speedup"],
        "p99_ms_at_half_load": None if half is None else half["p99_ms"],
        "rss_mb": results["service"]["memory"]["peak_rss_mb"],
        "ratio_to_compute_limit": e2e / results["compute"]["max_requests_per_s"],
        "max_sustainable_rps": results["service"]["sustainable"]["rate"],
        "fp32_fraction_of_peak": results["compute"]["fp32_fraction_of_peak"],
        "int8_speedup_over_fp32": results["compute"]["int8_speedup_over_fp32"],
        "machine": machine(), "commit": git_commit(), "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "wall_seconds": time.perf_counter() - started,
    })
    (out_dir / "bench.json").write_text(json.dumps(results, indent=2))
    (out_dir / "bench.md").write_text(markdown(results))
    plot(results, out_dir / "latency_vs_load.png")
    return results


def machine() -> dict:
    import onnxruntime

    cpu_model = ""
    try:
        cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                          if line.startswith("model name")), "")
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu_model, "cpus": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__}


TARGETS = {"end-to-end throughput / framework floor": ("ratio_to_framework_floor", ">=", 0.7),
           "end-to-end throughput / naive baseline": ("speedup_vs_naive", ">=", 5.0),
           "replicated / shared history cost": ("shared_history_speedup", ">=", 5.0),
           "p99 at 50% of max sustainable rate (ms)": ("p99_ms_at_half_load", "<=", 30.0),
           "service peak RSS (MB)": ("rss_mb", "<=", 400.0),
           "fp32 compute limit / core's fp32 FMA peak": ("fp32_fraction_of_peak", ">=", 0.7)}


def markdown(r: dict) -> str:
    c = r["config"]
    lines = [f"# sainet bench: C = {c['candidates']}, N = {c['history']}", "",
             f"Machine: {r['machine']['cpu']} ({r['machine']['cpus']} CPUs); server on CPU {r['cpus']['server']}, "
             f"load generator and Redis on CPU {r['cpus']['load_generator_and_redis']}"
             f"{'' if r['cpus']['isolated'] else ' (the same CPU: figures are not isolated)'}. "
             f"Commit {r['commit'][:10]}, {r['finished_at'][:19]}Z, {r['wall_seconds']:.0f} s.", "",
             "| figure | value | target | met |", "|---|---|---|---|"]
    for label, (key, op, target) in TARGETS.items():
        value = r[key]
        met = value is not None and (value >= target if op == ">=" else value <= target)
        shown = "n/a" if value is None else f"{value:.3g}"
        lines.append(f"| {label} | {shown} | {op} {target:g} | {'yes' if met else 'no'} |")
    lines += ["", "| stage | requests/s | p50 ms | p99 ms | failed |", "|---|---|---|---|---|",
              f"| compute limit (ONNX Runtime, best of R = {c['batch_sizes']}) | "
              f"{r['compute']['max_requests_per_s']:.0f} | | | |"]
    for name, key in (("framework floor (C zeros)", "floor"), ("naive PyTorch, no batching", "naive")):
        s = r[key]
        lines.append(f"| {name} | {s['achieved_rate']:.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['failed']} |")
    s = r["service"]["max"]
    lines.append(f"| service, max (closed loop, {c['concurrency']} connections) | {s['achieved_rate']:.0f} | "
                 f"{s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['failed']} |")
    sus = r["service"]["sustainable"]
    lines.append(f"| service, max sustainable (open loop, highest rate kept up) | {sus['rate']:.0f} | | | |")
    for p in r["service"]["load_points"]:
        lines.append(f"| service at {p['fraction']:.0%} of sustainable (open loop, {p['offered_rate']:.0f}/s offered) | "
                     f"{p['achieved_rate']:.0f} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['failed']} |")
    lines += ["", "Compute limit by batch size (in-process ONNX Runtime, one thread):", "",
              "| requests R | candidates/s | requests/s | ms per run |", "|---|---|---|---|"]
    for p in r["compute"]["points"]:
        lines.append(f"| {p['requests']} | {p['candidates_per_s']:.0f} | {p['requests_per_s']:.0f} | "
                     f"{p['median_ms']:.2f} |")
    rep = r["compute"]["replicated"]
    lines += ["", f"Replicated history (R = {rep['requests']}): shared {rep['shared_ms']:.2f} ms, replicated "
              f"{rep['replicated_ms']:.2f} ms per run: {rep['speedup']:.1f}x.",
              f"Service memory: {r['service']['memory']['rss_mb']:.0f} MB RSS after the run, "
              f"{r['service']['memory']['peak_rss_mb']:.0f} MB peak.", ""]
    lines += peak_markdown(r["compute"], c["candidates"], c["history"])
    return "\n".join(lines)


def peak_markdown(compute: dict, candidates: int, history: int) -> list[str]:
    """The compute limit of each precision against the core's peak (FLOPs counted from the graphs)."""
    by_precision, peak = compute.get("by_precision"), compute.get("peak")
    if not by_precision or not peak:
        return []
    ceiling = compute.get("gemm_ceiling", {})
    lines = [f"## Compute limit against the core's peak (C = {candidates}, N = {history}, one thread)", "",
             "| precision | serves | MFLOP per candidate | MFLOP per request: history / total | "
             "best R | requests/s | GFLOP/s | of fp32 FMA peak | of ORT's one-MatMul ceiling |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, p in by_precision.items():
        f = p.get("flops", {})
        if "flops_per_candidate" not in f:
            lines.append(f"| {name} | {'yes' if p['served'] else 'no'} | not counted: {f.get('error')} | | "
                         f"{p['best_batch_requests']} | {p['max_requests_per_s']:.0f} | | | |")
            continue
        measured = p.get("fraction_of_measured_gemm")
        lines.append(f"| {name} | {'yes' if p['served'] else 'no'} | {f['flops_per_candidate'] / 1e6:.4g} | "
                     f"{f['flops_per_request_fixed'] / 1e6:.3g} / {f['flops_per_request'] / 1e6:.4g} | "
                     f"{p['best_batch_requests']} | {p['max_requests_per_s']:.0f} | {p['achieved_gflops']:.1f} | "
                     f"{p['fraction_of_fp32_peak']:.0%} | {'' if measured is None else f'{measured:.0%}'} |")
    lines += ["", f"Peak: {peak['derivation']}.", ""]
    if ceiling.get("fp32_gflops", 0) > peak["fp32_peak_gflops"]:
        lines += [f"ONNX Runtime's measured fp32 MatMul ({ceiling['fp32_gflops']:.1f} GFLOP/s) exceeds that nominal "
                  f"peak: the core runs above the {peak['ghz']:.3g} GHz reported ({peak['clock_source']}), so the "
                  f"fraction of peak overstates; at least {ceiling['fp32_gflops'] / peak['fp32_flops_per_cycle']:.2f} "
                  "GHz is implied (set SAINET_CPU_GHZ to the boost clock).", ""]
    fp32 = by_precision.get("fp32", {}).get("flops", {})
    if "macs_per_candidate" in fp32:
        lines += [f"FLOPs are counted from each ONNX graph (`sainet.bench.flops`: MatMul/Gemm/Einsum and their "
                  f"quantised forms, 2 per multiply-add, with shape inference at R x C x N); the per-candidate part "
                  f"is the difference between C = {candidates} and C = {fp32['candidates_alt']}, the rest is per "
                  f"request (the history). fp32: {fp32['macs_per_candidate']:,.0f} multiply-adds per candidate, "
                  f"{fp32['macs_per_request_fixed']:,.0f} per request for the history.", ""]
    int8 = by_precision.get("int8")
    if int8 and "int8_gops" in int8:
        kinds = int8["flops"]["by_kind"]
        lines += [f"int8: {kinds['int8']['macs_per_request'] / int8['flops']['macs_per_request']:.1%} of its "
                  f"multiply-adds run as int8 (MatMulInteger), the rest (activation x activation matmuls) in fp32. "
                  f"Its GFLOP/s above are GFLOP-equivalents (the same arithmetic as fp32) held against the fp32 peak; "
                  f"as int8 work it does {int8['int8_gops']:.1f} G int8 ops/s, "
                  f"{int8['fraction_of_int8_nominal_peak']:.0%} of a {peak['int8_derivation']}.",
                  f"int8 / fp32 compute limit: {compute['int8_speedup_over_fp32']:.2f}x.", ""]
    if "shapes" in ceiling:
        lines += ["ONNX Runtime's own ceiling on this core, one MatMul x [M, K] @ W [K, N] (int8: the same dynamic "
                  "quantisation as the export):", "", "| M x K x N | fp32 GFLOP/s | int8 GFLOP-equivalent/s |",
                  "|---|---|---|"]
        for s in ceiling["shapes"]:
            lines.append(f"| {s['m']} x {s['k']} x {s['n']} | {s['fp32_gflops']:.1f} | {s['int8_gflops']:.1f} |")
        lines.append("")
    return lines


def plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = r["service"]["load_points"]
    max_point = r["service"]["max"]
    xs = [p["offered_rate"] for p in points] + [max_point["achieved_rate"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    probes = sorted(r["service"]["sustainable"]["probes"], key=lambda p: p["offered_rate"])
    ax.plot(xs, [p["p50_ms"] for p in points] + [max_point["p50_ms"]], marker="o", label="p50")
    ax.plot(xs, [p["p99_ms"] for p in points] + [max_point["p99_ms"]], marker="o", label="p99")
    ax.scatter([p["offered_rate"] for p in probes], [p["p99_ms"] for p in probes], marker="x", color="grey",
               label="p99, search probes")
    ax.axvline(r["service"]["sustainable"]["rate"], color="green", linestyle="--", label="max sustainable")
    ax.axvline(r["floor"]["achieved_rate"], color="grey", linestyle="--", label="framework floor")
    ax.axvline(r["compute"]["max_requests_per_s"], color="black", linestyle=":", label="compute limit")
    ax.axvline(r["naive"]["achieved_rate"], color="red", linestyle="-.", label="naive PyTorch")
    ax.set(xlabel="offered load (requests/s); last point: closed-loop max", ylabel="latency (ms)",
           title=f"/score, C = {r['config']['candidates']}, N = {r['config']['history']}")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
