"""Child processes of the load harnesses (`loadtest.chaos`, `loadtest.scale`): each runs in its own
session (process group), so that stopping it stops everything it started (nginx's workers, a shell's
children); its output goes to a log file; every wait is bounded."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from service.testing import LOOPBACK, cluster_port, free_port

__all__ = ["LOOPBACK", "GroupProcess", "ProcStat", "cluster_port", "free_port", "http_get", "http_ok", "pinned",
           "proc_stats", "process_tree", "wait_until"]

CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def pinned(command: list[str], cpus: Sequence[int] | None) -> list[str]:
    """`taskset -c CPUS command` (or the command itself when unpinned)."""
    if not cpus:
        return command
    taskset = shutil.which("taskset")
    if taskset is None:
        raise RuntimeError("taskset (util-linux) is needed to pin the harness's processes to their cores")
    return [taskset, "-c", ",".join(map(str, cpus)), *command]


class GroupProcess:
    """One child process (group): started with its output appended to `log_path` (a restart under
    the same name keeps the earlier output), stopped with its whole group."""

    def __init__(self, name: str, command: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None):
        self.name, self.command, self.log_path = name, command, Path(log_path)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.process: subprocess.Popen | None = None

    def start(self) -> "GroupProcess":
        with open(self.log_path, "ab") as log:     # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(self.command, env=self.env, cwd=self.cwd, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        """Raises, with the end of its log, when the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self.process.returncode}; see {self.log_path}:\n"
                               f"{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace_seconds: float = 15.0, sig: int = signal.SIGTERM) -> None:
        """Signals the whole group, waits up to `grace_seconds`, then SIGKILLs what the group still holds
        (the leader may have exited before its children)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.signal_group(sig)
            try:
                self.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        if self.process is None:
            return
        self.signal_group(signal.SIGKILL)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1,
               alive: Callable[[], None] | None = None):
    """Polls `predicate` until it returns something true, and returns that; raises TimeoutError after
    `timeout` seconds (or what `alive` raises, as soon as it does: a child that died is not waited for)."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        try:
            value = predicate()
            if value:
                return value
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return answer.read().decode()


@dataclass(frozen=True)
class ProcStat:
    parent: int
    group: int             # process group id
    cpu_seconds: float     # user + system, all threads


def proc_stats() -> dict[int, ProcStat]:
    """Every live process's parent, process group and CPU time, from /proc/<pid>/stat."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:     # it exited while we read
            continue
        fields = stat[stat.rindex(")") + 2:].split()     # after "pid (comm) ": field 3 of stat is fields[0]
        stats[int(entry.name)] = ProcStat(parent=int(fields[1]), group=int(fields[2]),
                                          cpu_seconds=(int(fields[11]) + int(fields[12])) / CLOCK_TICK)
    return stats


def process_tree(pid: int, stats: dict[int, ProcStat] | None = None) -> list[int]:
    """`pid` and all its live descendants, parents before their children."""
    stats = proc_stats() if stats is None else stats
    tree, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, stat in stats.items() if stat.parent == parent and child not in tree]
        tree += children
        frontier += children
    return tree
