"""The chaos/overload measurement of issue 13: one command starts its own Redis, a delaying proxy in
front of it and the service (and, with `--baseline-ref`, a worktree of another commit's service),
runs the scenarios against each and writes `report.json`, `report.md` and plots.

CPUs: the service is pinned to the first CPU of this process's affinity; the load generator, the
proxy, Redis and this process to the second (as `sainet bench` does). Redis traffic always goes
through the proxy (delay 0 unless a scenario sets one), so every phase pays the same hop.

Scenarios, per version of the service (see `loadtest/chaos/__init__.py` for the figures):
1. closed loop, `connections` connections, C candidates, and the in-process compute limit;
2. the sustainable open-loop rate (stepping down from the closed-loop max by 10%, as
   `sainet bench` does), then an open loop at `overload_factor` x that rate;
3. Redis +0, +40 and +200 ms through the proxy: closed loop, readiness polled every 100 ms, one
   slow /events sender;
4. Redis killed (SAVE, SIGKILL, the proxy refusing connections) for `kill_seconds` under an open
   loop at `kill_load_fraction` of the sustainable rate, then restarted on its port with its data;
5. `flood_senders` concurrent /events senders beside a `flood_score_connections` /score closed loop;
6. `events_total` events through /events under a /score load and periodic Redis stalls, each
   user's events in order from one sender, retried (same body, same event_ids) after 429/503 or a
   client timeout and sometimes sent twice on purpose; then every user's list is read from Redis.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from loadtest.chaos.procs import REPO_ROOT, ProxyProcess, RedisProcess, cpus, redis_client
from loadtest.procs import GroupProcess, free_port, http_ok, pinned, wait_until

log = logging.getLogger("chaos")


SCENARIOS = ("closed", "overload", "delays", "kill", "flood", "events")


@dataclass(frozen=True)
class ChaosConfig:
    candidates: int = 50
    users: int = 2000
    connections: int = 32
    phase_seconds: float = 12.0
    warmup_seconds: float = 1.0
    probe_seconds: float = 4.0
    overload_factor: float = 3.0
    deadline_ms: float = 1000.0
    delays_ms: tuple[float, ...] = (40.0, 200.0)
    ready_interval_seconds: float = 0.1
    kill_seconds: float = 10.0
    kill_before_seconds: float = 3.0
    kill_after_seconds: float = 8.0
    kill_load_fraction: float = 0.5
    flood_senders: int = 200
    flood_events_per_request: int = 10
    flood_score_connections: int = 64
    events_total: int = 100_000
    events_per_user: int = 100
    events_per_request: int = 20
    events_senders: int = 50
    events_score_connections: int = 16
    events_timeout_seconds: float = 2.0
    duplicate_share: float = 0.05
    stall_ms: float = 300.0
    stall_every_seconds: float = 2.0
    stall_for_seconds: float = 0.5
    compute_seconds: float = 1.0
    service_start_seconds: float = 180.0
    seed: int = 0

    @classmethod
    def quick(cls, **overrides) -> "ChaosConfig":
        return cls(**{"phase_seconds": 3.0, "warmup_seconds": 0.5, "probe_seconds": 2.0, "kill_seconds": 4.0,
                      "kill_before_seconds": 1.5, "kill_after_seconds": 4.0, "events_total": 10_000,
                      "compute_seconds": 0.3, **overrides})


@dataclass
class Target:
    """One version of the service: the code in `code_dir`, run with this venv's Python."""
    label: str
    code_dir: Path
    commit: str
    settings_text: str = ""

    def __post_init__(self):
        try:
            self.settings_text = (self.code_dir / "service" / "settings.py").read_text()
        except OSError:
            self.settings_text = ""

    def supports_setting(self, name: str) -> bool:
        return f"    {name}:" in self.settings_text


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class Env:
    """What every scenario needs: the processes, ports and files of this run."""
    config: ChaosConfig
    out_dir: Path
    log_dir: Path
    artifact_dir: Path
    history_length: int
    items: list[str]
    scenarios: list[str]
    server_cpu: int
    load_cpu: int
    redis: RedisProcess
    proxy: ProxyProcess
    bodies_path: Path
    service_env: dict[str, str] = field(default_factory=dict)
    scenarios_selected: tuple[str, ...] = ()


def git(*args: str, cwd: Path = REPO_ROOT, timeout: float = 30) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                          timeout=timeout).stdout.strip()


def describe_tree(path: Path) -> str:
    try:
        commit = git("rev-parse", "--short", "HEAD", cwd=path)
        dirty = git("status", "--porcelain", "--untracked-files=no", cwd=path)
        return commit + ("+uncommitted" if dirty else "")
    except (subprocess.SubprocessError, OSError):
        return "unknown"


def pick_cpus() -> tuple[int, int]:
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) > 1 else (cpus[0], cpus[0])


class Service:
    """`python -m sainet serve` of a target, pinned to the server CPU, in its own process group."""

    def __init__(self, env: Env, target: Target):
        self.env, self.target = env, target
        self.port = free_port()
        self.managed: GroupProcess | None = None
        self.code = ""
        settings = {"model_dir": env.artifact_dir.parent.parent, "model_name": env.artifact_dir.parent.name,
                    "model_version": env.artifact_dir.name, "redis_url": env.proxy.url,
                    "intra_op_threads": 1, "reload_poll_seconds": 0, "history_length": env.history_length,
                    "request_timeout_ms": env.config.deadline_ms, "access_log": "false"}
        self.passed = {k: str(v) for k, v in settings.items() if target.supports_setting(k)}
        self.skipped = sorted(set(settings) - set(self.passed))
        self.environment = {f"SAINET_{k.upper()}": v for k, v in self.passed.items()}
        self.environment.update(env.service_env)          # --service-env: passed as given
        self.environment["PYTHONPATH"] = str(target.code_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def imports_from(self) -> str:
        """Where this target's interpreter setup imports the service from (it must be its own tree)."""
        answer = subprocess.run([sys.executable, "-c", "import service.app, sainet.cli; print(service.app.__file__)"],
                                env={**os.environ, **self.environment}, cwd=self.target.code_dir,
                                capture_output=True, text=True, timeout=120)
        return answer.stdout.strip() or answer.stderr.strip()[-300:]

    def start(self) -> "Service":
        where = self.imports_from()
        if not Path(where).resolve().is_relative_to(self.target.code_dir.resolve()):
            raise RuntimeError(f"{self.target.label}: `service` would be imported from {where}, "
                               f"not from {self.target.code_dir}")
        self.code = where
        command = [sys.executable, "-m", "sainet", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        name = f"service-{self.target.label}"
        self.managed = GroupProcess(name, pinned(command, cpus(self.env.server_cpu)),
                                    self.env.log_dir / f"{name}.log", env=self.environment,
                                    cwd=self.target.code_dir).start()
        wait_until(lambda: http_ok(self.url + "/v2/health/ready", timeout=2), self.env.config.service_start_seconds,
                   f"service {self.target.label} ready", interval=0.2, alive=self.managed.check_alive)
        return self

    def alive(self) -> bool:
        return self.managed is not None and self.managed.alive()

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop(grace_seconds=15)

    def settle(self, body: dict, timeout: float = 15.0) -> float | None:
        """Seconds until a /score answers 200 and not degraded (what one phase leaves behind, a full
        queue or a Redis client backing off, must not be measured by the next); None if never."""
        import urllib.error
        import urllib.request

        started = time.monotonic()
        data = json.dumps(body).encode()
        while time.monotonic() - started < timeout:
            request = urllib.request.Request(self.url + "/score", data=data, method="POST",
                                             headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    if answer.status == 200 and b'"degraded":true' not in answer.read():
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        return None


class LoadRun:
    """One load-generator process running one plan (see `loadtest.chaos.loadgen`)."""

    def __init__(self, env: Env, plan: dict, lead_seconds: float = 1.5):
        self.env = env
        self.plan = {"start_at": time.monotonic() + lead_seconds, **plan}
        handle, plan_path = tempfile.mkstemp(prefix="chaos-plan-", suffix=".json")
        os.close(handle)
        self.plan_path = Path(plan_path)
        self.out_path = self.plan_path.with_name(self.plan_path.name.replace("chaos-plan-", "chaos-result-"))
        self.plan_path.write_text(json.dumps(self.plan))
        self.managed: GroupProcess | None = None

    @property
    def start_at(self) -> float:
        return self.plan["start_at"]

    def start(self) -> "LoadRun":
        command = [sys.executable, "-m", "loadtest.chaos.loadgen", "--plan", str(self.plan_path),
                   "--out", str(self.out_path)]
        self.managed = GroupProcess("loadgen", pinned(command, cpus(self.env.load_cpu)),
                                    self.env.log_dir / "loadgen.log", cwd=REPO_ROOT,
                                    env={"PYTHONPATH": str(REPO_ROOT)}).start()
        return self

    def result(self, timeout: float) -> dict:
        try:
            self.managed.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.managed.stop(grace_seconds=2)
            raise TimeoutError(f"the load generator did not finish within {timeout:.0f} s")
        finally:
            self.plan_path.unlink(missing_ok=True)
        if self.managed.process.returncode != 0:
            raise RuntimeError(f"the load generator failed ({self.managed.process.returncode}):\n"
                               f"{self.managed.log_tail()}")
        result = json.loads(self.out_path.read_text())
        self.out_path.unlink(missing_ok=True)
        return result

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop(grace_seconds=2)
        self.plan_path.unlink(missing_ok=True)
        self.out_path.unlink(missing_ok=True)


def run_load(env: Env, plan: dict, extra_timeout: float = 60.0) -> dict:
    run = LoadRun(env, plan).start()
    try:
        return run.result(plan.get("warmup", 0) + plan.get("seconds", 0) + plan.get("max_seconds", 0)
                          + extra_timeout)
    finally:
        run.stop()


def base_plan(env: Env, service: Service, seconds: float, warmup: float | None = None) -> dict:
    return {"port": service.port, "seconds": seconds,
            "warmup": env.config.warmup_seconds if warmup is None else warmup,
            "headers": {"X-Request-Timeout-Ms": str(int(env.config.deadline_ms))}}


def score_closed(env: Env, connections: int) -> dict:
    return {"mode": "closed", "connections": connections, "bodies": str(env.bodies_path), "timeout": 10.0}


def score_open(env: Env, rate: float) -> dict:
    return {"mode": "open", "rate": max(rate, 1.0), "bodies": str(env.bodies_path), "timeout": 10.0,
            "max_in_flight": 4096}


# ---------------------------------------------------------------------------------------------
# summaries of the load generator's records


def records(score: dict) -> dict[str, np.ndarray]:
    return {"t_sched": np.asarray(score["t_sched"], float), "t_done": np.asarray(score["t_done"], float),
            "status": np.asarray(score["status"], dtype=object), "degraded": np.asarray(score["degraded"], int)}


def window(rec: dict[str, np.ndarray], t_from: float, t_to: float, closed: bool) -> dict[str, np.ndarray]:
    """Requests of the measured window: open loop, those scheduled in it; closed loop, those sent
    in it and finished in it."""
    mask = (rec["t_sched"] >= t_from) & (rec["t_sched"] < t_to)
    if closed:
        mask &= rec["t_done"] <= t_to
    return {k: v[mask] for k, v in rec.items()}


def pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def summarize(rec: dict[str, np.ndarray], seconds: float, deadline_ms: float) -> dict:
    status = rec["status"]
    latency = (rec["t_done"] - rec["t_sched"]) * 1e3
    ok = status == "200"
    rejected = np.isin(status, ["429", "503"])
    counts: dict[str, int] = {}
    for s in status:
        counts[s] = counts.get(s, 0) + 1
    degraded = rec["degraded"][ok] == 1
    return {
        "seconds": seconds, "sent": int(len(status)), "ok": int(ok.sum()), "status_counts": counts,
        "achieved_rate": float(ok.sum() / seconds) if seconds > 0 else 0.0,
        "goodput_within_deadline": float((ok & (latency <= deadline_ms)).sum() / seconds) if seconds > 0 else 0.0,
        "p50_ms": pct(latency[ok], 50), "p90_ms": pct(latency[ok], 90), "p99_ms": pct(latency[ok], 99),
        "max_ms": float(latency[ok].max()) if ok.any() else None,
        "degraded": int(degraded.sum()), "degraded_share": float(degraded.mean()) if ok.any() else None,
        "rejected": int(rejected.sum()),
        "rejection_p50_ms": pct(latency[rejected], 50), "rejection_p99_ms": pct(latency[rejected], 99),
        "server_errors_5xx": int(sum(1 for s in status if s.startswith("5"))),
        "client_errors": int(sum(1 for s in status if not s.isdigit())),
    }


def answered_late(rec: dict[str, np.ndarray], t_from: float, t_to: float) -> int:
    """Closed loop: requests sent in the window but answered after it (not in its figures)."""
    return int(((rec["t_sched"] >= t_from) & (rec["t_sched"] < t_to) & (rec["t_done"] > t_to)).sum())


def sustained(summary: dict) -> bool:
    """As `sainet bench` judges an open-loop probe: >= 97% of the offered rate answered 200, <= 0.1%
    not 200, p99 <= 500 ms."""
    failed = summary["sent"] - summary["ok"]
    return (summary["achieved_rate"] >= 0.97 * summary["offered_rate"] and failed <= 0.001 * summary["sent"]
            and (summary["p99_ms"] or 0.0) <= 500.0)


def timeline(rec: dict[str, np.ndarray], t0: float, seconds: float, bin_seconds: float = 1.0) -> dict:
    """Per bin of finishing time: answers by kind and the p99 of the 200s."""
    edges = np.arange(0.0, seconds + bin_seconds, bin_seconds)
    t = rec["t_done"] - t0
    status = rec["status"]
    latency = (rec["t_done"] - rec["t_sched"]) * 1e3
    kinds = {"ok": (status == "200") & (rec["degraded"] == 0), "degraded": (status == "200") & (rec["degraded"] == 1),
             "429": status == "429", "503": status == "503",
             "other_5xx": np.array([s.startswith("5") and s != "503" for s in status], bool),
             "client_error": np.array([not s.isdigit() for s in status], bool)}
    out: dict = {"t": edges[:-1].tolist(), "bin_seconds": bin_seconds}
    for name, mask in kinds.items():
        out[name] = np.histogram(t[mask], edges)[0].tolist()
    p99 = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (status == "200") & (t >= lo) & (t < hi)
        p99.append(pct(latency[sel], 99))
    out["p99_ms_of_200"] = p99
    return out


def largest_burst(times: np.ndarray, span: float = 0.05) -> int:
    """The most events within any `span` seconds."""
    times = np.sort(times)
    if not len(times):
        return 0
    ends = np.searchsorted(times, times + span, side="right")
    return int((ends - np.arange(len(times))).max())


def readiness(ready: dict | None, t_from: float, t_to: float) -> dict | None:
    if not ready:
        return None
    t = np.asarray(ready["t"], float)
    status = np.asarray(ready["status"], dtype=object)
    sel = (t >= t_from) & (t < t_to)
    status, flags = status[sel], np.asarray(ready["degraded"], int)[sel]
    counts: dict[str, int] = {}
    for s in status:
        counts[s] = counts.get(s, 0) + 1
    return {"polls": int(len(status)), "fraction_200": float((status == "200").mean()) if len(status) else None,
            "status_counts": counts, "reported_degraded": int((flags == 1).sum())}


def status_counts(values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in values:
        counts[s] = counts.get(s, 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------
# scenarios


def scenario_closed(env: Env, service: Service, compute_rps: float | None) -> dict:
    c = env.config
    result = run_load(env, {**base_plan(env, service, c.phase_seconds), "score": score_closed(env, c.connections)})
    raw = records(result["score"])
    rec = window(raw, result["measured_from"], result["planned_end"], closed=True)
    summary = summarize(rec, c.phase_seconds, c.deadline_ms)
    summary["answered_after_phase_end"] = answered_late(raw, result["measured_from"], result["planned_end"])
    return {"connections": c.connections, **summary, "compute_limit_rps": compute_rps,
            "ratio_to_compute_limit": summary["achieved_rate"] / compute_rps if compute_rps else None}


def open_phase(env: Env, service: Service, rate: float, seconds: float, ready: bool = False) -> tuple[dict, dict]:
    c = env.config
    plan = {**base_plan(env, service, seconds), "score": score_open(env, rate)}
    if ready:
        plan["ready_poll"] = {"interval": c.ready_interval_seconds, "timeout": 1.0}
    result = run_load(env, plan)
    rec = window(records(result["score"]), result["measured_from"], result["planned_end"], closed=False)
    return ({"offered_rate": rate, **summarize(rec, seconds, c.deadline_ms),
             "client_send_lag_ms": result["score"].get("client_send_lag_ms")}, {"result": result, "rec": rec})


def scenario_overload(env: Env, service: Service, closed_rps: float) -> dict:
    c = env.config
    probes = []
    rate = None
    for fraction in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3):
        summary, _ = open_phase(env, service, max(fraction * closed_rps, 1.0), c.probe_seconds)
        probes.append({"fraction_of_closed_max": fraction, **summary})
        if sustained(summary):
            rate = summary["offered_rate"]
            break
    note = None
    if rate is None:
        rate, note = probes[-1]["offered_rate"], "no probe was sustained; the lowest probe's rate is used"
    offered = c.overload_factor * rate
    summary, raw = open_phase(env, service, offered, c.phase_seconds)
    rec, result = raw["rec"], raw["result"]
    deadline_expiries = rec["t_done"][rec["status"] == "503"]
    return {
        "sustainable": {"rate": rate, "probes": probes, **({"note": note} if note else {})},
        "overload": {**summary, "factor": c.overload_factor,
                     "goodput_ratio_to_sustainable": summary["achieved_rate"] / rate,
                     "goodput_within_deadline_ratio": summary["goodput_within_deadline"] / rate,
                     "accepted_p99_within_deadline": (summary["p99_ms"] or 0.0) <= c.deadline_ms,
                     "largest_503_burst_in_50ms": largest_burst(deadline_expiries),
                     "connections_opened": result["score"].get("connections_opened"),
                     "timeline": timeline(rec, result["measured_from"], c.phase_seconds + 2.0,
                                          bin_seconds=1.0 if c.phase_seconds >= 8 else 0.5)},
    }


def trickle_spec(env: Env, body_format: str, prefix: str) -> dict:
    return {"senders": 1, "events_per_request": 10, "user_prefix": prefix, "pause": 0.05, "timeout": 5.0,
            "items": env.items, "scenarios": env.scenarios, "body_format": body_format}


def scenario_delays(env: Env, service: Service, body_format: str | None) -> dict:
    c = env.config
    phases = []
    try:
        for delay_ms in (0.0, *c.delays_ms):
            env.proxy.control.set_delay(delay_ms / 1000)
            plan = {**base_plan(env, service, c.phase_seconds), "score": score_closed(env, c.connections),
                    "ready_poll": {"interval": c.ready_interval_seconds, "timeout": 1.0}}
            if body_format:
                plan["events_flood"] = trickle_spec(env, body_format, f"ev3-{int(delay_ms)}")
            result = run_load(env, plan)
            t_from, t_to = result["measured_from"], result["planned_end"]
            raw = records(result["score"])
            rec = window(raw, t_from, t_to, closed=True)
            phase = {"delay_ms": delay_ms, **summarize(rec, c.phase_seconds, c.deadline_ms),
                     "answered_after_phase_end": answered_late(raw, t_from, t_to),
                     "readiness": readiness(result.get("ready"), t_from, t_to)}
            if "events_flood" in result:
                ev = window(records(result["events_flood"]), t_from, t_to, closed=True)
                phase["events"] = {"status_counts": status_counts(list(ev["status"])), "sent": int(len(ev["status"]))}
            phases.append(phase)
    finally:
        env.proxy.control.set_delay(0)
    base = phases[0]["achieved_rate"] or None
    for phase in phases:
        phase["throughput_ratio_to_no_delay"] = phase["achieved_rate"] / base if base else None
    return {"phases": phases}


def scenario_kill(env: Env, service: Service, sustainable: float) -> dict:
    c = env.config
    rate = c.kill_load_fraction * sustainable
    seconds = c.kill_before_seconds + c.kill_seconds + c.kill_after_seconds
    plan = {**base_plan(env, service, seconds), "score": score_open(env, rate),
            "ready_poll": {"interval": c.ready_interval_seconds, "timeout": 1.0}}
    run = LoadRun(env, plan).start()
    t_kill = t_restarted = t_back = None
    try:
        time.sleep(max(0.0, run.start_at + c.warmup_seconds + c.kill_before_seconds - time.monotonic()))
        t_kill = time.monotonic()
        env.redis.kill()
        env.proxy.control.down()
        time.sleep(max(0.0, t_kill + c.kill_seconds - time.monotonic()))
        env.redis.restart()
        env.proxy.control.up()
        t_restarted = time.monotonic()
        probe = redis_client(env.proxy.port, timeout=0.5)
        try:
            wait_until(probe.ping, 10.0, "Redis through the proxy", interval=0.01)
        finally:
            probe.close()
        t_back = time.monotonic()
        result = run.result(seconds + c.warmup_seconds + 60)
    finally:
        run.stop()
        if not env.redis.managed.alive():
            env.redis.restart()
        env.proxy.control.up()
    t0, t_end = result["measured_from"], result["planned_end"]
    rec = window(records(result["score"]), t0, t_end, closed=False)
    before = {k: v[rec["t_sched"] < t_kill] for k, v in rec.items()}
    during = {k: v[(rec["t_sched"] >= t_kill) & (rec["t_sched"] < t_back)] for k, v in rec.items()}
    after = {k: v[rec["t_sched"] >= t_back] for k, v in rec.items()}
    fine = (rec["status"] == "200") & (rec["degraded"] == 0) & (rec["t_done"] >= t_back)
    first_fine = float(rec["t_done"][fine].min() - t_back) if fine.any() else None   # None: not in the phase
    late_degraded = (rec["status"] == "200") & (rec["degraded"] == 1) & (rec["t_done"] >= t_back)
    last_degraded = float(rec["t_done"][late_degraded].max() - t_back) if late_degraded.any() else 0.0
    return {
        "rate": rate, "kill_seconds": c.kill_seconds, **summarize(rec, seconds, c.deadline_ms),
        "client_send_lag_ms": result["score"].get("client_send_lag_ms"),
        "before": summarize(before, max(t_kill - t0, 1e-9), c.deadline_ms),
        "during": summarize(during, max(t_back - t_kill, 1e-9), c.deadline_ms),
        "after": summarize(after, max(t_end - t_back, 1e-9), c.deadline_ms),
        "refused_seconds": t_restarted - t_kill, "redis_answering_at_s": t_back - t0, "killed_at_s": t_kill - t0,
        "first_non_degraded_after_redis_back_s": first_fine,
        "last_degraded_after_redis_back_s": last_degraded,
        "readiness": readiness(result.get("ready"), t0, t_end),
        "readiness_while_down": readiness(result.get("ready"), t_kill, t_back),
        "timeline": timeline(rec, t0, seconds + 1.0, bin_seconds=0.5),
    }


def scenario_flood(env: Env, service: Service, body_format: str | None) -> dict:
    c = env.config
    if not body_format:
        return {"skipped": "the service accepted no /events body format"}
    plan = {**base_plan(env, service, c.phase_seconds), "score": score_closed(env, c.flood_score_connections),
            "events_flood": {**trickle_spec(env, body_format, "ev5"), "senders": c.flood_senders,
                             "events_per_request": c.flood_events_per_request, "pause": 0.0}}
    result = run_load(env, plan)
    t_from, t_to = result["measured_from"], result["planned_end"]
    # everything sent in the phase, whenever answered: a /score stuck behind the flood counts too
    rec = window(records(result["score"]), t_from, t_to, closed=False)
    ev = window(records(result["events_flood"]), t_from, t_to, closed=False)
    ev_latency = (ev["t_done"] - ev["t_sched"]) * 1e3
    ev_ok = ev["status"] == "200"
    return {"senders": c.flood_senders, "score_connections": c.flood_score_connections,
            "score": summarize(rec, c.phase_seconds, c.deadline_ms),
            "events": {"status_counts": status_counts(list(ev["status"])),
                       "requests_per_s": float(len(ev["status"]) / c.phase_seconds),
                       "ok_per_s": float(ev_ok.sum() / c.phase_seconds),
                       "p50_ms": pct(ev_latency[ev_ok], 50), "p99_ms": pct(ev_latency[ev_ok], 99)}}


def events_plan(env: Env, use_event_id: bool, prefix: str) -> tuple[list, dict[str, list[tuple]]]:
    """Requests per sender, and every user's events in order as (item, scenario, timestamp)."""
    c = env.config
    rng = random.Random(c.seed)
    users = max(1, c.events_total // c.events_per_user)
    senders = min(c.events_senders, users)
    per_user: dict[str, list[tuple]] = {}
    plan: list[list[list[dict]]] = [[] for _ in range(senders)]
    base = 1_700_000_000
    for s in range(senders):
        mine = [f"{prefix}-{u}" for u in range(s, users, senders)]
        stream = []
        chunk = max(1, c.events_per_request // max(1, min(len(mine), 5)))   # a request mixes ~5 users
        for k0 in range(0, c.events_per_user, chunk):
            for user in mine:
                for k in range(k0, min(k0 + chunk, c.events_per_user)):
                    item, scenario = rng.choice(env.items), rng.choice(env.scenarios)
                    event = {"user_id": user, "item_id": item, "scenario": scenario, "timestamp": base + k}
                    if use_event_id:
                        event["event_id"] = f"{user}:{k}"
                    per_user.setdefault(user, []).append((item, scenario, float(base + k)))
                    stream.append(event)
        plan[s] = [stream[i:i + c.events_per_request] for i in range(0, len(stream), c.events_per_request)]
    return plan, per_user


def check_histories(env: Env, plan: list, per_user: dict[str, list[tuple]], outcomes: list[list[dict]],
                    prefix: str) -> dict:
    from service.store import history_key

    unconfirmed: set[str] = set()
    for sender_requests, sender_outcomes in zip(plan, outcomes):
        for events, outcome in zip(sender_requests, sender_outcomes):
            if not outcome["confirmed"]:
                unconfirmed.update(e["user_id"] for e in events)
        for events in sender_requests[len(sender_outcomes):]:      # never sent
            unconfirmed.update(e["user_id"] for e in events)
    n = env.history_length
    client = redis_client(env.redis.port, timeout=30)
    users = sorted(per_user)
    kinds = {"exact": 0, "duplicates": 0, "missing_or_extra": 0, "out_of_order": 0, "unconfirmed": 0}
    examples = []
    try:
        with client.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.lrange(history_key("sainet", user), 0, -1)
            stored_all = pipe.execute()
    finally:
        client.close()
    for user, raw in zip(users, stored_all):
        if user in unconfirmed:
            kinds["unconfirmed"] += 1
            continue
        stored = [tuple(json.loads(r)) for r in raw]
        stored = [(str(i), str(s), float(t)) for i, s, t in stored]
        expected = list(reversed(per_user[user][-n:]))
        if stored == expected:
            kinds["exact"] += 1
            continue
        stamps = [t for _, _, t in stored]
        if len(set(stamps)) < len(stamps):
            kind = "duplicates"
        elif sorted(stored, key=lambda b: -b[2]) == expected:
            kind = "out_of_order"
        else:
            kind = "missing_or_extra"
        kinds[kind] += 1
        if len(examples) < 5:
            examples.append({"user": user, "kind": kind, "stored_len": len(stored), "expected_len": len(expected),
                             "duplicate_timestamps": len(stamps) - len(set(stamps))})
    checked = len(users) - kinds["unconfirmed"]
    return {"users": len(users), "checked": checked, "mismatched": checked - kinds["exact"], **kinds,
            "history_length": n, "examples": examples}


def scenario_events(env: Env, service: Service, body_format: str | None, event_id: str) -> dict:
    c = env.config
    if not body_format:
        return {"skipped": "the service accepted no /events body format"}
    use_ids = event_id != "not supported"
    prefix = "ev6"
    plan, per_user = events_plan(env, use_ids, prefix)
    handle, plan_path = tempfile.mkstemp(prefix="chaos-events-", suffix=".json")
    os.close(handle)
    Path(plan_path).write_text(json.dumps(plan))
    spec = {"plan": plan_path, "timeout": c.events_timeout_seconds, "duplicate_share": c.duplicate_share,
            "body_format": body_format, "seed": c.seed, "max_seconds": 600}
    load = {**base_plan(env, service, 0.0), "score": score_closed(env, c.events_score_connections),
            "events_ordered": spec, "max_seconds": 600}
    run = LoadRun(env, load).start()
    stalls = 0
    try:
        time.sleep(max(0.0, run.start_at + c.warmup_seconds - time.monotonic()))
        next_stall = time.monotonic() + c.stall_every_seconds / 2
        give_up = time.monotonic() + spec["max_seconds"] + 60
        while run.managed.alive() and time.monotonic() < give_up:
            if c.stall_ms > 0 and time.monotonic() >= next_stall:
                env.proxy.control.set_delay(c.stall_ms / 1000)
                time.sleep(c.stall_for_seconds)
                env.proxy.control.set_delay(0)
                stalls += 1
                next_stall += c.stall_every_seconds
            time.sleep(0.05)
        result = run.result(60)
    finally:
        env.proxy.control.set_delay(0)
        run.stop()
        Path(plan_path).unlink(missing_ok=True)
    ordered = result.get("events_ordered", {})
    if "error" in ordered:
        return {"error": ordered["error"]}
    seconds = result["end"] - result["measured_from"]
    rec = window(records(result["score"]), result["measured_from"], result["end"], closed=True)
    check = check_histories(env, plan, per_user, ordered["outcomes"], prefix)
    return {"events": sum(len(v) for v in per_user.values()), "users": len(per_user), "senders": len(plan),
            "event_ids": use_ids, "event_id_support": event_id, "seconds": seconds, "stalls": stalls,
            "stall_ms": c.stall_ms, **{k: ordered[k] for k in ("requests", "sends", "retries", "deliberate_duplicates",
                                                               "given_up", "rejected_permanently", "status_counts",
                                                               "latency_ms")},
            "score": summarize(rec, seconds, c.deadline_ms), "check": check}


def probe_events(env: Env, service: Service) -> tuple[str | None, str, dict]:
    """(body format the service accepts: "list" or "object" ({"events": [...]}), event_id support,
    the probe's answers). Support is "deduplicated", "accepted, not deduplicated" or "not supported"."""
    import urllib.error
    import urllib.request

    from service.store import history_key

    def post(body) -> int:
        request = urllib.request.Request(service.url + "/events", data=json.dumps(body).encode(), method="POST",
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code

    event = {"user_id": "probe-format", "item_id": env.items[0], "scenario": env.scenarios[0], "timestamp": 1.0}
    answers = {}
    body_format = None
    for name, wrap in (("list", lambda e: e), ("object", lambda e: {"events": e})):
        answers[name] = post(wrap([event]))
        if answers[name] == 200:
            body_format = name
            break
    if body_format is None:
        return None, "not supported", answers
    wrap = (lambda e: e) if body_format == "list" else (lambda e: {"events": e})
    probe = {**event, "user_id": "probe-event-id", "event_id": "probe-event-id:1"}
    answers["event_id_first"] = post(wrap([probe]))
    if answers["event_id_first"] != 200:
        return body_format, "not supported", answers
    answers["event_id_again"] = post(wrap([probe]))
    client = redis_client(env.redis.port)
    try:
        stored = client.llen(history_key("sainet", "probe-event-id"))
    finally:
        client.close()
    answers["stored"] = stored
    return body_format, "deduplicated" if stored == 1 else "accepted, not deduplicated", answers


def run_target(env: Env, target: Target, compute_rps: float | None) -> dict:
    from sainet.bench.runner import BenchConfig, seed_users
    from service.artifact import Artifact

    c = env.config
    client = redis_client(env.redis.port, timeout=30)
    try:
        client.flushall()
    finally:
        client.close()
    seed_users(env.redis.url, Artifact(env.artifact_dir),
               BenchConfig(candidates=c.candidates, history=env.history_length, users=c.users, seed=c.seed))
    env.proxy.control.set_delay(0)
    service = Service(env, target)
    out: dict = {"label": target.label, "commit": target.commit, "code_dir": str(target.code_dir),
                 "settings_passed": service.passed, "settings_not_supported": service.skipped, "errors": {}}
    started = time.monotonic()
    try:
        log.info("[%s] starting the service", target.label)
        service.start()
        out["imports_from"] = service.code
        probe_body = json.loads(env.bodies_path.read_text())[0]
        out["settle_seconds"] = {}
        body_format, event_id, answers = probe_events(env, service)
        out.update({"events_body_format": body_format, "event_id_support": event_id, "events_probe": answers})

        def step(name, fn, *args):
            nonlocal service
            if env.scenarios_selected and name not in env.scenarios_selected:
                return None
            log.info("[%s] %s", target.label, name)
            t = time.monotonic()
            try:
                if not service.alive():
                    log.warning("[%s] the service had exited; starting it again", target.label)
                    out.setdefault("restarts", []).append(name)
                    service.start()
                env.proxy.control.set_delay(0)
                env.proxy.control.up()
                out["settle_seconds"][name] = service.settle(probe_body)
                out[name] = fn(*args)
            except Exception as error:   # one failed scenario must not lose the others
                log.exception("[%s] %s failed", target.label, name)
                out["errors"][name] = repr(error)
                out[name] = None
            log.info("[%s] %s took %.1f s", target.label, name, time.monotonic() - t)
            return out[name]

        closed = step("closed", scenario_closed, env, service, compute_rps)
        closed_rps = (closed or {}).get("achieved_rate") or 100.0
        overload = step("overload", scenario_overload, env, service, closed_rps)
        sustainable = ((overload or {}).get("sustainable") or {}).get("rate") or closed_rps * 0.5
        step("delays", scenario_delays, env, service, body_format)
        step("kill", scenario_kill, env, service, sustainable)
        step("flood", scenario_flood, env, service, body_format)
        step("events", scenario_events, env, service, body_format, event_id)
        out["service_alive_at_end"] = service.alive()
    finally:
        service.stop()
        out["wall_seconds"] = time.monotonic() - started
    return out


def compute(env: Env) -> dict | None:
    from sainet.bench.compute import compute_limit
    from service.artifact import Artifact

    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {env.server_cpu})
    try:
        return compute_limit(Artifact(env.artifact_dir), env.config.candidates, env.history_length, (1, 4, 16, 64),
                             threads=1, seconds_per_point=env.config.compute_seconds, replicated_batch=8,
                             precision="auto")
    except Exception as error:
        log.exception("compute limit failed")
        return {"error": repr(error)}
    finally:
        os.sched_setaffinity(0, own)


def make_worktree(ref: str) -> tuple[Path, str]:
    path = Path(tempfile.mkdtemp(prefix="chaos-baseline-"))
    path.rmdir()
    git("worktree", "add", "--detach", str(path), ref, timeout=120)
    return path, git("rev-parse", "--short", "HEAD", cwd=path)


def remove_worktree(path: Path) -> None:
    try:
        git("worktree", "remove", "--force", str(path), timeout=120)
    except (subprocess.SubprocessError, OSError):
        log.warning("could not remove the worktree %s", path)


def machine() -> dict:
    """`sainet bench`'s machine description, plus the load average at the start of the run."""
    from sainet.bench.runner import machine as bench_machine

    return {**bench_machine(), "load_average": os.getloadavg()}


def run_chaos(model_dir: Path, out_dir: Path, config: ChaosConfig, baseline_ref: str | None = None,
              service_env: dict[str, str] | None = None, only: str | None = None,
              scenarios: tuple[str, ...] = ()) -> dict:
    from sainet.bench.runner import resolve_artifact_dir
    from service.artifact import Artifact

    from loadtest.chaos.report import write_report

    started = time.monotonic()
    out_dir = Path(out_dir)
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    artifact_dir = resolve_artifact_dir(model_dir).resolve()
    artifact = Artifact(artifact_dir)
    server_cpu, load_cpu = pick_cpus()
    own_affinity = os.sched_getaffinity(0)
    targets = [Target("current", REPO_ROOT, describe_tree(REPO_ROOT))]
    worktree = None
    redis = proxy = None
    results: dict = {"config": asdict(config), "artifact": str(artifact_dir), "deadline_ms": config.deadline_ms,
                     "cpus": {"service": server_cpu, "load_generator_proxy_redis": load_cpu,
                              "isolated": server_cpu != load_cpu},
                     "machine": machine(), "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                     "targets": {}}
    try:
        if baseline_ref:
            worktree, commit = make_worktree(baseline_ref)
            targets.append(Target("baseline", worktree, commit))
            results["baseline_ref"] = baseline_ref
        if only:
            targets = [t for t in targets if t.label == only]
        items = [str(i) for i in artifact.item_index][:2000]
        env_bodies = out_dir / ".bodies.json"
        env = None
        log.info("compute limit (in-process, CPU %d)", server_cpu)
        results["compute"] = compute(Env(config, out_dir, log_dir, artifact_dir, artifact.history_length, items,
                                         list(artifact.scenarios), server_cpu, load_cpu, None, None, env_bodies))
        compute_rps = (results["compute"] or {}).get("max_requests_per_s")
        os.sched_setaffinity(0, {load_cpu})
        redis = RedisProcess(free_port(), load_cpu, log_dir).start()
        proxy = ProxyProcess(redis.port, load_cpu, log_dir).start()
        env = Env(config, out_dir, log_dir, artifact_dir, artifact.history_length, items, list(artifact.scenarios),
                  server_cpu, load_cpu, redis, proxy, env_bodies, dict(service_env or {}), tuple(scenarios))
        from sainet.bench.runner import BenchConfig, seed_users
        env_bodies.write_text(json.dumps(seed_users(redis.url, artifact, BenchConfig(
            candidates=config.candidates, history=artifact.history_length, users=config.users, seed=config.seed))))
        for target in targets:
            results["targets"][target.label] = run_target(env, target, compute_rps)
    finally:
        os.sched_setaffinity(0, own_affinity)
        if proxy is not None:
            proxy.stop()
        if redis is not None:
            redis.stop()
        if worktree is not None:
            remove_worktree(worktree)
        (out_dir / ".bodies.json").unlink(missing_ok=True)
    results["wall_seconds"] = time.monotonic() - started
    results["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    write_report(results, out_dir)
    return results
