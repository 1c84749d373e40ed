"""The chaos harness's own parts, on real processes: the delaying proxy delays Redis round trips
and refuses while "down", and a killed Redis restarts on its port with its data. (Nothing here
times the service: its timings belong in the harness's report.)"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtest.chaos.procs import ProxyProcess, RedisProcess, redis_client  # noqa: E402
from service.testing import free_port  # noqa: E402


@pytest.fixture()
def redis_and_proxy(tmp_path):
    server = RedisProcess(free_port(), cpu=None, log_dir=tmp_path)
    proxy = ProxyProcess(server.port, cpu=None, log_dir=tmp_path)
    try:
        server.start()
        proxy.start()
        yield server, proxy
    finally:
        proxy.stop()
        server.stop()


def client(port: int, timeout: float = 2.0) -> redis.Redis:
    return redis_client(port, timeout)


def timed_ping(c: redis.Redis) -> float:
    started = time.perf_counter()
    assert c.ping()
    return time.perf_counter() - started


def test_the_proxy_delays_each_round_trip_by_the_delay_set_at_run_time(redis_and_proxy):
    server, proxy = redis_and_proxy
    through = client(proxy.port)
    through.set("k", "v")                               # connection open, no delay yet
    assert timed_ping(through) < 0.1
    assert proxy.control.set_delay(0.15)["delay"] == 0.15
    assert all(timed_ping(through) >= 0.15 for _ in range(3))
    assert through.get("k") == b"v"                     # the bytes themselves pass unchanged
    with client(proxy.port) as fresh:                    # a new connection's round trips are delayed too
        assert timed_ping(fresh) >= 0.15
    proxy.control.set_delay(0)
    assert timed_ping(through) < 0.1
    through.close()


def test_redis_killed_is_refused_then_restarts_on_its_port_with_its_data(redis_and_proxy):
    server, proxy = redis_and_proxy
    through = client(proxy.port, timeout=1.0)
    through.rpush("list", "a", "b", "c")
    server.kill()
    proxy.control.down()
    with client(proxy.port, timeout=1.0) as fresh, pytest.raises(redis.ConnectionError) as refused:
        fresh.ping()
    assert "refused" in str(refused.value).lower()
    with client(server.port, timeout=1.0) as direct, pytest.raises(redis.ConnectionError):
        direct.ping()
    server.restart()
    proxy.control.up()
    with client(proxy.port) as fresh:
        assert fresh.ping()
        assert fresh.lrange("list", 0, -1) == [b"a", b"b", b"c"]
    assert proxy.control.stats()["up"] is True
    through.close()
