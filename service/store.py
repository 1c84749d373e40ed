"""The feature store: per-user scenario-tagged behaviour histories and user-side features in Redis.

Key layout (prefix configurable, default "sainet"; the braces around the user id are literal):

    <prefix>:h:{<user_id>}  list, newest behaviour first; each element is the JSON array
                            [item_id, scenario, timestamp] with raw ids (never model indices), so a
                            history survives a model update with new vocabularies
    <prefix>:u:{<user_id>}  hash, user-side feature name -> raw value
    <prefix>:e:{<user_id>}  sorted set, the event_ids of the user's recent /events (score: arrival
                            time), forgotten after the dedupe window

`{<user_id>}` is a Redis Cluster hash tag (`user_tag`): a user's two keys hash to one slot, so they
live on one shard, a user's state is read from one node and an append is a transaction on one slot.
The same layout is used against a single server (one layout for both); an id that is empty or
starts with `}` or `~` is tagged `{~<user_id>}` (a tag is never empty). A prefix must not contain
braces (it would move the hash tag).

An append runs one Lua script per user (`APPEND_SCRIPT`, atomic): it skips every event whose
event_id the user's id set already holds, pushes the others, trims the list to `history_length`
(optionally refreshing a TTL) and records the ids, so a reader never sees an untrimmed list and a
retried write is stored once. Behaviours are kept in arrival order. Everything the service needs goes through `FeatureStore`:
`RedisFeatureStore` (one server) and `RedisClusterFeatureStore` (Redis Cluster: one pipeline per
node, concurrently, each with its own timeout; the users of a node that fails are returned with
`degraded=True` and an empty state, everyone else normally).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import orjson
import redis
import redis.asyncio as aredis

DEFAULT_PREFIX = "sainet"

log = logging.getLogger(__name__)


class Behaviour(NamedTuple):   # a tuple: tens of thousands are built per second on the hot path
    item_id: str
    scenario: str
    timestamp: float


class History(Sequence):
    """A user's behaviours, oldest first, held as the columns the model reads: the read path goes
    from the Redis reply to these lists to the index arrays without a Python object per behaviour.
    A sequence of `Behaviour` for everyone else (and equal to a list of the same behaviours)."""

    __slots__ = ("items", "scenarios", "timestamps")

    def __init__(self, items: Sequence = (), scenarios: Sequence = (), timestamps: Sequence = ()):
        self.items, self.scenarios, self.timestamps = items, scenarios, timestamps

    @classmethod
    def of(cls, behaviours: Iterable[Behaviour] | History) -> History:
        if isinstance(behaviours, History):
            return behaviours
        behaviours = list(behaviours)
        return cls([b.item_id for b in behaviours], [b.scenario for b in behaviours],
                   [b.timestamp for b in behaviours])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return History(self.items[index], self.scenarios[index], self.timestamps[index])
        return Behaviour(self.items[index], self.scenarios[index], self.timestamps[index])

    def __eq__(self, other) -> bool:
        if isinstance(other, (History, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"History({list(self)!r})"


@dataclass
class UserState:
    history: History = field(default_factory=History)   # oldest first
    features: dict[str, str] = field(default_factory=dict)
    degraded: bool = False    # the store could not be read for this user (its node down or slow)


class FeatureStore(Protocol):
    async def fetch(self, user_ids: list[str], history_length: int) -> list[UserState]:
        """States of many users (one round trip per server), histories oldest first, at most
        history_length, in the order of `user_ids`. A user whose state could not be read (its
        cluster node down or slow) comes back empty with `degraded=True`; the call raises only
        when the store cannot be read at all."""

    async def append(self, events: list[NewEvent]) -> int:
        """Appends events (or (user_id, behaviour) pairs) atomically with the trim, each user's in
        arrival order; an event whose event_id the user's recent ids hold is skipped. Returns the
        number stored."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


def check_prefix(prefix: str) -> str:
    if "{" in prefix or "}" in prefix:
        raise ValueError(f"the Redis key prefix {prefix!r} must not contain '{{' or '}}': the keys carry "
                         "the user id as their Redis Cluster hash tag")
    return prefix


def user_tag(user_id: str) -> str:
    """The hash tag of a user's keys: `{<user_id>}`. Redis hashes the text between the first `{` and
    the next `}`; both keys of a user are identical from that brace on, so they share a slot. An
    empty tag would make Redis hash the whole key, so an id that is empty or starts with `}` gets a
    `~` in front (and so does one starting with `~`, which keeps the mapping one to one)."""
    if not user_id or user_id[0] in "}~":
        user_id = "~" + user_id
    return "{" + user_id + "}"


def history_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:h:{user_tag(user_id)}"


def features_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:u:{user_tag(user_id)}"


def event_ids_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:e:{user_tag(user_id)}"


class NewEvent(NamedTuple):
    """One behaviour to append, with the client's optional id of it (for idempotent retries)."""
    user_id: str
    behaviour: Behaviour
    event_id: str | None = None


# KEYS: history, event ids. ARGV: history_length, ttl (0: none), dedupe seconds, now, then
# (event_id or "", encoded behaviour) pairs, oldest first. Returns the number of events stored.
APPEND_SCRIPT = """
local now, window = tonumber(ARGV[4]), tonumber(ARGV[3])
local stored, with_ids = 0, false
for i = 5, #ARGV, 2 do
  if ARGV[i] ~= '' then with_ids = true end
end
if with_ids then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
end
for i = 5, #ARGV, 2 do
  if ARGV[i] == '' or redis.call('ZADD', KEYS[2], 'NX', now, ARGV[i]) == 1 then
    redis.call('LPUSH', KEYS[1], ARGV[i + 1])
    stored = stored + 1
  end
end
if stored > 0 then
  redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
  if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
end
if with_ids then redis.call('EXPIRE', KEYS[2], math.ceil(window)) end
return stored
"""
APPEND_SCRIPT_SHA = hashlib.sha1(APPEND_SCRIPT.encode()).hexdigest()


def _append_command(prefix: str, user_id: str, events: list[NewEvent], history_length: int,
                    ttl_seconds: int | None, dedupe_seconds: float, now: float) -> tuple:
    """The EVALSHA of `APPEND_SCRIPT` for one user's events (oldest first)."""
    pairs = [value for event in events for value in (event.event_id or "", encode_behaviour(event.behaviour))]
    return ("EVALSHA", APPEND_SCRIPT_SHA, 2, history_key(prefix, user_id), event_ids_key(prefix, user_id),
            history_length, ttl_seconds or 0, dedupe_seconds, now, *pairs)


def _group_events(events: Iterable[tuple]) -> dict[str, list[NewEvent]]:
    """user id -> that user's events in arrival order; (user_id, behaviour) pairs are events without id."""
    grouped: dict[str, list[NewEvent]] = {}
    for event in events:
        event = NewEvent(*event)
        grouped.setdefault(event.user_id, []).append(event)
    return grouped


def encode_behaviour(behaviour: Behaviour) -> bytes:
    return orjson.dumps([behaviour.item_id, behaviour.scenario, behaviour.timestamp])


_ID_TYPES, _TIME_TYPES = {str}, {int, float}


def _columns(entries: list) -> History:
    """The columns of parsed [item_id, scenario, timestamp] entries, checked column by column (C-level
    loops); raises ValueError or TypeError when any entry is not of that shape."""
    if not entries:
        return History()
    if set(map(len, entries)) != {3} or not all(type(e) is list for e in entries):
        raise ValueError("not [item_id, scenario, timestamp] entries")
    items, scenarios, timestamps = zip(*entries)
    if not set(map(type, timestamps)) <= _TIME_TYPES:
        raise ValueError("a timestamp is not a number")
    columns = []
    for column in (items, scenarios):
        types = set(map(type, column))
        if not types <= _ID_TYPES:
            if not types <= {str, int}:
                raise ValueError("an id is neither a string nor an integer")
            column = tuple(map(str, column))     # integer ids written by another producer
        columns.append(column)
    return History(columns[0], columns[1], timestamps)


def decode_history(raw_newest_first: list[bytes], on_undecodable: Callable[[], None] = lambda: None) -> History:
    """Oldest first. One JSON parse for the whole list (the elements are JSON arrays); should that
    fail, entry by entry, skipping (and reporting through `on_undecodable`) each one that does not
    decode, so one poisoned entry costs that entry, not the user's history or anyone else's."""
    if not raw_newest_first:
        return History()
    try:
        return _columns(orjson.loads(b"[" + b",".join(reversed(raw_newest_first)) + b"]"))
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return _decode_each(raw_newest_first, on_undecodable)


def _decode_each(raw_newest_first: list[bytes], on_undecodable: Callable[[], None]) -> History:
    entries = []
    for raw in reversed(raw_newest_first):
        try:
            entry = orjson.loads(raw)
            _columns([entry])
            entries.append(entry)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            on_undecodable()
    return _columns(entries)


def decode_features(raw: dict, on_undecodable: Callable[[], None] = lambda: None) -> dict[str, str]:
    features = {}
    for key, value in raw.items():
        try:
            features[key.decode()] = value.decode()
        except UnicodeDecodeError:
            on_undecodable()
    return features


def decode_user_state(raw_history, raw_features, on_undecodable: Callable[[], None]) -> UserState:
    """One user's state from the two replies of its reads. A reply that is an error (a key of the
    wrong type, say) counts as undecodable and reads as empty: it is that user's problem, not the batch's."""
    if isinstance(raw_history, Exception):
        on_undecodable()
        raw_history = []
    if isinstance(raw_features, Exception):
        on_undecodable()
        raw_features = {}
    return UserState(decode_history(raw_history, on_undecodable), decode_features(raw_features, on_undecodable))


def _queue_append(pipe, prefix: str, user_id: str, behaviours_oldest_first: list[Behaviour],
                  history_length: int, ttl_seconds: int | None) -> None:
    key = history_key(prefix, user_id)
    pipe.lpush(key, *[encode_behaviour(b) for b in behaviours_oldest_first])
    pipe.ltrim(key, 0, history_length - 1)
    if ttl_seconds:
        pipe.expire(key, ttl_seconds)


class _StoreSettings:
    """What both async stores keep: where, how much history, which TTL and prefix, and whom to tell
    about an entry that does not decode."""

    def __init__(self, url: str, history_length: int, ttl_seconds: int | None, prefix: str,
                 on_undecodable: Callable[[], None], dedupe_seconds: float = 86_400):
        self.url = url
        self.dedupe_seconds = dedupe_seconds
        self.on_undecodable = on_undecodable
        self.history_length = history_length
        self.ttl_seconds = ttl_seconds
        self.prefix = check_prefix(prefix)


class RedisFeatureStore(_StoreSettings):
    """Async store over one Redis server (redis:// or rediss:// URLs, with password).

    Reads (/score's batch fetches, readiness pings) and writes (/events) use separate blocking
    connection pools, so a burst of writers can hold every write connection without a read ever
    waiting for one; a full pool waits up to `pool_timeout_seconds`, then fails that call only."""

    def __init__(self, url: str, history_length: int = 50, ttl_seconds: int | None = None,
                 prefix: str = DEFAULT_PREFIX, timeout_seconds: float = 0.05,
                 on_undecodable: Callable[[], None] = lambda: None, read_connections: int = 64,
                 write_connections: int = 32, pool_timeout_seconds: float | None = None,
                 dedupe_seconds: float = 86_400):
        super().__init__(url, history_length, ttl_seconds, prefix, on_undecodable, dedupe_seconds)
        wait = timeout_seconds if pool_timeout_seconds is None else pool_timeout_seconds

        def client(connections: int, socket_timeout: float) -> aredis.Redis:
            pool = aredis.BlockingConnectionPool.from_url(
                url, max_connections=connections, timeout=wait, socket_timeout=socket_timeout,
                socket_connect_timeout=timeout_seconds, retry_on_timeout=False, health_check_interval=30)
            return aredis.Redis(connection_pool=pool)

        self.timeout = timeout_seconds
        # The read sockets outlive a fetch's own budget (which the batcher enforces): a reply that
        # comes late still completes, in the background, and its connection goes back to the pool
        # warm. A socket timed out mid-reply is dropped, and on a slow link a new one pays its
        # handshake's round trips, so every fetch after a late one would be late too.
        self.late_reply_seconds = max(1.0, 10 * timeout_seconds)
        self.client = client(read_connections, self.late_reply_seconds)
        self.write_client = client(write_connections, timeout_seconds)

    async def fetch(self, user_ids: list[str], history_length: int) -> list[UserState]:
        async with self.client.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.lrange(history_key(self.prefix, user_id), 0, history_length - 1)
                pipe.hgetall(features_key(self.prefix, user_id))
            replies = await pipe.execute(raise_on_error=False)
        connection_errors = [r for r in replies if isinstance(r, (redis.ConnectionError, redis.TimeoutError))]
        if connection_errors:
            raise connection_errors[0]
        return [decode_user_state(replies[2 * i], replies[2 * i + 1], self.on_undecodable)
                for i in range(len(user_ids))]

    async def append(self, events: list[NewEvent]) -> int:
        """One MULTI/EXEC of one script call per user: the whole request is stored or none of it."""
        commands = [_append_command(self.prefix, user_id, user_events, self.history_length, self.ttl_seconds,
                                    self.dedupe_seconds, time.time())
                    for user_id, user_events in _group_events(events).items()]
        for attempt in (1, 2):
            try:
                async with self.write_client.pipeline(transaction=True) as pipe:
                    for command in commands:
                        pipe.execute_command(*command)
                    return sum(await pipe.execute())
            except redis.exceptions.NoScriptError:
                # a restarted or flushed Redis: every call of the transaction failed alike, none ran
                if attempt == 2:
                    raise
                await self.write_client.script_load(APPEND_SCRIPT)
        raise AssertionError("unreachable")

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.client.ping(), self.timeout))
        except (redis.RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        await self.client.aclose()
        await self.write_client.aclose()
        await self.client.connection_pool.disconnect()
        await self.write_client.connection_pool.disconnect()


class RedisBulkWriter:
    """Synchronous pipelined writer for seeding many users (one round trip per `chunk` users)."""

    def __init__(self, url: str, history_length: int = 50, ttl_seconds: int | None = None,
                 prefix: str = DEFAULT_PREFIX, timeout_seconds: float = 10.0, chunk: int = 2000):
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_seconds,
                                           socket_connect_timeout=timeout_seconds)
        self.history_length, self.ttl_seconds, self.chunk = history_length, ttl_seconds, chunk
        self.prefix = check_prefix(prefix)

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


# Replies meaning "this node could not answer for this key" (down, slow, slot moved or not served):
# the users concerned are degraded, never the batch.
_NODE_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.MovedError, redis.exceptions.AskError,
                redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError, OSError)


def _user_write_commands(prefix: str, user_id: str, behaviours_oldest_first: list[Behaviour],
                         history_length: int, ttl_seconds: int | None, replace: bool = False,
                         features: dict[str, str] | None = None) -> list[tuple]:
    """One user's MULTI ... EXEC (all its keys in one slot: the hash tag), as raw commands."""
    key = history_key(prefix, user_id)
    commands: list[tuple] = [("MULTI",)]
    if replace:
        commands.append(("DEL", key))
    if behaviours_oldest_first:
        commands.append(("LPUSH", key, *[encode_behaviour(b) for b in behaviours_oldest_first]))
        commands.append(("LTRIM", key, 0, history_length - 1))
        if ttl_seconds:
            commands.append(("EXPIRE", key, ttl_seconds))
    if features:
        commands.append(("DEL", features_key(prefix, user_id)))
        commands.append(("HSET", features_key(prefix, user_id), *[v for kv in features.items() for v in kv]))
    commands.append(("EXEC",))
    return commands


def _check_transactions(commands: list[tuple], results: list) -> None:
    """Raises the first error of a run of MULTI/EXEC blocks (a reply, or an error inside an EXEC)."""
    for command, result in zip(commands, results):
        if isinstance(result, Exception):
            raise result
        if command[0] == "EXEC":
            if result is None:
                raise redis.ResponseError("a transaction was aborted")
            for inner in result:
                if isinstance(inner, Exception):
                    raise inner


class RedisClusterFeatureStore(_StoreSettings):
    """Async store over a Redis Cluster (`redis.asyncio.cluster.RedisCluster`; the URL names any node).

    `fetch` groups the keys by the node that serves their slot and sends one pipeline per node,
    concurrently, each under its own timeout; the users of a node that fails (down, slow, a moved
    slot) come back empty with `degraded=True`, everyone else is read normally. `append` sends one
    MULTI/EXEC per user (its keys share a slot), one round trip per node, concurrently."""

    def __init__(self, url: str, history_length: int = 50, ttl_seconds: int | None = None,
                 prefix: str = DEFAULT_PREFIX, timeout_seconds: float = 0.05,
                 on_undecodable: Callable[[], None] = lambda: None, read_connections: int = 64,
                 write_connections: int = 32, pool_timeout_seconds: float | None = None,
                 dedupe_seconds: float = 86_400):
        from redis.asyncio.cluster import RedisCluster

        super().__init__(url, history_length, ttl_seconds, prefix, on_undecodable, dedupe_seconds)
        self.timeout = timeout_seconds
        # Under the batcher's own bound on the whole fetch (the same timeout), so that a slow node
        # costs its users, not the batch.
        self.node_timeout = 0.8 * timeout_seconds
        # require_full_coverage=False: with one master down the client still serves the other slots.
        self.client = RedisCluster.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
            require_full_coverage=False, health_check_interval=30,
            max_connections=read_connections + write_connections)   # per node
        self._refresh: asyncio.Task | None = None
        self._refreshed = float("-inf")

    async def _nodes_of(self, keys: list[str]):
        """node name -> (node, [indices into keys]); keys of a slot no node serves are under None."""
        await self.client.initialize()
        groups: dict = {}
        manager = self.client.nodes_manager
        for i, key in enumerate(keys):
            try:
                node = manager.get_node_from_slot(self.client.keyslot(key))
            except redis.exceptions.SlotNotCoveredError:
                node = None
            groups.setdefault(node.name if node else None, (node, []))[1].append(i)
        return groups

    def _refresh_topology(self) -> None:
        """Re-reads the slot map in the background (after a moved slot or an unreachable node), one at
        a time and at most once a second."""
        now = time.monotonic()
        if (self._refresh is None or self._refresh.done()) and now - self._refreshed >= 1.0:
            self._refreshed = now
            async def refresh():
                try:
                    await self.client.nodes_manager.initialize()
                except Exception as error:  # the map stays as it was; tried again on the next failure
                    log.debug("cluster topology refresh failed: %r", error)
            self._refresh = asyncio.get_running_loop().create_task(refresh())

    async def _node_pipeline(self, node, commands: list[tuple]) -> list:
        """The replies (errors included, as exceptions) of one node's pipeline; raises if the node
        cannot be reached or does not answer within the timeout."""
        from redis.asyncio.cluster import PipelineCommand

        if node is None:
            raise redis.exceptions.SlotNotCoveredError("no cluster node serves these keys' slots")
        queued = [PipelineCommand(i, *command) for i, command in enumerate(commands)]
        await asyncio.wait_for(node.execute_pipeline(queued), self.node_timeout)
        return [c.result for c in queued]

    async def fetch(self, user_ids: list[str], history_length: int) -> list[UserState]:
        keys = []
        for user_id in user_ids:
            keys.append(history_key(self.prefix, user_id))
            keys.append(features_key(self.prefix, user_id))
        groups = await self._nodes_of(keys)
        replies: list = [None] * len(keys)

        async def read(node, indices):
            commands = [("LRANGE", keys[i], 0, history_length - 1) if i % 2 == 0 else ("HGETALL", keys[i])
                        for i in indices]
            try:
                results = await self._node_pipeline(node, commands)
            except (TimeoutError, Exception) as error:   # the node is down or slow
                log.warning("cluster node %s unavailable, degrading %d keys: %r",
                            node.name if node else "(none)", len(indices), error)
                results = [redis.ConnectionError(str(error) or type(error).__name__)] * len(indices)
            for i, result in zip(indices, results):
                replies[i] = result

        await asyncio.gather(*(read(node, indices) for node, indices in groups.values()))
        states = []
        refresh = False
        for i in range(len(user_ids)):
            raw_history, raw_features = replies[2 * i], replies[2 * i + 1]
            if isinstance(raw_history, _NODE_ERRORS) or isinstance(raw_features, _NODE_ERRORS):
                refresh = True
                states.append(UserState(degraded=True))
                continue
            states.append(decode_user_state(raw_history, raw_features, self.on_undecodable))
        if refresh:
            self._refresh_topology()
        return states

    async def append(self, events: list[NewEvent]) -> int:
        grouped = _group_events(events)
        users = list(grouped)
        groups = await self._nodes_of([history_key(self.prefix, u) for u in users])
        now = time.time()

        async def write(node, indices) -> int:
            commands = [_append_command(self.prefix, users[i], grouped[users[i]], self.history_length,
                                        self.ttl_seconds, self.dedupe_seconds, now) for i in indices]
            for attempt in (1, 2):
                try:
                    results = await self._node_pipeline(node, commands)
                except Exception:
                    self._refresh_topology()
                    raise
                if attempt == 1 and any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
                    # a restarted node: every call failed alike (one script), none ran
                    await asyncio.wait_for(node.execute_command("SCRIPT", "LOAD", APPEND_SCRIPT), self.node_timeout)
                    continue
                for result in results:
                    if isinstance(result, Exception):
                        raise result
                return sum(results)
            raise AssertionError("unreachable")

        outcomes = await asyncio.gather(*(write(node, indices) for node, indices in groups.values()),
                                        return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return sum(outcomes)

    async def ping(self) -> bool:
        """True when at least one master answers: with a master down the others' users are still
        served (theirs degraded), so the service stays ready."""
        try:
            await self.client.initialize()
        except (redis.RedisError, OSError):
            return False

        async def one(node) -> bool:
            try:
                return bool(await asyncio.wait_for(node.execute_command("PING"), max(self.timeout, 0.5)))
            except (TimeoutError, Exception):
                return False

        answers = await asyncio.gather(*(one(node) for node in self.client.get_primaries()))
        return any(answers)

    async def close(self) -> None:
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
        await self.client.aclose()


class RedisClusterBulkWriter(RedisBulkWriter):
    """`RedisBulkWriter` against a Redis Cluster (`redis.cluster.RedisCluster`): per chunk, one
    pipeline per node holding one MULTI/EXEC per user (a user's keys share a slot)."""

    def __init__(self, url: str, history_length: int = 50, ttl_seconds: int | None = None,
                 prefix: str = DEFAULT_PREFIX, timeout_seconds: float = 10.0, chunk: int = 2000):
        from redis.cluster import RedisCluster

        self.prefix = check_prefix(prefix)
        self.history_length, self.ttl_seconds, self.chunk = history_length, ttl_seconds, chunk
        self.client = RedisCluster.from_url(url, socket_timeout=timeout_seconds,   # reads the slot map now
                                            socket_connect_timeout=timeout_seconds)

    def write(self, histories: dict[str, list[Behaviour]], user_features: dict[str, dict[str, str]]) -> int:
        users = sorted(set(histories) | set(user_features))
        for start in range(0, len(users), self.chunk):
            by_node: dict = {}
            for user_id in users[start:start + self.chunk]:
                node = self.client.get_node_from_key(history_key(self.prefix, user_id))
                by_node.setdefault(node.name, (node, []))[1].append(user_id)
            for node, node_users in by_node.values():
                commands = [c for user_id in node_users for c in _user_write_commands(
                    self.prefix, user_id, (histories.get(user_id) or [])[-self.history_length:],
                    self.history_length, self.ttl_seconds, replace=True, features=user_features.get(user_id))]
                with self.client.get_redis_connection(node).pipeline(transaction=False) as pipe:
                    for command in commands:
                        pipe.execute_command(*command)
                    results = pipe.execute(raise_on_error=False)
                _check_transactions(commands, results)
        return len(users)
