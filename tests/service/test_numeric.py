"""Numeric features end to end: a log with float columns of every side trains, exports (the parity
check covers the dense inputs) and serves; the service takes the numbers from the request, from the
Redis user hash and from the artifact's item table, transformed as in training, and refuses a
hostile number with a 4xx naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

from export.onnx_export import export_run
from model.batch import Batch
from model.data.datasets import DataOptions, prepare_dataset
from model.train import TrainConfig, load_run, train_model
from service.embedded_redis import EmbeddedRedis
from service.store import Behaviour, RedisBulkWriter
from service.testing import LiveServer, free_port
from tests.service.conftest import HISTORY, tiny_log

HISTORY_OF_U3 = [("i3", "home"), ("i7", "feed")]


def numeric_log() -> pd.DataFrame:
    """tiny_log plus a user-side age, an item-side price and a context-side dwell time (some missing)."""
    frame = tiny_log()
    user = frame["user_id"].str[1:].astype(int)
    item = frame["item_id"].str[1:].astype(int)
    rng = np.random.default_rng(1)
    frame["age"] = np.where(user % 9 == 0, np.nan, 18.5 + user * 0.75)
    frame["price"] = 0.99 + item * 2.5
    frame["dwell"] = np.where(rng.random(len(frame)) < 0.1, np.nan, rng.lognormal(2.0, 1.0, len(frame)))
    # clicks follow the numbers, so the model learns to use them
    frame["label"] = (rng.random(len(frame)) < 0.2 + 0.5 * (frame["dwell"].fillna(0) > 8)).astype(int)
    return frame


@pytest.fixture(scope="module")
def numeric_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("numeric")
    numeric_log().to_parquet(root / "interactions.parquet")
    options = DataOptions(dataset="logs", data_dir=str(root / "interactions.parquet"), history_length=HISTORY)
    train_model(prepare_dataset(options), "dnn", {"embed_dim": 8, "tower": (16,)},
                TrainConfig(epochs=1, batch_size=256, threads=1), root / "run", options)
    export_run(root / "run", root / "models")
    return root


@pytest.fixture(scope="module")
def numeric_redis():
    server = EmbeddedRedis(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def numeric_service(numeric_root, numeric_redis, settings_for):
    """One server for the module: these tests only read (and write one user of their own)."""
    with LiveServer(settings_for(numeric_root, numeric_redis.url)) as live:
        yield live


def pytorch_scores(root: Path, history: list[tuple[str, str]], scenario: str, gender: str, age, dwell,
                   candidates: list[str]) -> np.ndarray:
    """The PyTorch model on the same raw inputs, transformed with the run's own schema."""
    run = load_run(root / "run")
    vocab, schema = run.vocabularies, run.schema
    table = pd.read_parquet(root / "run" / "item_features.parquet").set_index("item_id")
    numeric = {f.name: f for f in schema.numeric_features}
    raw_request = {"age": age, "dwell": dwell}
    request_numeric = [numeric[f.name].transform([raw_request[f.name]])[0] for f in schema.request_numeric]
    price = numeric["price"].transform([table["price"].get(c, np.nan) for c in candidates])
    hist_items = vocab["item_id"].encode([h[0] for h in history]) if history else np.zeros(1, np.int64)  # padding
    hist_scenarios = vocab["scenario"].encode([h[1] for h in history]) if history else np.zeros(1, np.int64)
    batch = Batch(
        hist_items=torch.tensor(hist_items)[None],
        hist_scenarios=torch.tensor(hist_scenarios)[None],
        target_scenario=torch.tensor(vocab["scenario"].encode([scenario])),
        request_features=torch.tensor(vocab["gender"].encode([gender]))[None],
        cand_items=torch.tensor(vocab["item_id"].encode(candidates))[None],
        cand_features=torch.tensor(vocab["genre"].encode([table["genre"].get(c, "?") for c in candidates]))[None, :, None],
        request_numeric=torch.tensor(np.array(request_numeric, dtype=np.float32))[None],
        cand_numeric=torch.tensor(price)[None, :, None],
    )
    with torch.no_grad():
        return torch.sigmoid(run.model(batch))[0].numpy()


def test_the_artifact_carries_the_numeric_inputs_and_their_statistics(numeric_root):
    meta = json.loads(next((numeric_root / "models").glob("*/1/meta.json")).read_text())
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert inputs["request_numeric"]["features"] == ["age", "dwell"] and inputs["request_numeric"]["dtype"] == "float32"
    assert inputs["cand_numeric"]["features"] == ["price"]
    assert {f["name"]: f["side"] for f in meta["schema"]["numeric_features"]} == {
        "age": "user", "price": "item", "dwell": "context"}
    parity = meta["parity"]["max_abs_diff"]       # random numbers and the real test examples' ones
    assert "real_test_examples" in parity and max(parity.values()) <= 1e-5
    assert json.loads((next((numeric_root / "models").glob("*/1")) / meta["item_numeric"]).read_text())["i2"] == [5.99]


def test_numbers_from_the_request_the_redis_hash_and_the_item_table(numeric_root, numeric_service, numeric_redis):
    writer = RedisBulkWriter(numeric_redis.url, history_length=HISTORY)
    writer.write({"u3": [Behaviour(item, scenario, float(t)) for t, (item, scenario) in enumerate(HISTORY_OF_U3)]},
                 {"u3": {"gender": "m", "age": "31.25"}})
    writer.close()
    candidates = ["i1", "i5", "i30", "never-seen-item"]

    def served(dwell, user="u3"):
        body = {"user_id": user, "scenario": "home", "candidates": candidates}
        if dwell is not None:
            body["features"] = {"dwell": dwell}
        answer = httpx.post(f"{numeric_service.url}/score", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        return np.array(answer.json()["scores"])

    with_dwell = served(25.5)
    np.testing.assert_allclose(with_dwell, pytorch_scores(numeric_root, HISTORY_OF_U3, "home", "m", "31.25", 25.5,
                                                          candidates), atol=1e-5, rtol=0)
    # missing at serving time = imputed, as in training: the dwell time, and a cold user's age
    np.testing.assert_allclose(served(None), pytorch_scores(numeric_root, HISTORY_OF_U3, "home", "m", "31.25", None,
                                                            candidates), atol=1e-5, rtol=0)
    assert not np.allclose(served(None), with_dwell)
    cold = np.array(httpx.post(f"{numeric_service.url}/score", json={
        "user_id": "nobody", "scenario": "home", "candidates": candidates,
        "features": {"gender": "m", "age": 31.25, "dwell": 25.5}}, timeout=10).json()["scores"])
    np.testing.assert_allclose(cold, pytorch_scores(numeric_root, [], "home", "m", 31.25, 25.5, candidates),
                               atol=1e-5, rtol=0)
    # the item table's prices differ per candidate, and an unknown item's price is imputed
    assert len(set(np.round(with_dwell, 7))) == len(candidates)
    # the OpenAPI document says which features take numbers
    document = httpx.get(f"{numeric_service.url}/openapi.json", timeout=10).json()
    features = document["components"]["schemas"]["ScoreRequest"]["properties"]["features"]
    assert {name: f["type"] for name, f in features["properties"].items()} == {"age": "number", "dwell": "number"}


@pytest.mark.parametrize("field,raw_value,why", [
    ("dwell", b'"NaN"', "JSON number"), ("dwell", b'"inf"', "JSON number"), ("dwell", b'"12.5"', "JSON number"),
    ("dwell", b"true", "number"), ("dwell", b"1e999", "finite"), ("dwell", b"1e300", "finite"),
    ("dwell", b"-123456789012345678901", "magnitude"), ("dwell", b"[1.5]", ""), ("dwell", b"NaN", "finite"),
    ("gender", b"1.5", "string or an integer"),      # a categorical feature takes no fraction
])
def test_a_hostile_number_gets_a_4xx_naming_the_field(numeric_service, field, raw_value, why):
    body = (b'{"user_id": "u1", "scenario": "home", "candidates": ["i1"], "features": {"' + field.encode()
            + b'": ' + raw_value + b"}}")
    answer = httpx.post(f"{numeric_service.url}/score", content=body, headers={"content-type": "application/json"},
                        timeout=10)
    assert answer.status_code == 422, answer.text
    locations = [".".join(str(p) for p in d.get("loc", [])) for d in answer.json()["detail"]]
    assert f"body.features.{field}" in locations, answer.json()
    assert why in answer.text
