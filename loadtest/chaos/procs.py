"""Processes of a chaos run (`loadtest.procs.GroupProcess`: each in its own process group, pinned to
a CPU with `taskset`, logged to a file and always stopped by group, SIGTERM then SIGKILL): the Redis
that gets killed and the proxy that cuts or slows the service's way to it."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import redis

from loadtest.chaos.proxy import ProxyControl
from loadtest.procs import GroupProcess, free_port, pinned, wait_until
from service.embedded_redis import probe_client, redis_server_binary

REPO_ROOT = Path(__file__).resolve().parents[2]


def cpus(cpu: int | None) -> list[int] | None:
    """The chaos harness pins each process to one CPU (or none)."""
    return None if cpu is None else [cpu]


def redis_client(port: int, timeout: float = 5.0) -> redis.Redis:
    return probe_client(port, timeout)


class RedisProcess:
    """A real redis-server on `port` whose data survives a kill: no automatic snapshots, but `kill`
    takes one (SAVE) right before SIGKILL, and a restart on the same port loads it, so the restarted
    server holds what the killed one held (as a replica or persistence would give back)."""

    def __init__(self, port: int, cpu: int | None, log_dir: Path):
        self.port, self.cpu, self.log_dir = port, cpu, Path(log_dir)
        self.data_dir = Path(tempfile.mkdtemp(prefix="chaos-redis-"))
        self.managed: GroupProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 5.0) -> redis.Redis:
        return redis_client(self.port, timeout)

    def start(self, timeout: float = 15.0) -> "RedisProcess":
        command = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                   "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no", "--protected-mode", "yes",
                   "--maxclients", "10000"]
        self.managed = GroupProcess("redis", pinned(command, cpus(self.cpu)), self.log_dir / "redis.log").start()
        client = self.client(0.5)
        try:
            wait_until(client.ping, timeout, f"redis on port {self.port}", interval=0.05,
                       alive=self.managed.check_alive)
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
            self.managed.stop(grace_seconds=5)
        shutil.rmtree(self.data_dir, ignore_errors=True)


class ProxyProcess:
    """`loadtest.chaos.proxy` in its own process, in front of `target_port`."""

    def __init__(self, target_port: int, cpu: int | None, log_dir: Path):
        self.port, self.control_port, self.target_port = free_port(), free_port(), target_port
        self.cpu, self.log_dir = cpu, Path(log_dir)
        self.ready_file = Path(tempfile.mkstemp(prefix="chaos-proxy-", suffix=".ready")[1])
        self.ready_file.unlink()
        self.managed: GroupProcess | None = None
        self.control = ProxyControl(self.control_port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> "ProxyProcess":
        command = [sys.executable, "-m", "loadtest.chaos.proxy", "--listen-port", str(self.port),
                   "--target-port", str(self.target_port), "--control-port", str(self.control_port),
                   "--ready-file", str(self.ready_file)]
        self.managed = GroupProcess("proxy", pinned(command, cpus(self.cpu)), self.log_dir / "proxy.log",
                                    cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT)}).start()
        wait_until(self.ready_file.exists, timeout, "the proxy", interval=0.05, alive=self.managed.check_alive)
        return self

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop(grace_seconds=5)
        self.ready_file.unlink(missing_ok=True)

