"""A real local Redis Cluster that rtlib starts and stops: N ``redis-server --cluster-enabled yes`` processes.

For the tests and the lab (issue 22): the keyspace that shards is checked against a real cluster, not a model
of one. Each node is an embedded :class:`~rtlib.server.redis_process.RedisProcess` (same binary lookup, no
persistence, its own directory for ``nodes.conf``). The cluster is created with the commands ``redis-cli
--cluster create`` sends (so no ``redis-cli`` is needed): each master gets a distinct config epoch and an even
share of the 16384 slots (``CLUSTER ADDSLOTSRANGE``, Redis >= 7.0), every node meets the first, each replica
follows its master (``CLUSTER REPLICATE``), and :meth:`RedisClusterProcess.start` returns once every node
reports ``cluster_state:ok``, knows every other node and sees every replica as one, and every replica's link to
its master is up.

Ports: a node also listens on its port + 10000 (the cluster bus), so nodes take ports below 55535 whose bus
port is free as well (:func:`cluster_port`), not the OS's ephemeral ports.
"""

from __future__ import annotations

import random
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import redis

from rtlib.server.redis_process import RedisProcess

__all__ = ["BUS_OFFSET", "SLOTS", "RedisClusterProcess", "cluster_port"]

SLOTS = 16384
#: A cluster node's bus port is its port + this.
BUS_OFFSET = 10000


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int] | frozenset[int] = frozenset(), low: int = 20000, high: int = 55535 - 1) -> int:
    """A port in ``[low, high]`` free a moment ago with its bus port (+10000) free too, not in ``taken`` (whose
    bus ports are not either)."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randint(low, high)
        near = {port, port + BUS_OFFSET, port - BUS_OFFSET}
        if near & (taken | {p + BUS_OFFSET for p in taken}):
            continue
        if _bindable(port) and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError(f"no free port pair (port, port + {BUS_OFFSET}) in [{low}, {high}]")


def _fields(reply: bytes | str | dict[str, object]) -> dict[str, str]:
    """An ``INFO``-style reply as text fields (redis-py parses some of them into a dict already)."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    text = reply.decode() if isinstance(reply, bytes) else reply
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    return _fields(client.execute_command("CLUSTER INFO"))


def _replicas_seen(client: redis.Redis) -> int:
    """How many nodes this node sees as replicas (``CLUSTER NODES``: gossip spreads a new role in a moment)."""
    nodes = client.execute_command("CLUSTER NODES")
    return sum("slave" in str(node["flags"]).split(",") for node in nodes.values())


def _link_up(client: redis.Redis) -> bool:
    """A replica's replication link to its master is up (its first sync done)."""
    return _fields(client.execute_command("INFO", "replication")).get("master_link_status") == "up"


class RedisClusterProcess:
    """``masters`` masters with ``replicas`` replicas each, on loopback, created and ready when :meth:`start`
    returns. Use it as a context manager, or call :meth:`start` and :meth:`stop`."""

    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout: float = 2.0,
                 binary: Path | None = None, full_coverage: bool = True) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one master and no negative replica count")
        self.masters, self.replicas = masters, replicas
        # cluster-node-timeout: how long a master may be unreachable before its replica is promoted (the
        # failover's detection time, compressed for tests; Redis's default is 15 s).
        self.node_timeout = node_timeout
        # cluster-require-full-coverage (Redis's default: yes): once a master is marked failed, every node refuses
        # every command (CLUSTERDOWN) until its slots are covered again, i.e. until its replica is promoted; with
        # no, the other masters go on serving their own slots meanwhile (docs/operations.md, failover section).
        self.full_coverage = full_coverage
        self.binary = binary
        self.nodes: list[RedisProcess] = []

    @property
    def ports(self) -> list[int]:
        """Masters first, then replicas (replica ``j`` follows master ``j % masters``)."""
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """A URL of one node: a cluster client (``redis.asyncio.cluster.RedisCluster.from_url``) finds the rest."""
        return self.nodes[0].url

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", port) for port in self.ports]

    def slot_ranges(self) -> list[tuple[int, int]]:
        """Each master's slots (inclusive bounds): an even split, as ``redis-cli --cluster create`` makes."""
        return [(i * SLOTS // self.masters, (i + 1) * SLOTS // self.masters - 1) for i in range(self.masters)]

    def start(self, timeout: float = 30.0) -> RedisClusterProcess:
        """Start every node and create the cluster; raise RuntimeError (after stopping them) if it is not ready
        within ``timeout`` seconds."""
        taken: set[int] = set()
        try:
            for _ in range(self.masters * (1 + self.replicas)):
                port = cluster_port(taken)
                taken.add(port)
                args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(max(1, round(self.node_timeout * 1000))),
                        "--cluster-require-full-coverage", "yes" if self.full_coverage else "no",
                        # a replica's first sync at once (Redis waits 5 s by default for more replicas to share it)
                        "--repl-diskless-sync-delay", "0"]
                self.nodes.append(RedisProcess(port, self.binary, extra_args=args).start())
            self._create(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self, deadline: float) -> None:
        clients = [redis.Redis(host="127.0.0.1", port=port) for port in self.ports]
        try:
            ids = [c.execute_command("CLUSTER MYID") for c in clients]
            ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
            for epoch, (client, (lo, hi)) in enumerate(zip(clients, self.slot_ranges(), strict=False), 1):
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)
                client.execute_command("CLUSTER ADDSLOTSRANGE", lo, hi)
            for port in self.ports[1:]:
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
            self._wait(deadline, "every node to know every other", lambda: all(
                int(_cluster_info(c)["cluster_known_nodes"]) == len(clients) for c in clients))
            for j, client in enumerate(clients[self.masters:]):
                client.execute_command("CLUSTER REPLICATE", ids[j % self.masters])
            replicas = self.masters * self.replicas

            def ready() -> bool:
                return all(_cluster_info(c)["cluster_state"] == "ok" and int(_cluster_info(c)["cluster_slots_ok"])
                           == SLOTS and _replicas_seen(c) == replicas for c in clients) and all(
                    _link_up(c) for c in clients[self.masters:])

            self._wait(deadline, "cluster_state:ok and every replica seen on every node, their links up", ready)
        finally:
            for client in clients:
                client.close()

    @staticmethod
    def _wait(deadline: float, what: str, ready: Callable[[], bool]) -> None:
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except (redis.RedisError, KeyError, ValueError):
                pass  # a node still starting its cluster state
            time.sleep(0.05)
        raise RuntimeError(f"the local Redis Cluster did not get ready: waited for {what}")

    def stop(self) -> None:
        """Terminate every node and remove their directories."""
        for node in self.nodes:  # signal all first: each takes a moment to shut down, in parallel so
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()
        self.nodes = []

    def __enter__(self) -> RedisClusterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
