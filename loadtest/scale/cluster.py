"""Part 2: the batch fetch of the feature store, Redis Cluster (three masters) against one Redis.

A real local cluster: three `redis-server --cluster-enabled yes` on loopback joined by
`redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes` (CLUSTER ADDSLOTS / MEET when
redis-cli is missing; `loadtest.redis_cluster`, as tests/service/test_cluster.py uses), and one plain
redis-server. The same
users (N behaviours each and a small feature hash) are written to both with the service's bulk
writers, then `RedisFeatureStore.fetch` and `RedisClusterFeatureStore.fetch` are timed on the same
random batches of B users, interleaved (per repetition the order of the sizes is shuffled and the
store that goes first alternates), so that noise hits both alike.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.procs import LOOPBACK, GroupProcess, free_port, pinned, wait_until
from loadtest.redis_cluster import LocalRedisCluster
from loadtest.scale.cpu import CpuMeter
from service.embedded_redis import redis_server_binary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterConfig:
    batch_sizes: tuple[int, ...] = (1, 8, 32, 64)
    history: int = 50
    users: int = 2000
    repetitions: int = 2000          # timed fetches per store and batch size
    warmup: int = 100
    timeout_seconds: float = 1.0     # per fetch (the service's default is 0.05 s; see the report)
    seed: int = 0

    @classmethod
    def quick(cls) -> "ClusterConfig":
        return cls(users=500, repetitions=300, warmup=30)


def make_users(config: ClusterConfig, items: list[str], scenarios: list[str]):
    from service.store import Behaviour

    rng = np.random.default_rng(config.seed)
    histories, features = {}, {}
    for u in range(config.users):
        picks = rng.integers(len(items), size=config.history)
        tags = rng.integers(len(scenarios), size=config.history)
        user = f"scale-{u}"
        histories[user] = [Behaviour(items[i], scenarios[t], float(k)) for k, (i, t) in enumerate(zip(picks, tags))]
        features[user] = {"segment": f"s{u % 7}", "tenure": str(u % 30)}
    return histories, features


def summarise(samples_us: list[float]) -> dict:
    a = np.asarray(samples_us)
    return {"n": int(a.size), "median_us": float(np.median(a)), "p99_us": float(np.percentile(a, 99)),
            "mean_us": float(a.mean()), "p90_us": float(np.percentile(a, 90)), "min_us": float(a.min())}


async def time_fetches(single_url: str, cluster_url: str, users: list[str], config: ClusterConfig,
                       node_of) -> dict:
    from service.store import RedisClusterFeatureStore, RedisFeatureStore

    single = RedisFeatureStore(single_url, history_length=config.history, timeout_seconds=config.timeout_seconds)
    cluster = RedisClusterFeatureStore(cluster_url, history_length=config.history,
                                       timeout_seconds=config.timeout_seconds)
    stores = {"single": single, "cluster": cluster}
    rng = random.Random(config.seed)
    samples = {(kind, b): [] for kind in stores for b in config.batch_sizes}
    degraded = {kind: 0 for kind in stores}
    nodes_touched = {b: [] for b in config.batch_sizes}
    try:
        # warm-up: connections to every node, the slot map; and both stores answer alike
        for b in config.batch_sizes:
            for _ in range(config.warmup):
                batch = rng.sample(users, b)
                a, c = await single.fetch(batch, config.history), await cluster.fetch(batch, config.history)
            if [(s.history, s.features) for s in a] != [(s.history, s.features) for s in c]:
                raise RuntimeError(f"the two stores answered differently for a batch of {b}")
            if any(len(s.history) != config.history for s in a):
                raise RuntimeError("a seeded user came back without a full history")
        for rep in range(config.repetitions):
            sizes = list(config.batch_sizes)
            rng.shuffle(sizes)
            for b in sizes:
                batch = rng.sample(users, b)
                nodes_touched[b].append(len({node_of(u) for u in batch}))
                order = ("single", "cluster") if rep % 2 == 0 else ("cluster", "single")
                for kind in order:
                    t0 = time.perf_counter_ns()
                    states = await stores[kind].fetch(batch, config.history)
                    samples[(kind, b)].append((time.perf_counter_ns() - t0) / 1e3)
                    degraded[kind] += sum(s.degraded for s in states)
    finally:
        await single.close()
        await cluster.close()
    points = []
    for b in config.batch_sizes:
        s, c = summarise(samples[("single", b)]), summarise(samples[("cluster", b)])
        points.append({"batch": b, "single": s, "cluster": c,
                       "ratio_median": c["median_us"] / s["median_us"], "ratio_p99": c["p99_us"] / s["p99_us"],
                       "mean_nodes_touched": statistics.fmean(nodes_touched[b])})
    return {"points": points, "degraded_users": degraded}


def run_part(work_dir: Path, log_dir: Path, items: list[str], scenarios: list[str], config: ClusterConfig,
             cpus: list[int] | None = None) -> dict:
    import redis

    from service.store import RedisBulkWriter, RedisClusterBulkWriter, history_key

    started = time.perf_counter()
    stack: list = []
    try:
        port = free_port()
        (work_dir / "single").mkdir(parents=True)
        command = [redis_server_binary(), "--port", str(port), "--bind", LOOPBACK, "--dir", str(work_dir / "single"),
                   "--save", "", "--appendonly", "no"]
        single = GroupProcess("redis-single", pinned(command, cpus), log_dir / "redis-single.log").start()
        stack.append(single.stop)
        client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=1)
        try:
            wait_until(client.ping, 20, "the single redis-server to answer", alive=single.check_alive)
        finally:
            client.close()
        cluster = LocalRedisCluster(work_dir / "cluster", log_dir, node_timeout_ms=5000, cpus=cpus)
        stack.append(cluster.stop)
        cluster.start()
        single_url = f"redis://{LOOPBACK}:{port}/0"
        log.info("cluster up (%s): %s; single Redis on :%d", cluster.created_with, cluster.ports, port)

        histories, features = make_users(config, items, scenarios)
        for writer in (RedisBulkWriter(single_url, history_length=config.history),
                       RedisClusterBulkWriter(cluster.url, history_length=config.history)):
            try:
                writer.write(histories, features)
            finally:
                writer.close()
        from redis.cluster import RedisCluster

        probe = RedisCluster.from_url(cluster.url)
        try:
            node_port = {u: probe.get_node_from_key(history_key("sainet", u)).port for u in histories}
        finally:
            probe.close()
        per_node = {p: sum(1 for v in node_port.values() if v == p) for p in cluster.ports}
        log.info("timing fetches: B in %s, %d repetitions", config.batch_sizes, config.repetitions)
        groups = {"client (this process)": os.getpgrp(), "single redis": single.pid,
                  **{f"master :{proc.name.split('-')[-1]}": proc.pid for proc in cluster.nodes.values()}}
        with CpuMeter(groups, children_label="children") as meter:
            result = asyncio.run(time_fetches(single_url, cluster.url, list(histories), config,
                                              node_port.__getitem__))
        result.update({"cpu": meter.result, "users_per_node": per_node, "created_with": cluster.created_with,
                       "wall_seconds": time.perf_counter() - started})
        return result
    finally:
        for stop in reversed(stack):
            try:
                stop()
            except Exception as error:
                log.warning("cleanup: %r", error)
