"""A real server for tests and benchmarks: the service's own uvicorn configuration (`server_config`,
with every limit) in a thread of this process, on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from service.app import create_app
from service.server import server_config
from service.settings import Settings


LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback port free now (the one definition the tests, benchmarks and harnesses share)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def cluster_port() -> int:
    """A free port whose Redis Cluster bus port (port + 10000) is valid and free too."""
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


# A test server's budgets: generous, so that a machine busy with other work (another test worker, a
# JVM starting, a model training) does not turn a healthy read into a degraded answer. Tests of
# timeouts and deadlines set their own.
GENEROUS_BUDGETS = {"redis_timeout_ms": 2000, "redis_pool_timeout_ms": 2000, "request_timeout_ms": 5000}


def settings_environment(values: dict) -> dict[str, str]:
    """`Settings` field values as the environment variables a `sainet serve` process reads."""
    prefix = Settings.model_config["env_prefix"]
    return {f"{prefix}{name.upper()}": str(value) for name, value in values.items()}


class LiveServer:
    """`with LiveServer(settings) as live:` serves on `live.url` until the block ends (a graceful
    shutdown, as SIGTERM would start)."""

    def __init__(self, settings: Settings, start_timeout_seconds: float = 30.0):
        self.port = free_port()
        self.app = create_app(settings)
        self.server = uvicorn.Server(server_config(self.app, settings, LOOPBACK, self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.start_timeout = start_timeout_seconds

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def core(self):
        return self.app.state.core

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
