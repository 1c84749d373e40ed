"""Fixtures of the service tests: one tiny trained and exported model for the whole session, and
the settings every live server in these tests starts from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from export.onnx_export import export_run
from model.data.datasets import DataOptions, prepare_dataset
from model.train import TrainConfig, train_model
from service.embedded_redis import EmbeddedRedis
from service.settings import Settings
from service.testing import GENEROUS_BUDGETS, LiveServer, free_port

HISTORY = 6


def tiny_log() -> pd.DataFrame:
    """A canonical log with a user-side (gender) and an item-side (genre) feature."""
    rng = np.random.default_rng(0)
    users, items, events = 60, 40, 30
    user = np.repeat(np.arange(users), events)
    item = rng.integers(0, items, size=users * events)
    return pd.DataFrame({
        "user_id": [f"u{u}" for u in user], "item_id": [f"i{i}" for i in item],
        "scenario": rng.choice(["home", "search", "feed"], size=users * events),
        "timestamp": np.tile(np.arange(events), users) * 10 + user,
        "label": (rng.random(users * events) < 0.4).astype(int),
        "gender": np.where(user % 2 == 0, "f", "m"),
        "genre": [f"g{i % 5}" for i in item],
    })


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("svc")
    tiny_log().to_parquet(root / "interactions.parquet")
    options = DataOptions(dataset="logs", data_dir=str(root / "interactions.parquet"), history_length=HISTORY)
    train_model(prepare_dataset(options), "sainet", {"embed_dim": 16, "tower": (32, 16)},
                TrainConfig(epochs=1, batch_size=256, threads=1), root / "run", options)
    export_run(root / "run", root / "models")
    return root


@pytest.fixture(scope="session")
def history_length() -> int:
    return HISTORY


@pytest.fixture(scope="session")
def settings_for():
    """settings_for(model_root, redis_url, **overrides): the settings of a test server, with the
    generous Redis budget and request deadline of `GENEROUS_BUDGETS`."""
    def make(model_root: Path, redis_url: str, **overrides) -> Settings:
        values = dict(model_dir=model_root / "models", redis_url=redis_url, history_length=HISTORY,
                      reload_poll_seconds=0, max_candidates=50, max_body_bytes=20_000, intra_op_threads=1,
                      max_wait_us=5000, **GENEROUS_BUDGETS)
        return Settings(**{**values, **overrides})
    return make


@pytest.fixture()
def redis_server():
    """A Redis server of the test's own (tests may stop or pause it)."""
    server = EmbeddedRedis(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def service(model_root, redis_server, settings_for):
    """The service on a real uvicorn (the service's own limits) in front of `redis_server`."""
    with LiveServer(settings_for(model_root, redis_server.url)) as live:
        yield live
