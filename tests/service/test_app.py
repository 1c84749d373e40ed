"""End-to-end tests of the service: a real uvicorn server, a real Redis server, a real ONNX Runtime
session built from a real exported model."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from model.batch import Batch
from model.train import load_run
from service.embedded_redis import EmbeddedRedis
from service.metrics import METRIC_NAMES
from service.settings import Settings
from service.store import Behaviour, RedisBulkWriter
from service.testing import LiveServer, free_port

def score(client: httpx.Client, user="u1", scenario="home", candidates=("i1", "i2", "i3"), **extra):
    return client.post("/score", json={"user_id": user, "scenario": scenario, "candidates": list(candidates),
                                       **extra})


def torch_scores(model_root: Path, history: list[tuple[str, str]], scenario: str, gender: str | None,
                 candidates: list[str]) -> np.ndarray:
    """The PyTorch model on the same raw inputs, encoded with the run's own vocabularies."""
    run = load_run(model_root / "run")
    HISTORY = run.schema.history_length
    vocab = run.vocabularies
    items = vocab["item_id"].encode([h[0] for h in history][-HISTORY:]) if history else np.zeros(0, np.int64)
    scen = vocab["scenario"].encode([h[1] for h in history][-HISTORY:]) if history else np.zeros(0, np.int64)
    genre_of = pd.read_parquet(model_root / "run" / "item_features.parquet").set_index("item_id")["genre"]
    genres = [genre_of.get(c, "<unknown>") for c in candidates]
    batch = Batch(
        hist_items=torch.tensor(np.r_[np.zeros(max(1, len(items)) - len(items), np.int64), items])[None],
        hist_scenarios=torch.tensor(np.r_[np.zeros(max(1, len(scen)) - len(scen), np.int64), scen])[None],
        target_scenario=torch.tensor(vocab["scenario"].encode([scenario])),
        request_features=torch.tensor(vocab["gender"].encode(["<missing>" if gender is None else gender]))[None],
        cand_items=torch.tensor(vocab["item_id"].encode(candidates))[None],
        cand_features=torch.tensor(vocab["genre"].encode(genres))[None, :, None],
        request_numeric=torch.zeros((1, 0)), cand_numeric=torch.zeros((1, len(candidates), 0)),
    )
    with torch.no_grad():
        return torch.sigmoid(run.model(batch))[0].numpy()


def test_seeded_user_scores_like_pytorch(model_root, service, redis_server, history_length):
    history = [("i3", "home"), ("i7", "search"), ("i3", "feed"), ("i9", "home")]
    writer = RedisBulkWriter(redis_server.url, history_length=history_length)
    writer.write({"u1": [Behaviour(i, s, float(t)) for t, (i, s) in enumerate(history)]}, {"u1": {"gender": "m"}})
    writer.close()
    candidates = ["i1", "i3", "i39", "never-seen-item"]
    with httpx.Client(base_url=service.url, timeout=10) as client:
        answer = score(client, candidates=candidates).json()
    assert answer["history_length"] == 4 and answer["cold_start"] is False and answer["degraded"] is False
    assert answer["model"] == {"name": "sainet", "version": "1"}
    expected = torch_scores(model_root, history, "home", "m", candidates)
    np.testing.assert_allclose(answer["scores"], expected, atol=1e-5, rtol=0)


def test_request_features_override_the_stored_ones(model_root, service):
    with httpx.Client(base_url=service.url, timeout=10) as client:
        cold = score(client, user="nobody", features={"gender": "f"}).json()
    assert cold["cold_start"] is True and cold["history_length"] == 0
    np.testing.assert_allclose(cold["scores"], torch_scores(model_root, [], "home", "f", ["i1", "i2", "i3"]),
                               atol=1e-5, rtol=0)


def test_concurrent_requests_are_batched_and_equal_sequential_ones(service):
    requests = [{"user_id": f"u{i % 7}", "scenario": ["home", "search", "feed"][i % 3],
                 "candidates": [f"i{(i + k) % 40}" for k in range(1 + i % 9)]} for i in range(64)]
    with httpx.Client(base_url=service.url, timeout=10) as client:
        client.post("/events", json=[{"user_id": f"u{u}", "item_id": f"i{u + 3}", "scenario": "home"}
                                     for u in range(7)])
        sequential = [client.post("/score", json=r).json()["scores"] for r in requests]

    async def fire():
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
            return await asyncio.gather(*[client.post("/score", json=r) for r in requests])

    concurrent = [r.json()["scores"] for r in asyncio.run(fire())]
    for one, together in zip(sequential, concurrent):
        np.testing.assert_allclose(together, one, atol=1e-6, rtol=0)
    metrics = httpx.get(f"{service.url}/metrics").text
    batches = {s.name: s.value for f in text_string_to_metric_families(metrics)
               if f.name == "sainet_batch_requests" for s in f.samples}
    # 128 requests in fewer inference runs than requests: some were batched together.
    assert batches["sainet_batch_requests_count"] < batches["sainet_batch_requests_sum"] == 128


@pytest.mark.parametrize("payload,status,field", [
    ({"user_id": "u1", "scenario": "nope", "candidates": ["i1"]}, 422, "scenario"),
    ({"user_id": "u1", "scenario": "home", "candidates": []}, 422, "candidates"),
    ({"user_id": "u1", "scenario": "home", "candidates": [f"i{i}" for i in range(51)]}, 422, "candidates"),
    ({"user_id": "u1", "scenario": "home", "candidates": "i1"}, 422, "candidates"),
    ({"user_id": "u1", "scenario": "home", "candidates": [1.5]}, 422, "candidates"),
    ({"user_id": None, "scenario": "home", "candidates": ["i1"]}, 422, "user_id"),
    ({"user_id": ["u1"], "scenario": "home", "candidates": ["i1"]}, 422, "user_id"),
    ({"user_id": "u" * 300, "scenario": "home", "candidates": ["i1"]}, 422, "user_id"),
    ({"user_id": "", "scenario": "home", "candidates": ["i1"]}, 422, "user_id"),
    ({"user_id": "u1", "scenario": "home", "candidates": ["i" * 300]}, 422, "candidates.0"),
    ({"user_id": "u1", "scenario": "home", "candidates": ["i1"], "features": {"gender": [1]}}, 422, "features"),
    ({"user_id": "u1", "scenario": "home", "candidates": ["i1"], "extra": 1}, 422, "extra"),
    ({"scenario": "home", "candidates": ["i1"]}, 422, "user_id"),
    ({"user_id": "u1", "scenario": "home", "candidates": ["i1"] * 40, "features": {"x": "y" * 25_000}}, 413, "body"),
])
def test_bad_score_input_gets_a_4xx_naming_the_field(service, payload, status, field):
    answer = httpx.post(f"{service.url}/score", json=payload, timeout=10)
    assert answer.status_code == status, answer.text
    locations = [".".join(str(p) for p in d.get("loc", [])) for d in answer.json()["detail"]]
    assert any(field in loc for loc in locations), answer.json()
    if field == "scenario":
        assert "home" in answer.text and "search" in answer.text     # lists the valid scenarios


@pytest.mark.parametrize("body,status", [
    (b"{not json", 422), (b"[]", 422), (b'{"user_id": "u1"}', 422),
    (b'[{"user_id": "u1", "item_id": "i1", "scenario": "home", "timestamp": "yesterday"}]', 422),
])
def test_bad_events_input_gets_a_4xx(service, body, status):
    answer = httpx.post(f"{service.url}/events", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text


def test_events_are_seen_by_score_and_history_stays_bounded(service, history_length):
    with httpx.Client(base_url=service.url, timeout=10) as client:
        assert score(client, user="fresh").json()["cold_start"] is True
        assert client.post("/events", json={"user_id": "fresh", "item_id": "i5", "scenario": "search"}).json() == \
            {"appended": 1, "duplicates": 0}
        assert score(client, user="fresh").json()["history_length"] == 1
        for t in range(3 * history_length):
            client.post("/events", json=[{"user_id": "fresh", "item_id": f"i{t % 40}", "scenario": "home",
                                          "timestamp": 1000 + t}])
        assert score(client, user="fresh").json()["history_length"] == history_length


def test_redis_outage_degrades_then_recovers(model_root, settings_for):
    server = EmbeddedRedis(free_port())
    server.start()
    try:
        with LiveServer(settings_for(model_root, server.url)) as live, \
                httpx.Client(base_url=live.url, timeout=10) as client:
            client.post("/events", json={"user_id": "u1", "item_id": "i5", "scenario": "home"})
            assert score(client).json()["degraded"] is False
            server.stop()
            down = score(client)
            assert down.status_code == 200 and down.json()["degraded"] is True and down.json()["cold_start"]
            # degraded, not unready: a Redis outage must not take every replica out of the balancer
            down_ready = client.get("/v2/health/ready")
            assert down_ready.status_code == 200 and down_ready.json()["degraded"] is True
            assert down_ready.json()["redis"] is False
            assert client.post("/events", json={"user_id": "u1", "item_id": "i5", "scenario": "home"}).status_code \
                == 503
            server.start()
            deadline = time.monotonic() + 10
            while score(client).json()["degraded"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert score(client).json()["degraded"] is False
            assert client.get("/v2/health/ready").json()["degraded"] is False
            degraded = [s.value for f in text_string_to_metric_families(client.get("/metrics").text)
                        if f.name == "sainet_degraded" for s in f.samples if s.name == "sainet_degraded_total"]
            assert degraded and degraded[0] >= 1
    finally:
        server.stop()


def test_metrics_parse_and_hold_every_metric(service):
    with httpx.Client(base_url=service.url, timeout=10) as client:
        score(client)
        answer = client.get("/metrics")
    assert answer.status_code == 200 and not answer.history          # no redirect
    names = {family.name for family in text_string_to_metric_families(answer.text)}
    # prometheus_client strips the _total suffix from counter family names.
    expected = {name.removesuffix("_total") for name in METRIC_NAMES}
    assert expected <= names, expected - names
    assert 'provider="CPUExecutionProvider"' in answer.text


def test_health_and_models(service):
    with httpx.Client(base_url=service.url, timeout=10) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json()["ready"] is True
        model = client.get("/v2/models").json()["models"][0]
    assert (model["name"], model["version"], model["provider"]) == ("sainet", "1", "CPUExecutionProvider")
    assert model["precision"] == "fp32"           # exported without the int8 graph


def test_reload_keeps_the_old_model_on_a_broken_artifact_and_switches_on_a_good_one(model_root, redis_server,
                                                                                      tmp_path, settings_for):
    models = tmp_path / "models"
    shutil.copytree(model_root / "models", models)
    with LiveServer(settings_for(model_root, redis_server.url, model_dir=models)) as live, \
            httpx.Client(base_url=live.url, timeout=30) as client:
        broken = models / "sainet" / "2"
        shutil.copytree(models / "sainet" / "1", broken)
        (broken / "model.onnx").write_bytes(b"not an onnx model")
        meta = json.loads((broken / "meta.json").read_text())
        (broken / "meta.json").write_text(json.dumps({**meta, "version": "2"}))
        failed = client.post("/v2/models/reload")
        assert failed.status_code == 409 and "version 2" in failed.json()["error"]
        assert score(client).json()["model"]["version"] == "1"
        good = models / "sainet" / "3"
        shutil.copytree(models / "sainet" / "1", good)
        (good / "meta.json").write_text(json.dumps({**meta, "version": "3"}))
        switched = client.post("/v2/models/reload").json()
        assert switched["status"] == "loaded" and switched["version"] == "3"
        assert score(client).json()["model"]["version"] == "3"
        assert 'sainet_model_reloads_total{outcome="failure"} 1.0' in client.get("/metrics").text


def test_full_queue_answers_429_with_retry_after(model_root, redis_server, settings_for):
    settings = settings_for(model_root, redis_server.url, queue_size=1, max_batch_requests=1, max_wait_us=0)
    with LiveServer(settings) as live:
        async def fire():
            async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
                body = {"user_id": "u1", "scenario": "home", "candidates": [f"i{k}" for k in range(50)]}
                return await asyncio.gather(*[client.post("/score", json=body) for _ in range(60)])

        answers = asyncio.run(fire())
    statuses = {a.status_code for a in answers}
    assert statuses <= {200, 429} and 429 in statuses
    rejected = next(a for a in answers if a.status_code == 429)
    assert rejected.headers["retry-after"] == "1"


def test_a_deadline_that_cannot_be_met_gets_503_at_once(model_root, redis_server, settings_for):
    with LiveServer(settings_for(model_root, redis_server.url, request_timeout_ms=0.001)) as live:
        answer = httpx.post(f"{live.url}/score", json={"user_id": "u1", "scenario": "home", "candidates": ["i1"]})
        metrics = httpx.get(f"{live.url}/metrics").text
    assert answer.status_code == 503 and "deadline" in answer.text and answer.headers["retry-after"] == "1"
    assert "sainet_rejected_total{reason=\"deadline\"} 1.0" in metrics, [l for l in metrics.splitlines() if "rejected" in l]


def test_require_gpu_fails_loudly_without_cuda(model_root):
    from service.inference import load_model

    with pytest.raises(RuntimeError, match="SAINET_REQUIRE_GPU"):
        load_model(model_root / "models" / "sainet" / "1", require_gpu=True)


def test_shutdown_drains_requests_in_flight(model_root, redis_server, settings_for):
    live = LiveServer(settings_for(model_root, redis_server.url, max_wait_us=200_000, max_batch_requests=64))
    live.__enter__()

    async def fire():
        async with httpx.AsyncClient(base_url=live.url, timeout=20) as client:
            body = {"user_id": "u1", "scenario": "home", "candidates": ["i1", "i2"]}
            pending = [asyncio.create_task(client.post("/score", json=body)) for _ in range(16)]
            await asyncio.sleep(0.05)             # the requests are queued, waiting for the batch window
            live.server.should_exit = True        # what SIGTERM does
            return await asyncio.gather(*pending)

    answers = asyncio.run(fire())
    live.thread.join(timeout=30)
    assert [a.status_code for a in answers] == [200] * 16


def test_readme_lists_every_setting():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [f"SAINET_{name.upper()}" for name in Settings.model_fields if f"`SAINET_{name.upper()}`" not in readme]
    assert not missing


def test_serving_path_imports_neither_torch_nor_the_training_code():
    import subprocess
    import sys

    code = ("import sys; import service.app, service.inference, service.store; from sainet.cli import build_parser; "
            "build_parser(); bad = [m for m in ('torch', 'model') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
