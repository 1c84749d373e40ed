"""The feature store: per-user scenario-tagged behaviour histories and user-side features in Redis.

Key layout (prefix configurable, default "sainet"):

    {prefix}:h:{user_id}   list, newest behaviour first; each element is the JSON array
                           [item_id, scenario, timestamp] with raw ids (never model indices), so a
                           history survives a model update with new vocabularies
    {prefix}:u:{user_id}   hash, user-side feature name -> raw value

An append pushes the new behaviours and trims the list to `history_length` in one MULTI/EXEC
transaction (optionally refreshing a TTL), so a reader never sees an untrimmed list. Behaviours are
kept in arrival order. Everything the service needs goes through `FeatureStore`, so that a Redis
Cluster (or another store) can replace this one without touching the service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple, Protocol

import orjson
import redis
import redis.asyncio as aredis

DEFAULT_PREFIX = "sainet"


class Behaviour(NamedTuple):   # a tuple: tens of thousands are built per second on the hot path
    item_id: str
    scenario: str
    timestamp: float


@dataclass
class UserState:
    history: list[Behaviour] = field(default_factory=list)   # oldest first
    features: dict[str, str] = field(default_factory=dict)


class FeatureStore(Protocol):
    async def fetch(self, user_ids: list[str], history_length: int) -> list[UserState]:
        """States of many users in one round trip, histories oldest first, at most history_length."""

    async def append(self, events: list[tuple[str, Behaviour]]) -> None:
        """Appends (user_id, behaviour) pairs atomically with the trim."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


def history_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:h:{user_id}"


def features_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:u:{user_id}"


def encode_behaviour(behaviour: Behaviour) -> bytes:
    return orjson.dumps([behaviour.item_id, behaviour.scenario, behaviour.timestamp])


def _behaviour(entry) -> Behaviour:
    item_id, scenario, timestamp = entry
    if type(item_id) not in (str, int) or type(scenario) not in (str, int) or type(timestamp) not in (int, float):
        raise ValueError(f"not an [item_id, scenario, timestamp] entry: {str(entry)[:80]}")
    return Behaviour(str(item_id), str(scenario), float(timestamp))


def decode_history(raw_newest_first: list[bytes], on_undecodable: Callable[[], None] = lambda: None
                   ) -> list[Behaviour]:
    """Oldest first. One JSON parse for the whole list (the elements are JSON arrays); should that
    fail, entry by entry, skipping (and reporting through `on_undecodable`) each one that does not
    decode, so one poisoned entry costs that entry, not the user's history or anyone else's."""
    if not raw_newest_first:
        return []
    try:
        return list(map(_behaviour, orjson.loads(b"[" + b",".join(reversed(raw_newest_first)) + b"]")))
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return _decode_each(raw_newest_first, on_undecodable)


def _decode_each(raw_newest_first: list[bytes], on_undecodable: Callable[[], None]) -> list[Behaviour]:
    history = []
    for raw in reversed(raw_newest_first):
        try:
            history.append(_behaviour(orjson.loads(raw)))
        except (orjson.JSONDecodeError, TypeError, ValueError):
            on_undecodable()
    return history


def decode_features(raw: dict, on_undecodable: Callable[[], None] = lambda: None) -> dict[str, str]:
    features = {}
    for key, value in raw.items():
        try:
            features[key.decode()] = value.decode()
        except UnicodeDecodeError:
            on_undecodable()
    return features


def _queue_append(pipe, prefix: str, user_id: str, behaviours_oldest_first: list[Behaviour],
                  history_length: int, ttl_seconds: int | None) -> None:
    key = history_key(prefix, user_id)
    pipe.lpush(key, *[encode_behaviour(b) for b in behaviours_oldest_first])
    pipe.ltrim(key, 0, history_length - 1)
    if ttl_seconds:
        pipe.expire(key, ttl_seconds)


def _group_by_user(events: Iterable[tuple[str, Behaviour]]) -> dict[str, list[Behaviour]]:
    grouped: dict[str, list[Behaviour]] = {}
    for user_id, behaviour in events:
        grouped.setdefault(user_id, []).append(behaviour)
    return grouped


class RedisFeatureStore:
    """Async store over one Redis server (redis:// or rediss:// URLs, with password)."""

    def __init__(self, url: str, history_length: int = 50, ttl_seconds: int | None = None,
                 prefix: str = DEFAULT_PREFIX, timeout_seconds: float = 0.05,
                 on_undecodable: Callable[[], None] = lambda: None):
        self.url = url
        self.on_undecodable = on_undecodable
        self.history_length = history_length
        self.ttl_seconds = ttl_seconds
        self.prefix = prefix
        self.client = aredis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
            retry_on_timeout=False, health_check_interval=30)

    async def fetch(self, user_ids: list[str], history_length: int) -> list[UserState]:
        async with self.client.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.lrange(history_key(self.prefix, user_id), 0, history_length - 1)
                pipe.hgetall(features_key(self.prefix, user_id))
            # A reply that is an error (a key of the wrong type, say) is that user's problem, not the batch's.
            replies = await pipe.execute(raise_on_error=False)
        connection_errors = [r for r in replies if isinstance(r, (redis.ConnectionError, redis.TimeoutError))]
        if connection_errors:
            raise connection_errors[0]
        states = []
        for i in range(len(user_ids)):
            raw_history, raw_features = replies[2 * i], replies[2 * i + 1]
            if isinstance(raw_history, Exception):
                self.on_undecodable()
                raw_history = []
            if isinstance(raw_features, Exception):
                self.on_undecodable()
                raw_features = {}
            states.append(UserState(decode_history(raw_history, self.on_undecodable),
                                    decode_features(raw_features, self.on_undecodable)))
        return states

    async def append(self, events: list[tuple[str, Behaviour]]) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            for user_id, behaviours in _group_by_user(events).items():
                _queue_append(pipe, self.prefix, user_id, behaviours, self.history_length, self.ttl_seconds)
            await pipe.execute()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (redis.RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.client.aclose()


class RedisBulkWriter:
    """Synchronous pipelined writer for seeding many users (one round trip per `chunk` users)."""

    def __init__(self, url: str, history_length: int = 50, ttl_seconds: int | None = None,
                 prefix: str = DEFAULT_PREFIX, timeout_seconds: float = 10.0, chunk: int = 2000):
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_seconds,
                                           socket_connect_timeout=timeout_seconds)
        self.history_length, self.ttl_seconds, self.prefix, self.chunk = history_length, ttl_seconds, prefix, chunk

    def write(self, histories: dict[str, list[Behaviour]], user_features: dict[str, dict[str, str]]) -> int:
        """Replaces each user's history (oldest first) and features; returns the number of users."""
        users = sorted(set(histories) | set(user_features))
        for start in range(0, len(users), self.chunk):
            with self.client.pipeline(transaction=True) as pipe:
                for user_id in users[start:start + self.chunk]:
                    pipe.delete(history_key(self.prefix, user_id))
                    if histories.get(user_id):
                        _queue_append(pipe, self.prefix, user_id, histories[user_id][-self.history_length:],
                                      self.history_length, self.ttl_seconds)
                    if user_features.get(user_id):
                        pipe.delete(features_key(self.prefix, user_id))
                        pipe.hset(features_key(self.prefix, user_id), mapping=user_features[user_id])
                pipe.execute()
        return len(users)

    def close(self) -> None:
        self.client.close()
