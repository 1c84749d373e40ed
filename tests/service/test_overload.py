"""Issue 13, functionally: admission at the door (before the body is parsed), per-request deadlines,
the feature store's circuit breaker, readiness that means "can answer", idempotent events. Real
uvicorn, real Redis, real ONNX Runtime; no timing assertions beyond "did not wait for a window
many times longer than the answer takes"."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from service.breaker import CircuitBreaker
from service.store import Behaviour, NewEvent, RedisFeatureStore, event_ids_key, history_key
from service.testing import LiveServer

GOOD = {"user_id": "u1", "scenario": "home", "candidates": ["i1", "i2"]}


def metric(base_url: str, name: str, **labels) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


# -- the door -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["abc", "nan", "NaN", "-5", "0", "inf", "1e400", "\u00e9"])
def test_a_bad_deadline_header_gets_422_naming_it(service, value):
    answer = httpx.post(f"{service.url}/score", json=GOOD,
                        headers={"X-Request-Timeout-Ms": value.encode("utf-8")}, timeout=10)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["header", "X-Request-Timeout-Ms"]


def test_a_client_deadline_is_honoured_and_capped(service):
    assert httpx.post(f"{service.url}/score", json=GOOD, headers={"X-Request-Timeout-Ms": "5000"},
                      timeout=10).status_code == 200        # capped by SAINET_REQUEST_TIMEOUT_MS, still fine
    answer = httpx.post(f"{service.url}/score", json=GOOD, headers={"X-Request-Timeout-Ms": "0.001"}, timeout=10)
    assert answer.status_code == 503 and "deadline" in answer.text and answer.headers["retry-after"] == "1"


def stuck_inference(live: LiveServer, release: threading.Event):
    original = live.core.batcher._infer

    def stuck(*args):
        release.wait(20)
        return original(*args)

    live.core.batcher._infer = stuck


def test_the_door_refuses_before_the_body_is_parsed_when_the_queue_is_full(model_root, redis_server,
                                                                           settings_for):
    release = threading.Event()
    with LiveServer(settings_for(model_root, redis_server.url, queue_size=3, request_timeout_ms=20_000)) as live:
        stuck_inference(live, release)

        async def fire():
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
                held = [asyncio.create_task(http.post("/score", json=GOOD)) for _ in range(3)]
                await asyncio.sleep(0.5)       # the three fill the queue (one of them on the stuck worker)
                refused = await http.post("/score", content=b"{not json", headers={"content-type": "application/json"})
                release.set()
                return refused, await asyncio.gather(*held)

        refused, held = asyncio.run(fire())
        assert refused.status_code == 429 and "queue is full" in refused.text     # not a 422: never parsed
        assert [a.status_code for a in held] == [200, 200, 200]
        assert metric(live.url, "sainet_rejected_total", reason="queue_full") == 1
        assert metric(live.url, "sainet_rejection_duration_seconds_count") == 1


def test_a_connection_refused_at_the_door_stays_usable(model_root, redis_server, settings_for):
    """The server writes the 429 itself and drops the body that follows unread: the next request on
    the same keep-alive connection is parsed from its own first byte."""
    release = threading.Event()
    with LiveServer(settings_for(model_root, redis_server.url, queue_size=1, request_timeout_ms=20_000)) as live:
        stuck_inference(live, release)
        with httpx.Client(base_url=live.url, timeout=30) as holder_client:
            holder = threading.Thread(target=holder_client.post, args=("/score",), kwargs={"json": GOOD})
            holder.start()
            time.sleep(0.5)
            one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            with httpx.Client(base_url=live.url, timeout=30, limits=one) as http:
                refused = http.post("/score", json={**GOOD, "candidates": ["i1"] * 40})
                release.set()
                holder.join(30)
                answers = [http.post("/score", json=GOOD) for _ in range(2)]
    assert refused.status_code == 429 and refused.json()["detail"][0]["type"] == "Overloaded"
    assert [a.status_code for a in answers] == [200, 200]


def test_a_refused_body_that_trickles_on_does_not_hold_the_connection(model_root, redis_server, settings_for):
    release = threading.Event()
    settings = settings_for(model_root, redis_server.url, queue_size=1, request_timeout_ms=20_000,
                            header_timeout_seconds=1)
    with LiveServer(settings) as live:
        stuck_inference(live, release)
        with httpx.Client(base_url=live.url, timeout=30) as holder_client:
            holder = threading.Thread(target=holder_client.post, args=("/score",), kwargs={"json": GOOD})
            holder.start()
            time.sleep(0.5)
            host, port = live.url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=10) as raw:
                raw.sendall(b"POST /score HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                            b"content-length: 5000\r\n\r\n{\"user")
                answer = raw.recv(4096)
                raw.sendall(b"_id\": ")              # ... and the rest never comes
                rest = b""
                while chunk := raw.recv(4096):         # the server closes within the header timeout
                    rest += chunk
            release.set()
            holder.join(30)
    assert answer.startswith(b"HTTP/1.1 429") and rest == b""


def test_the_door_refuses_what_the_recent_service_rate_cannot_answer_in_time(model_root, redis_server,
                                                                               settings_for):
    release = threading.Event()
    with LiveServer(settings_for(model_root, redis_server.url, request_timeout_ms=20_000)) as live:
        stuck_inference(live, release)
        with httpx.Client(base_url=live.url, timeout=30) as held_client:
            held = threading.Thread(target=held_client.post, args=("/score",), kwargs={"json": GOOD})
            held.start()
            time.sleep(0.5)                               # one request ahead, on the worker
            live.core.batcher.costs.seconds_per_request = 5.0     # as if each took 5 s of the worker
            answer = httpx.post(f"{live.url}/score", json=GOOD, timeout=10)
            release.set()
            held.join(30)
        assert answer.status_code == 429 and "deadline" in answer.text
        assert metric(live.url, "sainet_rejected_total", reason="deadline_estimate") == 1
        # nothing ahead: admitted whatever the estimate says, and the estimate learns again
        assert httpx.post(f"{live.url}/score", json=GOOD, timeout=10).status_code == 200


def test_requests_that_wait_past_their_deadline_expire_one_by_one(model_root, redis_server, settings_for):
    """Queued behind a stuck worker, each request gets its 503 at its own deadline (no burst of
    expiries at a dequeue), and the worker still serves the next ones once it is free."""
    release = threading.Event()
    with LiveServer(settings_for(model_root, redis_server.url, request_timeout_ms=20_000)) as live:
        stuck_inference(live, release)

        async def fire():
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
                blocker = asyncio.create_task(http.post("/score", json=GOOD))
                await asyncio.sleep(0.3)
                waits = []
                for budget_ms in (400, 800):
                    sent = time.perf_counter()
                    answer = await http.post("/score", json=GOOD, headers={"X-Request-Timeout-Ms": str(budget_ms)})
                    waits.append((answer.status_code, time.perf_counter() - sent))
                release.set()
                return waits, await blocker

        waits, blocker = asyncio.run(fire())
        assert [status for status, _ in waits] == [503, 503] and blocker.status_code == 200
        assert waits[1][1] > waits[0][1]       # each at its own deadline
        assert httpx.post(f"{live.url}/score", json=GOOD, timeout=10).status_code == 200


def test_a_free_worker_does_not_wait_for_the_batch_window(model_root, redis_server, settings_for):
    with LiveServer(settings_for(model_root, redis_server.url, max_wait_us=10_000_000)) as live:
        httpx.post(f"{live.url}/score", json=GOOD, timeout=30)
        sent = time.perf_counter()
        assert httpx.post(f"{live.url}/score", json=GOOD, timeout=30).status_code == 200
        assert time.perf_counter() - sent < 5.0       # the window is 10 s: an upper bound, not a wait


# -- the breaker and readiness --------------------------------------------------------------------

def test_the_breaker_opens_on_a_stalled_redis_scores_degraded_and_closes_when_it_answers(
        model_root, redis_server, settings_for):
    with LiveServer(settings_for(model_root, redis_server.url, redis_timeout_ms=50, breaker_failures=2,
                                 breaker_max_open_ms=200)) as live, httpx.Client(base_url=live.url, timeout=10) as http:
        admin = redis.Redis.from_url(redis_server.url)
        try:
            admin.execute_command("CLIENT", "PAUSE", "3000", "ALL")
            answers = [http.post("/score", json=GOOD) for _ in range(4)]
            assert all(a.status_code == 200 and a.json()["degraded"] for a in answers)
            ready = http.get("/v2/health/ready")
            assert ready.status_code == 200 and ready.json()["breaker_open"] and ready.json()["degraded"]
            assert metric(live.url, "sainet_feature_store_breaker_open") == 1
            sent = time.perf_counter()
            assert http.post("/score", json=GOOD).json()["degraded"]
            assert time.perf_counter() - sent < 1.0      # no wait on Redis while open (its timeout is 50 ms)
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
        recovered_at = None
        for _ in range(100):
            if not http.post("/score", json=GOOD).json()["degraded"]:
                recovered_at = time.perf_counter()
                break
            time.sleep(0.05)
        assert recovered_at is not None
        assert metric(live.url, "sainet_feature_store_breaker_open") == 0
        assert metric(live.url, "sainet_feature_store_breaker_transitions_total", to="closed") == 1
        assert http.get("/v2/health/ready").json() == {"ready": True, "model_loaded": True, "redis": True,
                                                      "degraded": False, "breaker_open": False}
        admin.close()


def test_a_breaker_probes_with_growing_pauses_and_closes_on_the_first_answer():
    async def scenario():
        answers = iter([False, False, True])
        probes = []

        async def probe() -> bool:
            probes.append(time.monotonic())
            return next(answers)

        changes = []
        breaker = CircuitBreaker(probe, failures_to_open=2, first_open_seconds=0.05, max_open_seconds=0.08,
                                 on_change=changes.append)
        breaker.record_failure()
        assert breaker.allows()
        breaker.record_failure()
        assert not breaker.allows() and changes == [True]
        for _ in range(100):
            if breaker.allows():
                break
            await asyncio.sleep(0.02)
        await breaker.close()
        return breaker, changes, probes

    breaker, changes, probes = asyncio.run(scenario())
    assert breaker.allows() and changes == [True, False] and len(probes) == 3
    assert probes[2] - probes[1] >= 0.075         # the pause doubled, capped at max_open_seconds


def test_metrics_count_refusals_before_any_handler_and_expose_process_figures(service):
    httpx.post(f"{service.url}/score", content=b"x" * 30_000, timeout=10)         # over max_body_bytes
    assert metric(service.url, "sainet_refused_before_handler_total", status="413") == 1
    assert metric(service.url, "process_resident_memory_bytes") > 0
    assert metric(service.url, "process_open_fds") > 0
    assert metric(service.url, "sainet_fetches_in_flight") == 0


# -- idempotent events ----------------------------------------------------------------------------

def test_a_retried_event_id_is_stored_once_and_ids_are_per_user(service, redis_server):
    client = redis.Redis.from_url(redis_server.url)
    with httpx.Client(base_url=service.url, timeout=10) as http:
        events = [{"user_id": "idem", "item_id": "i1", "scenario": "home", "timestamp": 10, "event_id": "e-1"},
                  {"user_id": "idem", "item_id": "i2", "scenario": "home", "timestamp": 11, "event_id": "e-2"}]
        assert http.post("/events", json=events).json() == {"appended": 2, "duplicates": 0}
        assert http.post("/events", json=events).json() == {"appended": 0, "duplicates": 2}
        again = [*events, {"user_id": "idem", "item_id": "i3", "scenario": "feed", "timestamp": 12, "event_id": "e-3"},
                 {"user_id": "other", "item_id": "i1", "scenario": "home", "event_id": "e-1"}]
        assert http.post("/events", json=again).json() == {"appended": 2, "duplicates": 2}
        without_ids = {"user_id": "idem", "item_id": "i4", "scenario": "home", "timestamp": 13}
        assert http.post("/events", json=[without_ids, without_ids]).json() == {"appended": 2, "duplicates": 0}
        bad = http.post("/events", json={**without_ids, "event_id": ""})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "event_id"]
    items = [entry.split(b'"')[1] for entry in client.lrange(history_key("sainet", "idem"), 0, -1)]
    assert items == [b"i4", b"i4", b"i3", b"i2", b"i1"]
    assert client.ttl(event_ids_key("sainet", "idem")) > 0      # the ids are forgotten after the window
    client.close()


def test_event_ids_are_forgotten_after_the_dedupe_window(redis_server):
    async def scenario():
        store = RedisFeatureStore(redis_server.url, history_length=10, dedupe_seconds=1)
        try:
            event = NewEvent("w", Behaviour("i1", "home", 1.0), "same")
            first = await store.append([event])
            second = await store.append([event])
            await asyncio.sleep(1.2)
            third = await store.append([event])
            history = (await store.fetch(["w"], 10))[0].history
        finally:
            await store.close()
        return first, second, third, history

    first, second, third, history = asyncio.run(scenario())
    assert (first, second, third) == (1, 0, 1) and len(history) == 2


def test_a_write_that_times_out_says_its_outcome_is_unknown_and_a_retry_is_safe(model_root, redis_server,
                                                                                settings_for):
    admin = redis.Redis.from_url(redis_server.url)
    event = {"user_id": "unsure", "item_id": "i1", "scenario": "home", "event_id": "only-once"}
    # A 300 ms Redis budget against a 1.5 s pause: the write times out however loaded the machine.
    with LiveServer(settings_for(model_root, redis_server.url, redis_timeout_ms=300)) as service:
        try:
            admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
            answer = httpx.post(f"{service.url}/events", json=event, timeout=10)
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert "may or may not be stored" in answer.text and "same event_id" in answer.text
        for _ in range(3):      # the client retries: stored exactly once, whatever the first did
            assert httpx.post(f"{service.url}/events", json=event, timeout=10).status_code == 200
    assert admin.llen(history_key("sainet", "unsure")) == 1
    admin.close()
