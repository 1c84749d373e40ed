"""Child processes of a scale run: each in its own session (process group), so that stopping it
stops everything it started (nginx's workers, a shell's children); every wait is bounded."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 <= 65535:
            with socket.socket() as bus:
                try:
                    bus.bind((LOOPBACK, port + 10000))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair (port, port + 10000) for a cluster node")


def pinned(command: list[str], cpus: list[int] | None) -> list[str]:
    """`taskset -c CPUS command` (or the command itself when unpinned)."""
    if not cpus:
        return command
    taskset = shutil.which("taskset")
    if taskset is None:
        raise RuntimeError("taskset (util-linux) is needed to pin the replicas to their cores")
    return [taskset, "-c", ",".join(map(str, cpus)), *command]


class Proc:
    """One child process (group): started with its output in a log file, stopped with its group."""

    def __init__(self, name: str, command: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None):
        self.name, self.command, self.log_path = name, command, Path(log_path)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> "Proc":
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command, env=self.env, cwd=self.cwd, stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self.process.returncode}; see {self.log_path}: "
                               f"{self.tail()}")

    def tail(self, chars: int = 600) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace_seconds: float = 15.0, sig: int = signal.SIGTERM) -> None:
        """Signals the whole process group, waits up to `grace_seconds`, then SIGKILLs the group."""
        if self.process is None:
            return
        try:
            if self.process.poll() is None:
                _signal_group(self.process.pid, sig)
                try:
                    self.process.wait(timeout=grace_seconds)
                except subprocess.TimeoutExpired:
                    pass
            # whatever is left of the group (the leader may have exited before its children)
            _signal_group(self.process.pid, signal.SIGKILL)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1,
               alive: Callable[[], None] | None = None) -> None:
    """Polls `predicate` until it holds; raises after `timeout` seconds (or as soon as `alive` raises)."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        try:
            if predicate():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
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
