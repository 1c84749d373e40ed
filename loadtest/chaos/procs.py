"""Processes of a chaos run: each started in its own process group (a new session), pinned to a
CPU with `taskset`, logged to a file and always stopped by group (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis

from loadtest.chaos.proxy import ProxyControl
from service.embedded_redis import probe_client

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(command: list[str], cpu: int | None) -> list[str]:
    if cpu is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


class Managed:
    """One subprocess (and everything it starts) in its own process group."""

    def __init__(self, name: str, command: list[str], cpu: int | None, log_dir: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None):
        self.name, self.command, self.cpu = name, pinned(command, cpu), cpu
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.log_path = Path(log_dir) / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Managed":
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(self.command, env=self.env, cwd=self.cwd, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self.signal_group(signal.SIGKILL)    # whatever the group still holds
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        if self.process is not None:
            self.signal_group(signal.SIGKILL)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_for(check, timeout: float, interval: float = 0.05, what: str = "condition", process: Managed | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited ({process.process.returncode}); log:\n{process.log_tail()}")
        try:
            value = check()
            if value:
                return value
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what} not within {timeout:g} s")


def redis_binary() -> str:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if found:
        return found
    from service.embedded_redis import redis_server_binary
    return redis_server_binary()


def redis_client(port: int, timeout: float = 5.0) -> redis.Redis:
    return probe_client(port, timeout)


class RedisProcess:
    """A real redis-server on `port` whose data survives a kill: no automatic snapshots, but `kill`
    takes one (SAVE) right before SIGKILL, and a restart on the same port loads it, so the restarted
    server holds what the killed one held (as a replica or persistence would give back)."""

    def __init__(self, port: int, cpu: int | None, log_dir: Path):
        self.port, self.cpu, self.log_dir = port, cpu, Path(log_dir)
        self.data_dir = Path(tempfile.mkdtemp(prefix="chaos-redis-"))
        self.managed: Managed | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 5.0) -> redis.Redis:
        return redis_client(self.port, timeout)

    def start(self, timeout: float = 15.0) -> "RedisProcess":
        command = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                   "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no", "--protected-mode", "yes",
                   "--maxclients", "10000"]
        self.managed = Managed("redis", command, self.cpu, self.log_dir).start()
        client = self.client(0.5)
        try:
            wait_for(lambda: client.ping(), timeout, what=f"redis on port {self.port}", process=self.managed)
        finally:
            client.close()
        return self

    def kill(self) -> None:
        """SAVE (so the restart gets the same data), then SIGKILL: clients see resets, then refusals."""
        client = self.client()
        try:
            client.save()
        finally:
            client.close()
        self.managed.kill()

    def restart(self, timeout: float = 15.0) -> None:
        self.start(timeout)

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop(grace=5)
        shutil.rmtree(self.data_dir, ignore_errors=True)


class ProxyProcess:
    """`loadtest.chaos.proxy` in its own process, in front of `target_port`."""

    def __init__(self, target_port: int, cpu: int | None, log_dir: Path):
        self.port, self.control_port, self.target_port = free_port(), free_port(), target_port
        self.cpu, self.log_dir = cpu, Path(log_dir)
        self.ready_file = Path(tempfile.mkstemp(prefix="chaos-proxy-", suffix=".ready")[1])
        self.ready_file.unlink()
        self.managed: Managed | None = None
        self.control = ProxyControl(self.control_port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> "ProxyProcess":
        command = [sys.executable, "-m", "loadtest.chaos.proxy", "--listen-port", str(self.port),
                   "--target-port", str(self.target_port), "--control-port", str(self.control_port),
                   "--ready-file", str(self.ready_file)]
        self.managed = Managed("proxy", command, self.cpu, self.log_dir, cwd=REPO_ROOT,
                               env={"PYTHONPATH": str(REPO_ROOT)}).start()
        wait_for(self.ready_file.exists, timeout, what="the proxy", process=self.managed)
        return self

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop(grace=5)
        self.ready_file.unlink(missing_ok=True)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
