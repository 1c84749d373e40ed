"""CPU accounting from /proc during a measurement: per process group (replicas, nginx, Redis), the
load generator (a waited-for child: RUSAGE_CHILDREN), and every core of the machine, so the report
can say who used which share of the cores (and whether anything else was running)."""

from __future__ import annotations

import resource
import time
from pathlib import Path

from loadtest.procs import proc_stats

def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process whose process group is `pgid` (all threads)."""
    return sum(stat.cpu_seconds for stat in proc_stats().values() if stat.group == pgid)


def cores_busy() -> dict[str, tuple[int, int]]:
    """cpuN -> (busy ticks, total ticks) since boot."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *values = line.split()
            ticks = [int(v) for v in values[:8]]       # user nice system idle iowait irq softirq steal
            idle = ticks[3] + ticks[4]
            out[name] = (sum(ticks) - idle, sum(ticks))
    return out


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """`with CpuMeter({"replica A": pgid, ...}) as m: ...` then `m.result`: cores used by each group,
    by waited-for children (the load generator), and per core of the machine, over the block."""

    def __init__(self, groups: dict[str, int], children_label: str = "load generator"):
        self.groups, self.children_label = groups, children_label
        self.result: dict = {}

    def __enter__(self) -> "CpuMeter":
        self._t = time.perf_counter()
        self._groups = {name: group_cpu_seconds(pgid) for name, pgid in self.groups.items()}
        self._children = children_cpu_seconds()
        self._cores = cores_busy()
        return self

    def __exit__(self, *exc) -> None:
        seconds = time.perf_counter() - self._t
        cores = cores_busy()
        used = {name: (group_cpu_seconds(pgid) - self._groups[name]) / seconds for name, pgid in self.groups.items()}
        used[self.children_label] = (children_cpu_seconds() - self._children) / seconds
        per_core = {}
        for name, (busy, total) in cores.items():
            busy0, total0 = self._cores.get(name, (0, 0))
            per_core[name] = (busy - busy0) / max(total - total0, 1)
        machine_busy = sum(per_core.values())
        self.result = {"seconds": seconds, "cores_used": used, "core_busy": per_core,
                       "machine_busy_cores": machine_busy,
                       "other_cores": max(machine_busy - sum(used.values()), 0.0)}
