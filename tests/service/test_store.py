"""RedisFeatureStore and RedisBulkWriter against a real redis-server (the `redis_url` fixture)."""

import asyncio
import socket
import threading
import time

import pytest
import redis

from service.store import (Behaviour, RedisBulkWriter, RedisFeatureStore, UserState, features_key,
                           history_key)

# Generous for the functional tests: the machine running them may be busy.
TIMEOUT = 5.0


def behaviour(i: int, scenario: str = "s0") -> Behaviour:
    return Behaviour(f"i{i}", scenario, 1_600_000_000.0 + i)


def run_with_store(redis_url, scenario, **kwargs):
    """Runs `await scenario(store)` on a fresh event loop with a store that is closed afterwards."""
    async def main():
        store = RedisFeatureStore(redis_url, **{"timeout_seconds": TIMEOUT, **kwargs})
        try:
            return await scenario(store)
        finally:
            await store.close()
    return asyncio.run(main())


@pytest.fixture
def client(redis_url):
    """A plain synchronous client to look at the keys directly."""
    client = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT)
    yield client
    client.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_append_then_fetch_returns_oldest_first(redis_url):
    async def scenario(store):
        await store.append([("u1", behaviour(1)), ("u1", behaviour(2, "s1"))])
        await store.append([("u1", behaviour(3))])
        return await store.fetch(["u1"], history_length=10)

    [state] = run_with_store(redis_url, scenario, history_length=10)
    assert state.history == [behaviour(1), behaviour(2, "s1"), behaviour(3)]
    assert state.features == {}


def test_history_never_exceeds_its_length(redis_url, client):
    async def scenario(store):
        lengths = []
        for start in range(0, 40, 4):                 # 10 appends of 4 behaviours each
            await store.append([("u1", behaviour(i)) for i in range(start, start + 4)])
            lengths.append(client.llen(history_key("sainet", "u1")))
        return lengths, await store.fetch(["u1"], history_length=50)

    lengths, [state] = run_with_store(redis_url, scenario, history_length=5)
    assert lengths == [4] + [5] * 9
    assert state.history == [behaviour(i) for i in range(35, 40)]    # the newest 5, oldest first


def test_fetch_many_users_at_once_with_an_unknown_one(redis_url):
    async def scenario(store):
        await store.append([("a", behaviour(1)), ("b", behaviour(2)), ("a", behaviour(3)),
                            ("c", behaviour(4, "s2"))])
        return await store.fetch(["c", "nobody", "a", "b"], history_length=2)

    states = run_with_store(redis_url, scenario, history_length=10)
    assert states == [UserState([behaviour(4, "s2")]), UserState(), UserState([behaviour(1), behaviour(3)]),
                      UserState([behaviour(2)])]


def test_fetch_truncates_to_the_requested_length_keeping_the_newest(redis_url):
    async def scenario(store):
        await store.append([("u1", behaviour(i)) for i in range(6)])
        return await store.fetch(["u1"], history_length=3)

    [state] = run_with_store(redis_url, scenario, history_length=10)
    assert state.history == [behaviour(3), behaviour(4), behaviour(5)]


def test_user_features_round_trip(redis_url, client):
    writer = RedisBulkWriter(redis_url, history_length=3)
    try:
        assert writer.write({"u1": [behaviour(i) for i in range(5)]},
                            {"u1": {"gender": "F", "zip_prefix": "021"}, "u2": {"gender": "M"}}) == 2
    finally:
        writer.close()

    async def scenario(store):
        return await store.fetch(["u1", "u2"], history_length=10)

    u1, u2 = run_with_store(redis_url, scenario)
    assert u1 == UserState([behaviour(2), behaviour(3), behaviour(4)], {"gender": "F", "zip_prefix": "021"})
    assert u2 == UserState([], {"gender": "M"})
    # The documented layout: a hash of raw values, and a list of JSON [item, scenario, time], newest first.
    assert client.hgetall(features_key("sainet", "u1")) == {b"gender": b"F", b"zip_prefix": b"021"}
    assert client.lindex(history_key("sainet", "u1"), 0) == b'["i4","s0",1600000004.0]'


def test_bulk_write_replaces_previous_state(redis_url):
    writer = RedisBulkWriter(redis_url, history_length=4, chunk=2)     # several chunks
    try:
        writer.write({f"u{k}": [behaviour(1)] for k in range(5)}, {"u0": {"gender": "F", "occupation": "3"}})
        writer.write({f"u{k}": [behaviour(2), behaviour(3)] for k in range(5)}, {"u0": {"gender": "M"}})
    finally:
        writer.close()

    states = run_with_store(redis_url, lambda store: store.fetch([f"u{k}" for k in range(5)], 10))
    assert all(s.history == [behaviour(2), behaviour(3)] for s in states)
    assert states[0].features == {"gender": "M"}


def test_ttl_is_set_when_configured(redis_url, client):
    async def scenario(store):
        await store.append([("u1", behaviour(1))])

    run_with_store(redis_url, scenario, ttl_seconds=300)
    assert 0 < client.ttl(history_key("sainet", "u1")) <= 300

    run_with_store(redis_url, scenario, prefix="nottl")
    assert client.ttl(history_key("nottl", "u1")) == -1                 # no TTL unless configured

    writer = RedisBulkWriter(redis_url, ttl_seconds=60, prefix="bulk")
    try:
        writer.write({"u1": [behaviour(1)]}, {"u1": {"gender": "F"}})
    finally:
        writer.close()
    assert 0 < client.ttl(history_key("bulk", "u1")) <= 60


def test_prefix_separates_stores(redis_url, client):
    async def scenario(store):
        await store.append([("u1", behaviour(1))])

    run_with_store(redis_url, scenario, prefix="a")
    assert client.exists(history_key("a", "u1"), history_key("sainet", "u1")) == 1
    [state] = run_with_store(redis_url, lambda store: store.fetch(["u1"], 10), prefix="b")
    assert state == UserState()


def test_tls_and_password_urls_are_accepted_without_connecting():
    async def construct():
        store = RedisFeatureStore("rediss://:s3cret@redis.example.com:6380/2", timeout_seconds=0.05)
        kwargs = store.client.connection_pool.connection_kwargs
        cls = store.client.connection_pool.connection_class
        await store.close()
        return kwargs, cls

    kwargs, connection_class = asyncio.run(construct())
    assert kwargs["password"] == "s3cret" and kwargs["host"] == "redis.example.com"
    assert kwargs["port"] == 6380 and kwargs["db"] == 2
    assert connection_class is redis.asyncio.connection.SSLConnection

    async def construct_user_password():
        store = RedisFeatureStore("redis://alice:pw@localhost:6379/0")
        kwargs = store.client.connection_pool.connection_kwargs
        await store.close()
        return kwargs

    kwargs = asyncio.run(construct_user_password())
    assert (kwargs["username"], kwargs["password"]) == ("alice", "pw")


def test_unreachable_server_pings_false_and_fetch_fails_fast():
    url = f"redis://127.0.0.1:{closed_port()}/0"

    async def scenario(store):
        assert await store.ping() is False
        started = time.perf_counter()
        with pytest.raises((redis.ConnectionError, redis.TimeoutError, OSError)):
            await store.fetch(["u1"], history_length=5)
        with pytest.raises((redis.ConnectionError, redis.TimeoutError, OSError)):
            await store.append([("u1", behaviour(1))])
        return time.perf_counter() - started

    assert run_with_store(url, scenario, timeout_seconds=0.05) < 2.0


def test_silent_server_times_out_instead_of_hanging():
    """A peer that accepts TCP connections but never answers (a hung Redis): the call fails after
    about the configured timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    stop = threading.Event()

    def accept_and_ignore():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept_and_ignore, daemon=True)
    thread.start()
    url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"

    async def scenario(store):
        assert await store.ping() is False
        started = time.perf_counter()
        with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
            await store.fetch(["u1", "u2"], history_length=5)
        return time.perf_counter() - started

    try:
        assert run_with_store(url, scenario, timeout_seconds=0.1) < 2.0
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        listener.close()


def test_a_users_keys_share_a_hash_tag_and_a_braced_prefix_is_rejected(redis_url):
    from redis.crc import key_slot

    assert history_key("sainet", "u1") == "sainet:h:{u1}" and features_key("sainet", "u1") == "sainet:u:{u1}"
    users = ["u1", "a:b", "x{y", "x}y", "}", "}x", "~}x", "~", ""]
    for user in users:
        assert key_slot(history_key("p", user).encode()) == key_slot(features_key("p", user).encode())
    assert len({history_key("p", user) for user in users}) == len(users)      # one to one
    for prefix in ["a{b", "a}b"]:
        with pytest.raises(ValueError, match="must not contain"):
            RedisFeatureStore(redis_url, prefix=prefix)
        with pytest.raises(ValueError, match="must not contain"):
            RedisBulkWriter(redis_url, prefix=prefix)
    [state] = run_with_store(redis_url, lambda store: store.fetch(["nobody"], 5))
    assert state == UserState() and state.degraded is False      # a single server degrades per batch only
