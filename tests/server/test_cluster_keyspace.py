"""The keyspace that shards (issue 22, items 1 and 3), against a real 3-master Redis Cluster with a replica each.

Every Lua script of the store runs through redis-py's cluster client (``redis.asyncio.cluster.RedisCluster``)
and must succeed (no ``CROSSSLOT``, no key of another slot) and give what one Redis gives: the same transcript of
replies, events and final state for one seeded sequence of updates, reads, history reads, presence operations
and sweeps over workspaces on all three masters, and every row of the presence lifecycle table. On both, every
script runs with a guard that fails any ``redis.call`` on a key the call did not declare in ``KEYS`` (Redis
itself only refuses keys of *other* slots on a cluster). The live server on a cluster (routing, sharded pub/sub)
is issue 22 item 2, not tested here.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest
import redis
from presence_cases import WS, BookAdapter, Case, RedisAdapter, cases, expected_published, run_case
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from rtlib.protocol.config import ServerConfig
from rtlib.protocol.presence import EntryFact
from rtlib.protocol.presence_protocol import Expire, Hold, PresenceProtocol, Remove
from rtlib.protocol.session import Session
from rtlib.server import keyspace, scripts
from rtlib.server.members import ClusterCounts
from rtlib.server.redis_cluster import RedisClusterProcess
from rtlib.server.store import RedisStore

#: Workspaces whose slots are on all three masters (checked by a test below).
WORKSPACES = ["w1", "w2", "w3", "acme", "gamma", "delta"]

#: Prepended to every script: a redis.call on a key not in KEYS raises (PUBLISH's channel and TIME take none).
GUARD = """
local declared_ = {}
for _, k in ipairs(KEYS) do declared_[k] = true end
local call_ = redis.call
local keyless_ = {PUBLISH = true, TIME = true}
local redis = setmetatable({call = function(command, ...)
  local key = ...
  if not keyless_[string.upper(command)] and not declared_[key] then
    error('undeclared key ' .. tostring(key) .. ' in ' .. command)
  end
  return call_(command, ...)
end}, {__index = redis})
"""


@pytest.fixture
async def cluster_client(redis_cluster: RedisClusterProcess) -> Any:
    client = RedisCluster.from_url(redis_cluster.url)
    await client.initialize()
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    await client.aclose()


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every script text of :mod:`rtlib.server.scripts` with :data:`GUARD` in front (stores made after this)."""
    for name in scripts.__all__:
        if isinstance(text := getattr(scripts, name), str):
            monkeypatch.setattr(scripts, name, GUARD + text)


def test_the_local_cluster_has_three_masters_each_with_a_replica(redis_cluster: RedisClusterProcess) -> None:
    with redis.Redis(port=redis_cluster.ports[0]) as r:
        nodes = r.execute_command("CLUSTER NODES")
        info = r.execute_command("CLUSTER INFO")
    flags = [n["flags"] for n in nodes.values()]
    assert sum("master" in f for f in flags) == 3 and sum("slave" in f for f in flags) == 3
    assert info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == 16384
    assert all(port < 55535 for port in redis_cluster.ports)  # the bus (port + 10000) is a valid port too
    masters = {key_slot(keyspace.due_key(ws).encode()) * 3 // 16384 for ws in WORKSPACES}
    assert masters == {0, 1, 2}  # the workload below reaches every master (even slot split)


async def test_the_guard_catches_a_key_built_in_a_script(redis_url: str) -> None:
    async with Redis.from_url(redis_url) as r:
        assert await r.eval(GUARD + "return redis.call('GET', KEYS[1])", 1, "k") is None
        with pytest.raises(redis.ResponseError, match="undeclared key k2"):
            await r.eval(GUARD + "return redis.call('GET', KEYS[1] .. '2')", 1, "k")


async def test_a_cluster_refuses_what_the_old_scripts_did(redis_cluster: RedisClusterProcess) -> None:
    """Why the layout changed: the sweep and the counts used to touch keys of other workspaces from one script.
    A node refuses a call declaring keys of two slots (CROSSSLOT), and a script reaching a key another node
    owns; a key of another slot on the *same* node passes unnoticed (Redis 7.0), hence :data:`GUARD`."""
    a, same_node, other_node = "w2", "gamma", "w3"
    slot = {ws: key_slot(keyspace.due_key(ws).encode()) for ws in (a, same_node, other_node)}
    assert slot[a] != slot[same_node] and slot[a] * 3 // 16384 == slot[same_node] * 3 // 16384 == 0
    assert slot[other_node] * 3 // 16384 == 1
    with redis.Redis(port=redis_cluster.ports[0]) as node:
        with pytest.raises(redis.ResponseError, match="don't hash to the same slot"):  # CROSSSLOT
            node.eval("return 1", 2, keyspace.due_key(a), keyspace.due_key(same_node))
        with pytest.raises(redis.ResponseError, match="non local key"):
            node.eval(f"return redis.call('GET', '{keyspace.epoch_key(other_node)}')", 1, keyspace.due_key(a))
        assert node.eval(f"return redis.call('GET', '{keyspace.epoch_key(same_node)}')", 1,
                         keyspace.due_key(a)) is None


def _task(got: tuple[int, dict[str, msgspec.Raw]]) -> tuple[int, dict[str, bytes]]:
    return got[0], {k: bytes(v) for k, v in got[1].items()}


async def _exercise(store: RedisStore) -> list[Any]:
    """One seeded sequence through every store operation (so every script), as a comparable transcript."""
    await store.load_scripts()
    assert store._update.script.startswith(GUARD) and store.sweep.settle.script.startswith(GUARD)
    out: list[Any] = []
    raw = msgspec.Raw
    for ws in WORKSPACES:
        for i in range(3):
            out.append(await store.update_task(ws, f"t{i}", {"a": raw(b"1"), "b": raw(b'"x"')}, b'{"v":', b"}"))
        out.append(await store.update_task(ws, "t0", {"a": raw(b"2")}, b'{"v":', b"}", user="u1", ref="r1"))
        out.append(await store.update_task(ws, "t0", {"a": raw(b"2")}, b'{"v":', b"}", user="u1", ref="r1"))
        out.append(await store.update_task(ws, "t1", {"a": raw(b"3")}, b"", b"", publish=False))
        out.append(_task(await store.get_task(ws, "t0")))
        out.append(_task(await store.get_task(ws, "nope")))
        cursor = None
        for _ in range(2):
            page, cursor = await store.list_tasks(ws, cursor, 2)
            out.append(([(t, v, {k: bytes(x) for k, x in f.items()}) for t, v, f in page], cursor))

    # Presence: joins, heartbeats, leaves, clean and lost disconnects (held under a grace) and sweeps.
    rng = random.Random(22)
    config = ServerConfig(heartbeat_interval=3, presence_timeout=10, sweep_interval=1, leave_grace=2.5)
    protocol = PresenceProtocol(config.presence)
    users = [("c1", "alice"), ("c2", "alice"), ("c3", "bob")]
    sessions = {(ws, conn): Session(f"{conn}-{ws}", user, ws, config) for ws in WORKSPACES for conn, user in users}
    now = 1_000.0
    for _ in range(250):
        now += rng.choice([0.0, 0.5, 1.0, 3.0])
        ws, task, (conn, _user) = rng.choice(WORKSPACES), rng.choice(["t1", "t2"]), rng.choice(users)
        session = sessions[ws, conn]
        kind = rng.choices(["presence.join", "presence.heartbeat", "presence.leave", "disconnect", "lost",
                            "pong", "sweep"], [3, 3, 2, 1, 1, 1, 2])[0]
        if kind == "sweep":
            out.append(sorted(await store.presence_expire(protocol.sweep(now), max_tasks=1), key=repr))
        elif kind in ("disconnect", "lost"):
            ops = protocol.disconnect(session, now, clean=kind == "disconnect")
            if ops and isinstance(ops[0], Hold):
                out.append(await store.presence_hold_many(ops))  # type: ignore[arg-type]
            elif ops:
                out.append(await store.presence_remove_many(ops))  # type: ignore[arg-type]
        elif kind == "pong":
            out.append(await store.presence_upsert_many(protocol.pong(session, now)))
        else:
            op = protocol.request(session, kind, task, now)
            out.append(await (store.presence_remove(op) if isinstance(op, Remove) else store.presence_upsert(op)))
    out.append(sorted(await store.presence_expire(Expire(now + 100, b'{"left":"{user}"}')), key=repr))

    for ws in WORKSPACES:  # the history (offsets and epochs are times: compared by position), then what is left
        epoch, first, last, entries = await store.history_since(ws, "0-0", 1000)
        assert epoch and first == entries[0][0] and last == entries[-1][0]
        _, _, _, after = await store.history_since(ws, entries[1][0], 1000)
        out.append(([msgspec.json.decode(e) for _, e in entries], [i for i, _ in after] == [i for i, _ in entries[2:]]))
        for task in ("t1", "t2"):
            out.append(await store.redis.zrange(keyspace.presence_key(ws, task), 0, -1, withscores=True))
        out.append(await store.redis.exists(keyspace.due_key(ws), keyspace.conns_key(ws)))
    out.append([await store.redis.zcard(keyspace.sweep_keys(p)[0]) for p in range(keyspace.SWEEP_PARTITIONS)])
    return out


@pytest.mark.usefixtures("guarded")
async def test_every_script_on_a_cluster_gives_what_one_redis_gives(redis_url: str, cluster_client: Any) -> None:
    async with Redis.from_url(redis_url) as single:
        want = await _exercise(RedisStore(single))
    got = await _exercise(RedisStore(cluster_client))
    assert got == want
    assert any(isinstance(x, list) and x and isinstance(x[0], EntryFact) and x[0].user_entries == 0 for x in want)
    assert want[-1] == [0] * keyspace.SWEEP_PARTITIONS  # everything expired: the registry is empty


@pytest.mark.usefixtures("guarded")
@pytest.mark.parametrize("case", cases(), ids=lambda c: c.id)
async def test_every_presence_row_on_a_cluster(case: Case, cluster_client: Any) -> None:
    owner = cluster_client.get_node_from_key(keyspace.channel(WS))
    async with Redis(host=owner.host, port=owner.port) as node:
        # Events are read on the node owning the workspace's slot, behind a fence published there.
        adapter = RedisAdapter(RedisStore(cluster_client), node.pubsub(), node)
        await adapter.pubsub.subscribe(keyspace.channel(WS))
        await adapter.pubsub.get_message(timeout=1.0)
        want = case.expected
        for name, store in (("book", BookAdapter()), ("cluster", adapter)):
            outcome, at = await run_case(case, store)
            assert outcome.before is case.state, f"{name}: the case's precondition was not set up"
            assert (outcome.entry, outcome.viewer) == (want.entry, want.viewer), f"{name}: {case.id}"
            assert outcome.published == expected_published(case, at), f"{name}: {case.id}"
        await adapter.pubsub.aclose()


async def test_cluster_counts_on_a_cluster(cluster_client: Any) -> None:
    """Connection counts per workspace (each workspace's hash in its slot) and alive keys (each in its own)."""
    a, b = ClusterCounts(cluster_client, "srv-a"), ClusterCounts(cluster_client, "srv-b")
    for c in (a, b):
        await c.beat()
    for i, ws in enumerate(WORKSPACES):
        b.changed(ws, i + 1)
        a.changed(ws, 1)
    for c in (a, b):
        if c._writing is not None:
            await c._writing
    assert await a.refresh(*WORKSPACES) == [i + 1 for i in range(len(WORKSPACES))]
    await cluster_client.delete(b.alive_key)  # b crashed: its key expired, its fields are still there
    assert await a.refresh(*WORKSPACES) == [0] * len(WORKSPACES)
    assert [await cluster_client.hkeys(keyspace.conns_key(ws)) for ws in WORKSPACES] == [
        [a.member.encode()]] * len(WORKSPACES)  # and a's refresh removed b's fields
    await a.close()
