"""The lab's failure actions (``Cluster.run(failures=[...])``) and what a Redis Cluster failover did to a run.

A failure is a tuple ``(action, number, design time[, seconds])``:

* ``("kill", i, at)`` SIGKILL instance ``i`` (a crash); ``("stop", i, at)`` SIGTERM it (graceful);
  ``("start", i, at)`` bring a killed or stopped instance back on its port;
* ``("redis", 0, at)`` SIGKILL the embedded Redis and start it again on the same port;
* ``("pause", seconds, at)`` freeze the embedded Redis (SIGSTOP, then SIGCONT: a failover, a fork, a blip);
  ``("stall", i, at, seconds)`` freeze instance ``i`` (a long GC pause, a stopped VM);
* ``("master", shard, at)`` SIGKILL the Redis Cluster master that currently owns shard ``shard``'s slots
  (``Cluster(redis_shards=N, replicas>=1)`` only): its replica is promoted after ``cluster-node-timeout``
  (:class:`~rtlib.server.redis_cluster.RedisClusterProcess`'s ``node_timeout``, compressed for the lab), and the
  killed node is started again once it has been, so it rejoins as the new master's replica (the cluster is whole
  again for the next run). :func:`master_failover` does it and records a :class:`Failover` in
  ``Results.meta["failovers"]``; :func:`failover_table` then compares the killed shard's workspaces with the
  others': sockets lost, updates sent, acked, answered ``unavailable``, and lost (acked but not received by a
  client that stayed, and acked but missing from the workspace's history after the failover).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import redis

from rtlib.lab.redis_access import redis_client
from rtlib.lab.results import Results
from rtlib.lab.scenario import Scenario
from rtlib.server import keyspace
from rtlib.server.cluster_client import slot_of
from rtlib.server.redis_cluster import RedisClusterProcess

__all__ = ["ACTIONS", "Failover", "Failure", "Injector", "acked_missing", "check_failures", "failover_table",
           "master_failover", "shard_workspaces"]

#: See the module's docstring.
Failure = tuple[str, int, float] | tuple[str, float, float] | tuple[str, int, float, float]
ACTIONS = ("kill", "stop", "start", "redis", "pause", "stall", "master")
#: Seconds a killed master's replica has to be promoted before the lab gives up waiting (and restarts the node).
PROMOTION_TIMEOUT = 30.0


def check_failures(failures: Sequence[Failure], redis_shards: int | None, replicas: int) -> None:
    """Raise ValueError for an unknown or malformed action, or a ``master`` action the lab cannot carry out."""
    if bad := [f[0] for f in failures if f[0] not in ACTIONS or len(f) != 3 + (f[0] == "stall")]:
        raise ValueError(f"unknown or malformed failure(s) {bad}; use {ACTIONS} (see rtlib.lab.failures)")
    for f in failures:
        if f[0] != "master":
            continue
        if redis_shards is None:
            raise ValueError(f"failure {f}: 'master' kills a Redis Cluster master; it needs the lab on a local "
                             "Redis Cluster (Cluster(redis_shards=N, replicas=1))")
        if replicas < 1:
            raise ValueError(f"failure {f}: 'master' needs replicas >= 1 (with none, nothing is promoted and the "
                             "shard's slots stay down)")
        if not (isinstance(f[1], int) and 0 <= f[1] < redis_shards):
            raise ValueError(f"failure {f}: shard {f[1]!r} is not one of the {redis_shards} shards (0-based)")


def shard_workspaces(ranges: Sequence[tuple[int, int]], workspaces: int) -> dict[str, int]:
    """The shard (index into ``ranges``, each master's slots) of each of a scenario's workspaces ``w0``..."""
    out: dict[str, int] = {}
    for w in range(workspaces):
        slot = slot_of(keyspace.history_key(f"w{w}"))
        out[f"w{w}"] = next(i for i, (lo, hi) in enumerate(ranges) if lo <= slot <= hi)
    return out


@dataclass
class Failover:
    """One ``master`` action: which node was killed, which replaced it, and how long that took (wall s)."""

    shard: int
    at: float  # design seconds, as scheduled
    killed: int  # the killed master's port
    promoted: int | None = None  # the port of the node that owns the shard's slots after the kill (None: none did)
    promoted_after_s: float | None = None  # wall seconds from the SIGKILL to the new owner in CLUSTER SLOTS
    workspaces: list[str] = field(default_factory=list)  # the scenario's workspaces on the killed master
    acked_missing: dict[str, int] = field(default_factory=dict)  # per workspace, filled after the run

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _owner(nodes: Sequence[int], slot: int) -> int | None:
    """The port of the master serving ``slot``, asked of the first of ``nodes`` (ports) that answers."""
    for port in nodes:
        try:
            with redis.Redis(port=port, socket_timeout=1.0, socket_connect_timeout=1.0) as client:
                for lo, hi, master, *_ in client.execute_command("CLUSTER SLOTS"):
                    if int(lo) <= slot <= int(hi):
                        return int(master[1])
                return None  # this node knows no owner for the slot (the cluster is failing over)
        except redis.RedisError:
            continue
    return None


def master_failover(cluster: RedisClusterProcess, shard: int, at: float, workspaces: int) -> Failover:
    """SIGKILL the master owning ``shard``'s slots, wait until another node owns them (the replica's promotion),
    then start the killed node again (it rejoins as a replica). Blocking: run it in a thread."""
    slot = cluster.slot_ranges()[shard][0]
    ports = cluster.ports
    owner = _owner(ports, slot)
    node = next((n for n in cluster.nodes if n.port == owner and n.pid is not None), None)
    if node is None:
        raise RuntimeError(f"no live master owns shard {shard}'s slots (owner: {owner})")
    mine = [ws for ws, s in shard_workspaces(cluster.slot_ranges(), workspaces).items() if s == shard]
    record = Failover(shard, at, node.port, workspaces=mine)
    killed = time.monotonic()
    node.crash()  # SIGKILL, reaped; its directory (nodes.conf) stays for the restart
    others = [p for p in ports if p != node.port]
    while time.monotonic() - killed < PROMOTION_TIMEOUT:
        new = _owner(others, slot)
        if new is not None and new != node.port:
            record.promoted, record.promoted_after_s = new, round(time.monotonic() - killed, 3)
            break
        time.sleep(0.05)
    node.start()  # a master that finds its slots taken over (a higher config epoch) turns into a replica
    return record


class Injector:
    """Carries out a run's failures on a lab ``Cluster`` (passed untyped: this module is imported by it), each at
    its design time from the run's start; :meth:`settle` ends them with the run."""

    def __init__(self, lab: Any, redis_cluster: RedisClusterProcess | None) -> None:
        self.lab, self.redis_cluster = lab, redis_cluster
        self.jobs: list[asyncio.Future[None]] = []
        self._threads: list[asyncio.Future[Failover]] = []  # master kills under way (a thread each)

    def start(self, failures: Sequence[Failure], t0: float, sc: Scenario) -> None:
        """Schedule ``failures``; ``t0``: design second 0 (monotonic)."""
        self.jobs += [asyncio.ensure_future(self._one(f, t0 + sc.wall(f[2]), sc)) for f in failures]

    async def _one(self, f: Failure, at: float, sc: Scenario) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        action, index, lab = f[0], int(f[1]), self.lab
        if action == "master":
            assert self.redis_cluster is not None
            # A thread of its own, not cancelled with the run: the node it killed is started again in it, and
            # its record is kept (settle() waits for it).
            thread = asyncio.ensure_future(asyncio.to_thread(master_failover, self.redis_cluster, index, f[2],
                                                             sc.workspaces))
            thread.add_done_callback(lambda t: lab.failovers.append(t.result())
                                     if not t.cancelled() and t.exception() is None else None)
            self._threads.append(thread)
        elif action in ("pause", "stall"):
            seconds = sc.wall(f[1] if action == "pause" else f[3])  # type: ignore[misc]
            await lab.freeze(lab.pids["redis" if action == "pause" else f"i{index}"], seconds)
        elif action == "redis":
            await asyncio.to_thread(lab.restart_redis)
        else:
            act = {"kill": lab.kill_instance, "stop": lab.stop_instance, "start": lab.start_instance}[action]
            await asyncio.to_thread(act, index)

    async def settle(self) -> None:
        """Cancel what has not happened yet; wait for master kills under way (their promotion and restart)."""
        for job in self.jobs:
            job.cancel()
        await asyncio.gather(*self._threads)


def acked_missing(redis_url: str, acks: pd.DataFrame, workspaces: Sequence[str]) -> dict[str, int]:
    """Per workspace: acked updates (``ref``, task, version) whose event is not in the workspace's history read
    from the masters after the run. A version number lost in a failover is handed out again, so the version alone
    cannot tell; the lab's updates carry their ref in their changes (``_ref``). Versions older than a task's oldest
    event kept are not counted (trimmed by ``--history-length``/``--history-age``, not lost)."""
    out: dict[str, int] = {}
    with redis_client(redis_url) as r:
        for ws in workspaces:
            kept, oldest = set(), {}
            for _, fields in r.xrange(keyspace.history_key(ws)):
                event = keyspace.history_event(fields)
                if event.get("type") == "task.updated":
                    p = event["payload"]
                    kept.add((p["taskId"], int(p["version"]), str(p["changes"].get("_ref"))))
                    oldest.setdefault(p["taskId"], int(p["version"]))
            mine = acks[acks["workspace"] == ws]
            out[ws] = sum((t, int(v), str(ref)) not in kept and int(v) >= oldest.get(t, 0)
                          for t, v, ref in zip(mine["task"], mine["version"], mine["ref"], strict=True))
    return out


def _unavailable(detail: object) -> bool:
    try:
        return json.loads(str(detail)).get("code") == "unavailable"
    except (ValueError, AttributeError):
        return False


def failover_table(results: Results) -> pd.DataFrame:
    """What the clients of the killed master's workspaces saw against the others', one row each: workspaces,
    clients, sockets lost (closed or dropped by a server: the target is 0), updates sent, acked, answered
    ``unavailable``, lost updates (acked, not received by a client that stayed: :meth:`Results.lost_updates`
    restricted to the group) and acked updates missing from the history after the failover."""
    failovers = results.meta.get("failovers") or []
    if not failovers:
        raise ValueError("this run had no 'master' failure (Results.meta['failovers'] is empty)")
    killed = {ws for f in failovers for ws in f["workspaces"]}
    missing = {ws: n for f in failovers for ws, n in f["acked_missing"].items()}
    conns, rows = results.connections, []
    for group, inside in (("killed master", True), ("other masters", False)):
        def mine(df: pd.DataFrame, inside: bool = inside) -> pd.DataFrame:
            return df[df["workspace"].isin(killed) == inside]
        c = mine(conns)
        errors = c[c["event"] == "error"]
        sub = Results(results.scenario, results.deliveries, results.applies, results.presence, c, mine(results.sends),
                      acks=mine(results.acks), caches=results.caches)
        rows.append({"group": group, "workspaces": int(c["workspace"].nunique()), "clients": int(c["user"].nunique()),
                     "sockets_lost": int((c["event"] == "lost").sum()), "updates_sent": len(sub.sends),
                     "acked": len(sub.acks), "unavailable": int(errors["detail"].map(_unavailable).sum()),
                     "lost_updates": sub.lost_updates(),
                     "acked_missing_from_history": sum(n for ws, n in missing.items() if (ws in killed) == inside)})
    return pd.DataFrame(rows).set_index("group")
