"""The service under hostile input and broken artifacts (issue 12): a real uvicorn with the service's
own limits, a real Redis, a real ONNX Runtime session. No timing asserts: bounds are checked as
"answered at all, with this status", with generous client timeouts."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from service.errors import ArtifactError, DeadlineExceeded, Forbidden, InvalidInput, Overloaded, Unauthenticated
from service.http_errors import error_body, status_of
from service.server import is_loopback, warn_if_exposed
from service.settings import Settings
from service.store import features_key, history_key
from service.testing import LiveServer, free_port

GOOD = {"user_id": "u1", "scenario": "home", "candidates": ["i1", "i2"]}


def metric(base_url: str, name: str, **labels) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def locations(answer: httpx.Response) -> list[str]:
    return [".".join(str(p) for p in d.get("loc", [])) for d in answer.json()["detail"]]


def post_raw(url: str, path: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{url}{path}", content=body, headers={"content-type": "application/json"}, timeout=10)


# 1-3: values that JSON allows and the service must refuse, naming the field --------------------------

@pytest.mark.parametrize("timestamp", [b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity", b"-1", b"5e9",
                                       b"1" + b"0" * 400, b'"1700000000"', b"true"])
def test_bad_timestamps_get_422_naming_the_field_and_store_nothing(service, timestamp):
    body = b'{"user_id": "victim", "item_id": "i1", "scenario": "home", "timestamp": ' + timestamp + b"}"
    answer = post_raw(service.url, "/events", body)
    assert answer.status_code == 422, answer.text
    assert any(loc.endswith("timestamp") for loc in locations(answer)), answer.json()
    listed = post_raw(service.url, "/events", b"[" + body + b"]")
    assert listed.status_code == 422 and any(loc == "body.0.timestamp" for loc in locations(listed))
    assert httpx.post(f"{service.url}/score", json={**GOOD, "user_id": "victim"}).json()["history_length"] == 0


def test_a_5000_digit_number_is_malformed_json_not_a_500(service):
    body = b'{"user_id": "u1", "item_id": "i1", "scenario": "home", "timestamp": ' + b"1" * 5000 + b"}"
    answer = post_raw(service.url, "/events", body)
    assert answer.status_code == 422 and locations(answer) == ["body"], answer.text


@pytest.mark.parametrize("path,body,field", [
    ("/score", b'{"user_id": "\\ud800", "scenario": "home", "candidates": ["i1"]}', "body.user_id"),
    ("/score", b'{"user_id": "u1", "scenario": "home", "candidates": ["i1", "x\\udfff"]}', "body.candidates.1"),
    ("/score", b'{"user_id": "u1", "scenario": "home", "candidates": ["i1"], "features": {"g": "\\ud800"}}',
     "body.features.g"),
    ("/score", b'{"user_id": "u1", "scenario": "\\ud800", "candidates": ["i1"]}', "body.scenario"),
    ("/events", b'{"user_id": "\\ud800", "item_id": "i1", "scenario": "home"}', "body.user_id"),
    ("/events", b'[{"user_id": "u1", "item_id": "\\udc00", "scenario": "home"}]', "body.0.item_id"),
])
def test_lone_surrogates_get_422_naming_the_field(service, path, body, field):
    answer = post_raw(service.url, path, body)
    assert answer.status_code == 422, answer.text
    assert field in locations(answer), answer.json()
    assert metric(service.url, "sainet_degraded_total") == 0


@pytest.mark.parametrize("body,field", [
    (b'{"user_id": ' + b"9" * 400 + b', "scenario": "home", "candidates": ["i1"]}', "body.user_id"),
    (b'{"user_id": 18446744073709551616, "scenario": "home", "candidates": ["i1"]}', "body.user_id"),
    (b'{"user_id": "u1", "scenario": "home", "candidates": [true]}', "body.candidates.0"),
    (b'{"user_id": "u1", "scenario": "home", "candidates": ["i1"], "features": {"g": 1.5}}', "body.features.g"),
])
def test_huge_integers_bools_and_floats_as_ids_get_422(service, body, field):
    answer = post_raw(service.url, "/score", body)
    assert answer.status_code == 422 and field in locations(answer), answer.text


def test_a_poisoned_history_entry_degrades_nobody(service, redis_server):
    """Entries written straight into Redis (by an old bug or another writer) that do not decode are
    skipped and counted; the batch they fall into is scored normally for everyone."""
    client = redis.Redis.from_url(redis_server.url)
    prefix = service.core.settings.redis_prefix
    client.rpush(history_key(prefix, "poisoned"), b'["i3","home",1]', b'["i4","home",null]', b"not json",
                 b'["i5"]', b'["i6","feed",2]')
    client.set(history_key(prefix, "wrong-type"), b"a string, not a list")
    client.hset(features_key(prefix, "bad-bytes"), mapping={b"gender": b"\xff\xfe"})
    client.rpush(history_key(prefix, "innocent"), b'["i7","search",3]')
    client.close()
    users = ["poisoned", "wrong-type", "bad-bytes", "innocent"] * 8

    async def fire():
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
            return await asyncio.gather(*[http.post("/score", json={**GOOD, "user_id": u}) for u in users])

    answers = {u: a.json() for u, a in zip(users, asyncio.run(fire()))}
    assert all(not a["degraded"] for a in answers.values()), answers
    assert answers["poisoned"]["history_length"] == 2            # the two entries that decode
    assert answers["innocent"]["history_length"] == 1
    assert answers["wrong-type"]["cold_start"] is True
    assert metric(service.url, "sainet_degraded_total") == 0
    assert metric(service.url, "sainet_undecodable_entries_total") >= 5


# 4-6: the HTTP layer's limits -------------------------------------------------------------------------

def test_an_oversized_chunked_body_gets_413(service):
    def chunks():
        for _ in range(30):
            yield b" " * 1000     # 30 kB, no content-length: over the 20 kB limit only as it streams

    answer = httpx.post(f"{service.url}/score", content=chunks(), headers={"content-type": "application/json"},
                        timeout=10)
    assert answer.status_code == 413 and locations(answer) == ["body"], answer.text


def raw_exchange(port: int, payload: bytes, wait_seconds: float = 15.0) -> bytes:
    """Sends `payload` and returns what the server answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_seconds) as sock:
        sock.sendall(payload)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return received


@pytest.fixture()
def tight(model_root, redis_server, settings_for):
    settings = settings_for(model_root, redis_server.url, max_header_bytes=8192, header_timeout_seconds=0.5,
                            body_timeout_seconds=0.5)
    with LiveServer(settings) as live:
        yield live


def test_giant_headers_get_431_and_a_close(tight):
    answer = raw_exchange(tight.port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000
                          + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    normal = httpx.get(f"{tight.url}/v2/health/live", headers={"X-Small": "a" * 4000}, timeout=10)
    assert normal.status_code == 200


def test_half_sent_headers_get_408_and_a_close(tight):
    answer = raw_exchange(tight.port, b"POST /score HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]


def test_an_idle_connection_that_never_sends_is_closed(tight):
    assert raw_exchange(tight.port, b"").startswith(b"HTTP/1.1 408")


def test_a_half_sent_body_gets_408(tight):
    answer = raw_exchange(tight.port, b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                      b"Content-Length: 100\r\n\r\n{\"user_id\":")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert b'"body"' in answer


def test_connections_over_the_cap_get_503(model_root, redis_server, settings_for):
    settings = settings_for(model_root, redis_server.url, max_connections=3, header_timeout_seconds=30)
    with LiveServer(settings) as live:
        held = [socket.create_connection(("127.0.0.1", live.port), timeout=10) for _ in range(3)]
        try:
            time.sleep(0.2)
            assert raw_exchange(live.port, b"").startswith(b"HTTP/1.1 503")
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:      # the held connections are gone: service again
            try:
                if httpx.get(f"{live.url}/v2/health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert httpx.get(f"{live.url}/v2/health/live", timeout=5).status_code == 200


def test_sigterm_is_not_held_by_a_slow_client(model_root, redis_server):
    """`sainet serve` itself: a client that sends half a body keeps its connection (the body
    timeout is long here), and SIGTERM still ends the process within the grace bound."""
    port = free_port()
    env = {**os.environ, "SAINET_MODEL_DIR": str(model_root / "models"), "SAINET_REDIS_URL": redis_server.url,
           "SAINET_SHUTDOWN_GRACE_SECONDS": "1", "SAINET_BODY_TIMEOUT_SECONDS": "120",
           "SAINET_RELOAD_POLL_SECONDS": "0", "SAINET_INTRA_OP_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "sainet", "serve", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "the service did not start"
            time.sleep(0.2)
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        # The bound is SAINET_SHUTDOWN_GRACE_SECONDS (1 s) plus the model and Redis clean-up; today's
        # 30 s grace would make this wait fail.
        # uvicorn re-raises the captured SIGTERM once it has shut down cleanly
        assert process.wait(timeout=15) in (0, -signal.SIGTERM), process.stderr.read()
        slow.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# 7-11: reloading --------------------------------------------------------------------------------------

def copy_version(models: Path, source: str, target: str, edit_meta=None) -> Path:
    directory = models / "sainet" / target
    shutil.copytree(models / "sainet" / source, directory)
    meta = json.loads((directory / "meta.json").read_text())
    meta["version"] = target
    if edit_meta:
        edit_meta(meta, directory)
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


def rename_output(meta: dict, directory: Path) -> None:
    graph = onnx.load(str(directory / "model.onnx"))
    old = graph.graph.output[0].name
    for node in graph.graph.node:
        node.output[:] = ["probability" if o == old else o for o in node.output]
    graph.graph.output[0].name = "probability"
    onnx.save(graph, str(directory / "model.onnx"))


def drop_item_vocabulary(meta: dict, directory: Path) -> None:
    del meta["vocabularies"]["item_id"]


def empty_scenarios(meta: dict, directory: Path) -> None:
    meta["scenarios"] = []


def rename_scenarios(meta: dict, directory: Path) -> None:
    meta["scenarios"] = [f"new-{s}" for s in meta["scenarios"]]
    (directory / "vocab" / "scenario.json").write_text(json.dumps(meta["scenarios"]))


def wrong_version(meta: dict, directory: Path) -> None:
    meta["version"] = "7"


@pytest.fixture()
def models(model_root, tmp_path) -> Path:
    shutil.copytree(model_root / "models", tmp_path / "models")
    return tmp_path / "models"


@pytest.fixture()
def reloading(models, redis_server, settings_for):
    with LiveServer(settings_for(models.parent, redis_server.url, model_dir=models)) as live:
        yield live


@pytest.mark.parametrize("breakage,message", [
    (drop_item_vocabulary, "item_id"), (rename_output, "scores"), (empty_scenarios, "scenarios"),
    (wrong_version, "version"), (rename_scenarios, "SAINET_ALLOW_SCENARIO_CHANGE"),
])
def test_every_failed_reload_is_a_counted_409_and_is_not_retried_while_unchanged(models, reloading, breakage,
                                                                                 message):
    copy_version(models, "1", "2", breakage)
    with httpx.Client(base_url=reloading.url, timeout=30) as client:
        failed = client.post("/v2/models/reload")
        assert failed.status_code == 409, failed.text
        assert failed.json()["status"] == "failed" and message in failed.json()["error"]
        assert message in client.get("/v2/models").json()["models"][0]["last_error"]
        assert client.post("/score", json=GOOD).json()["model"]["version"] == "1"
        again = client.post("/v2/models/reload")           # what every poll does
        assert again.status_code == 200 and again.json()["status"] == "unchanged"
        assert metric(reloading.url, "sainet_model_reloads_total", outcome="failure") == 1


def test_scenario_change_loads_when_allowed(models, redis_server, settings_for):
    copy_version(models, "1", "2", rename_scenarios)
    settings = settings_for(models.parent, redis_server.url, model_dir=models, allow_scenario_change=True)
    with LiveServer(settings) as live:
        assert httpx.get(f"{live.url}/v2/models").json()["models"][0]["version"] == "2"


def test_a_failed_version_is_retried_once_its_files_change(models, reloading):
    broken = copy_version(models, "1", "2")
    good_graph = (broken / "model.onnx").read_bytes()
    (broken / "model.onnx").write_bytes(b"half a copy")
    with httpx.Client(base_url=reloading.url, timeout=30) as client:
        assert client.post("/v2/models/reload").status_code == 409
        (broken / "model.onnx").write_bytes(good_graph)         # repaired in place
        repaired = client.post("/v2/models/reload").json()
        assert repaired["status"] == "loaded" and repaired["version"] == "2"
        assert client.get("/v2/models").json()["models"][0]["last_error"] is None


def test_only_integer_directories_are_versions(models, reloading):
    shutil.copytree(models / "sainet" / "1", models / "sainet" / "backup-old")
    copy_version(models, "1", "10")
    for name in ("9", ".11.tmp"):
        copy_version(models, "1", name)
    shutil.rmtree(models / "sainet" / "9")
    answer = httpx.post(f"{reloading.url}/v2/models/reload", timeout=30).json()
    assert answer["status"] == "loaded" and answer["version"] == "10"


def test_startup_skips_a_broken_newest_version(models, redis_server, settings_for):
    copy_version(models, "1", "2", drop_item_vocabulary)
    with LiveServer(settings_for(models.parent, redis_server.url, model_dir=models)) as live:
        described = httpx.get(f"{live.url}/v2/models").json()["models"][0]
    assert described["version"] == "1" and "item_id" in described["last_error"]


# 12: seeding with the service's settings ---------------------------------------------------------------

def test_seed_uses_the_service_prefix_and_url(model_root, redis_server, monkeypatch, settings_for):
    from sainet.cli import main

    monkeypatch.setenv("SAINET_REDIS_URL", redis_server.url)
    monkeypatch.setenv("SAINET_REDIS_PREFIX", "custom")
    assert main(["seed", "--dataset", "logs", "--data-dir", str(model_root / "interactions.parquet"),
                 "--history-length", "6"]) == 0
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.exists(history_key("custom", "u1")) and not client.exists(history_key("sainet", "u1"))
    finally:
        client.close()
    with LiveServer(settings_for(model_root, redis_server.url, redis_prefix="custom")) as live:
        assert httpx.post(f"{live.url}/score", json=GOOD).json()["cold_start"] is False


# 13: tokens --------------------------------------------------------------------------------------------

ADMIN, WRITER = "admin-secret-0123", "writer-secret-4567"


@pytest.fixture()
def guarded(models, redis_server, settings_for):
    settings = settings_for(models.parent, redis_server.url, model_dir=models, admin_token=ADMIN, write_token=WRITER)
    with LiveServer(settings) as live:
        yield live


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path,body,token", [
    ("/events", {"user_id": "u1", "item_id": "i1", "scenario": "home"}, WRITER),
    ("/v2/models/reload", None, ADMIN),
])
def test_write_and_admin_routes_need_their_token(guarded, caplog, path, body, token):
    caplog.set_level(logging.DEBUG)
    with httpx.Client(base_url=guarded.url, timeout=30) as client:
        missing = client.post(path, json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert client.post(path, json=body, headers=bearer("wrong")).status_code == 403
        other = ADMIN if token == WRITER else WRITER
        assert client.post(path, json=body, headers=bearer(other)).status_code == 403
        assert client.post(path, json=body, headers={"Authorization": "Basic eDp5"}).status_code == 401
        assert client.post(path, json=body, headers=bearer(token)).status_code == 200
        assert client.post("/score", json=GOOD).status_code == 200          # scoring stays open
    service_logs = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert token not in service_logs and "Bearer wrong" not in service_logs


def test_model_paths_are_shown_only_with_the_admin_token(models, guarded):
    copy_version(models, "1", "2", drop_item_vocabulary)
    httpx.post(f"{guarded.url}/v2/models/reload", headers=bearer(ADMIN), timeout=30)
    anonymous = httpx.get(f"{guarded.url}/v2/models").json()["models"][0]
    admin = httpx.get(f"{guarded.url}/v2/models", headers=bearer(ADMIN)).json()["models"][0]
    assert "path" not in anonymous and str(models) not in json.dumps(anonymous)
    assert "<model_dir>" in anonymous["last_error"]
    assert admin["path"].startswith(str(models)) and str(models) in admin["last_error"]


def test_an_exposed_bind_without_tokens_warns_loudly(caplog):
    caplog.set_level(logging.WARNING)
    warn_if_exposed("127.0.0.1", Settings())
    assert not caplog.records
    warn_if_exposed("0.0.0.0", Settings())
    assert "SAINET_WRITE_TOKEN" in caplog.text and "SAINET_ADMIN_TOKEN" in caplog.text
    caplog.clear()
    warn_if_exposed("0.0.0.0", Settings(admin_token="a", write_token="b"))
    assert not caplog.records
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("example.org")
    assert Settings(write_token="", admin_token=" ").write_token is None          # empty means unset
    with pytest.raises(ValueError, match="SAINET_REDIS_URL"):
        Settings(redis_cluster=True)


# 14: the OpenAPI document ------------------------------------------------------------------------------

def test_openapi_lists_every_status_and_limit(guarded, settings_for):
    document = httpx.get(f"{guarded.url}/openapi.json").json()
    paths = document["paths"]
    assert {"413", "422", "408", "429", "503"} <= set(paths["/score"]["post"]["responses"])
    assert {"401", "403", "413", "422", "503"} <= set(paths["/events"]["post"]["responses"])
    assert {"401", "403", "409"} <= set(paths["/v2/models/reload"]["post"]["responses"])
    request = document["components"]["schemas"]["ScoreRequest"]
    assert request["properties"]["candidates"]["maxItems"] == guarded.core.settings.max_candidates
    assert set(request["properties"]["scenario"]["enum"]) == {"home", "search", "feed"}
    assert request["properties"]["user_id"]["anyOf"][0]["maxLength"] == guarded.core.settings.max_id_length
    assert document["components"]["securitySchemes"]


# 15: one error table -----------------------------------------------------------------------------------

def test_errors_map_to_http_in_one_table_with_per_instance_headers():
    assert status_of(InvalidInput("x", "f"))[0] == 422
    assert status_of(ArtifactError("x"))[0] == 409
    assert status_of(DeadlineExceeded("x")) == (503, {"Retry-After": "1"})
    assert status_of(Unauthenticated("x")) == (401, {"WWW-Authenticate": "Bearer"})
    assert status_of(Forbidden("x"))[0] == 403
    slow, fast = Overloaded("x", retry_after_seconds=5), Overloaded("y")
    assert status_of(slow)[1] == {"Retry-After": "5"} and status_of(fast)[1] == {"Retry-After": "1"}
    assert not hasattr(InvalidInput, "headers") and not hasattr(InvalidInput, "status_code")
    assert error_body(InvalidInput("bad \ud800", "user_id"))["detail"][0]["msg"] == "bad \\ud800"


# 16: the batcher cannot leave a request waiting for ever ----------------------------------------------

def test_a_failing_collect_step_does_not_kill_the_batcher(service):
    batcher = service.core.batcher
    original, calls = batcher._collect, []

    async def failing_once():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected failure in the collect step")
        return await original()

    batcher._collect = failing_once
    answers = [httpx.post(f"{service.url}/score", json=GOOD, timeout=10) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]


def test_a_stuck_inference_answers_503_by_the_deadline(model_root, redis_server, settings_for):
    with LiveServer(settings_for(model_root, redis_server.url, request_timeout_ms=200)) as live:
        def stuck(*args):
            time.sleep(3)
            raise RuntimeError("never mind")

        live.core.batcher._infer = stuck
        answer = httpx.post(f"{live.url}/score", json=GOOD, timeout=30)
        assert answer.status_code == 503 and "deadline" in answer.text
        assert answer.headers["retry-after"] == "1"


def test_scores_are_still_finite_after_all_that(service):
    answer = httpx.post(f"{service.url}/score", json=GOOD, timeout=10).json()
    assert np.isfinite(answer["scores"]).all()


# Issue 13 (part): /events bursts cannot starve /score of Redis connections ----------------------------

def test_a_burst_of_blocked_writers_degrades_no_score(model_root, redis_server, settings_for):
    """Writes are paused in Redis (CLIENT PAUSE WRITE), so 150 concurrent /events hold or wait for
    connections; reads still run. Scoring draws on a pool of its own and is never degraded. (The
    door's queue-delay and deadline bounds are lifted: on a loaded test machine it may refuse part of a burst of 32,
    which is its job, and not what this test is about.)"""
    async def fire(url: str):
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
            event = {"user_id": "burst", "item_id": "i1", "scenario": "home"}
            writers = [asyncio.create_task(http.post("/events", json=event)) for _ in range(150)]
            await asyncio.sleep(0.3)           # the writers hold every write connection now
            scores = await asyncio.gather(*[http.post("/score", json={**GOOD, "user_id": f"u{i}"})
                                            for i in range(32)])
            return scores, await asyncio.gather(*writers)

    # Redis calls get 1 s, not the suite's 200 ms: the client, 182 requests and the server share one
    # process (and its GIL) here, and a loaded CI machine can lag it past 200 ms. The pause (3 s)
    # stays well past that budget, so a score drawing on the writers' pool would still degrade.
    admin = redis.Redis.from_url(redis_server.url)
    with LiveServer(settings_for(model_root, redis_server.url, max_queue_delay_ms=60_000,
                                 request_timeout_ms=60_000, redis_timeout_ms=1000)) as service:
        try:
            admin.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
            scores, writes = asyncio.run(fire(service.url))
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.close()
    assert [s.status_code for s in scores] == [200] * 32
    assert not any(s.json()["degraded"] for s in scores), [s.json() for s in scores]
    assert {w.status_code for w in writes} <= {200, 503}
