"""Workspace rooms on a Redis Cluster: sharded pub/sub, one subscriber connection per master (issue 22 item 2).

The fan-out of :mod:`rtlib.server.fanout` (rooms, frames built once, batched writes) with its Redis side
replaced. Each workspace channel (:func:`~rtlib.server.keyspace.channel`: the workspace's hash tag) lives in
the slot of the workspace's keys, so its scripts ``SPUBLISH`` to it on the node that ran them, and only that
node delivers it. An instance subscribes (``SSUBSCRIBE``) each room on the master that owns its slot, on **one
connection per master**, however many workspaces it serves: grouping by node instead of one connection per
channel is what keeps an instance's Redis connections at the number of shards.

* Slots move (a resharding, a failover): the old owner tells its subscribers with a ``sunsubscribe`` push for
  each channel of the slot; an ``SSUBSCRIBE`` sent on a stale map gets ``MOVED``. Both make the instance read
  the slot map again (:class:`~rtlib.server.cluster_client.Topology`) and subscribe the moved rooms on their
  new owner; a map read every :data:`~rtlib.server.cluster_client.REFRESH_EVERY` s catches the rest (a new
  master to open a subscriber on). A moved room's live events are held from the ``sunsubscribe`` on, and once
  it is subscribed again it is caught up from history like after an outage (:mod:`rtlib.server.catchup`):
  what was published between the old owner's ``sunsubscribe`` and the new subscription is not lost.
* A subscriber connection drops (a master died) while another master's is open: only that master is lost
  (:mod:`rtlib.server.lost_masters`): its workspaces answer ``unavailable`` and their rooms are held until the
  slot map names a new owner (the replica's promotion), then subscribed there and caught up from history; the
  other workspaces carry on. A master that stops answering with its socket open is found by the pub/sub check,
  per master (:meth:`ClusterFanout.drop_deaf`). The last subscriber dropping, or every master falling silent, is
  the outage ride-through (:mod:`rtlib.server.outage`) as on one Redis: the broker
  is down, connections stay open, and :meth:`reconnect` re-reads the map, opens a subscriber per master and
  re-subscribes every room, before the catch-up from history.
* The pub/sub check: each instance has one probe channel per master (a hash tag chosen in that master's
  slots); :class:`~rtlib.server.cluster_client.ClusterProbe` publishes a probe on each, and it counts as back
  only when every master's subscriber delivered it, so a deaf subscriber on any node is caught (and dropped
  alone if the others delivered it).

The hot path's commands (:class:`~rtlib.server.cluster_client.ClusterConnection`) go to their key's master on
that master's subscriber connection (:class:`ShardedProtocol`), as they share the one connection on one Redis:
an update's reply and its event come back in one read, and a resuming connection's history read is answered
after every event published before it was delivered (no duplicate between replay and live events).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import hiredis

from rtlib.protocol.config import HistoryConfig
from rtlib.protocol.session import Session
from rtlib.server.catchup import CatchUpReport, catch_up
from rtlib.server.cluster_client import (
    REFRESH_EVERY,
    Node,
    ShardedProtocol,
    Topology,
    slot_of,
)
from rtlib.server.fanout import Fanout
from rtlib.server.keyspace import channel, node_probe_channel, workspace_of_channel
from rtlib.server.lost_masters import LostMasters
from rtlib.server.resp import RespError, RespProtocol, open_connection, pack_command
from rtlib.server.store import RedisStore
from rtlib.server.tasks import spawn

__all__ = ["ClusterFanout"]

log = logging.getLogger("rtlib.server.cluster_fanout")

#: Seconds a re-subscription after a slot move may take before it is tried again at the next map read.
RESUBSCRIBE_TIMEOUT = 5.0
#: Seconds a lost master that is still in the slot map has to answer a new subscriber connection, per try.
REOPEN_TIMEOUT = 1.0


class ClusterFanout(Fanout):
    """Rooms fed by sharded pub/sub: one ``SSUBSCRIBE`` connection per master of ``topology``."""

    def __init__(self, topology: Topology, max_write_buffer: int = 8 * 1024 * 1024) -> None:
        super().__init__(max_write_buffer)
        self.topology = topology
        self._subs: dict[Node, ShardedProtocol] = {}  # master -> its subscriber connection
        self._where: dict[bytes, Node] = {}  # channel -> the master it was subscribed on
        self._dropping: set[bytes] = set()  # channels this instance left: their sunsubscribe is not a slot move
        self._probes: dict[Node, bytes] = {}  # master -> this instance's probe channel there
        self._probe_seen: dict[bytes, set[Node]] = {}  # probe token -> the masters that delivered it
        self._events: dict[Node, int] = {}  # workspace events each master's subscriber delivered (the check)
        self._down = False  # the whole subscriber is lost: the outage path is at work until the next connect
        self._abandoning = False  # the pub/sub check dropped every subscriber: a whole outage, not one master
        self.lost = LostMasters(topology)  # masters lost while others answer (their workspaces wait)
        topology.suspect = self.lost.since  # read the slot map from them last
        self._moving = asyncio.Lock()  # one re-subscription and catch-up at a time (slot moves, lost masters)
        self._fresh: asyncio.Task[None] | None = None
        self._rehoming: asyncio.Task[None] | None = None
        # Catches up the rooms in ``holding`` from history (rtlib.server.catchup, :meth:`follow_moves`): a room
        # whose slot moved may have missed events between its old master's sunsubscribe and the new SSUBSCRIBE.
        self._catch_up: Callable[[int, float, list[str]], Awaitable[CatchUpReport]] | None = None

    # --- connections ----------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return bool(self._subs) and not self._down and all(p.open for p in self._subs.values())

    @property
    def command_connection(self) -> RespProtocol | None:
        return None  # commands go to their key's master (ClusterConnection), not to a subscriber

    @property
    def nodes(self) -> list[Node]:
        """The masters this instance has a subscriber connection to (one each)."""
        return list(self._subs)

    def serves(self, workspace_id: str) -> bool:
        return self.lost.serves(channel(workspace_id))

    def node_connection(self, node: Node) -> RespProtocol | None:
        """The master's subscriber connection, for the hot path's commands to that master (None: no subscriber
        there yet, the command goes on a connection of its own)."""
        return self._subs.get(node)

    def probe_channels(self) -> list[bytes]:
        """Where the check publishes a probe: one channel per master, from the current :attr:`probe_channel`
        (those subscribed are from the one at connect time: a changed name goes unheard until a reconnect)."""
        return [self._probe_for(node) for node in self._subs] if self.probe_channel is not None else []

    async def connect(self, redis_url: str, chans: list[bytes] | None = None) -> None:
        """Read the slot map, open one subscriber per master and subscribe the probe channels and ``chans``
        (each on its slot's master). ``redis_url`` is not read again: the map knows every node."""
        self._drop_all()
        try:
            await self.topology.refresh()
            for node in self.topology.masters:
                await self._open(node)
            await self._ssubscribe([*self._probes.values(), *(chans or [])])
        except BaseException:
            self._drop_all()
            raise
        if self._fresh is None or self._fresh.done():
            self._fresh = spawn(self._keep_fresh(), name="cluster-slot-map")

    async def _open(self, node: Node) -> None:
        protocol = await open_connection(self.topology.node_address(node), resp3=True, factory=ShardedProtocol)
        if not protocol.resp3:
            protocol.close()
            raise ConnectionError(f"redis cluster node {node[0]}:{node[1]} does not speak RESP3 (Redis >= 7 needed)")
        protocol.subscribe_mode(lambda reply: self._on_node_reply(node, reply), self.flush_soon)
        protocol.on_lost = self._connection_lost
        self._subs[node] = protocol
        if self.probe_channel is not None:
            self._probes[node] = self._probe_for(node)

    def _probe_for(self, node: Node) -> bytes:
        """This instance's probe channel on ``node``: the first hash tag 0, 1, 2... whose slot it owns."""
        assert self.probe_channel is not None
        for tag in range(100_000):
            chan = node_probe_channel(self.probe_channel, tag)
            if self.topology.owner[slot_of(chan)] == node:
                return chan
        raise RuntimeError(f"no slot of {node} found for a probe channel")

    def follow_moves(self, store: RedisStore, history: HistoryConfig, sessions: Mapping[str, Session]) -> None:
        """Catch rooms up from history after their slot moved (the driver calls this once it has a store)."""
        self._catch_up = partial(catch_up, self, store, history, sessions)

    async def reconnect(self, redis_url: str) -> int:
        """:meth:`Fanout.reconnect` (the outage path re-subscribes and catches up every room), with any
        re-subscription after a slot move given up: the reconnect covers it."""
        if self._rehoming is not None:
            self._rehoming.cancel()
        return await super().reconnect(redis_url)

    def _drop_all(self) -> None:
        """Close every subscriber quietly (a reconnect replaces them all)."""
        for protocol in self._subs.values():
            protocol.on_lost = None
            protocol.close()
        self._subs, self._where, self._probes = {}, {}, {}
        self._dropping.clear()
        self._probe_seen.clear()
        self._down = self._abandoning = False
        self.lost.clear()

    def _connection_lost(self, protocol: RespProtocol, exc: Exception | None) -> None:
        node = next((n for n, p in self._subs.items() if p is protocol), None)
        if node is None or self._down:
            return
        if not (self._closing or self._abandoning) and any(p.open for n, p in self._subs.items() if n != node):
            self._lose(node, exc)  # the other masters answer: only this one's workspaces wait
            return
        self._down = True  # once per outage: the others' drops follow from the same cause
        self._on_lost(exc)

    def _lose(self, node: Node, exc: Exception | None) -> None:
        """One master's subscriber dropped: hold its rooms, fail their pending subscriptions, and retry until
        its slots have an owner this instance reaches (:class:`~rtlib.server.lost_masters.LostMasters`)."""
        del self._subs[node]
        probe = self._probes.pop(node, None)
        rooms = [chan for chan, where in self._where.items() if where == node]  # its probe channel too
        for chan in rooms:
            del self._where[chan]
            self._hold(chan)
            for fut in self._pending.pop(chan, []):
                if not fut.done():
                    fut.set_exception(ConnectionError(f"redis cluster master {node[0]}:{node[1]} lost"))
        log.warning("redis cluster master %s:%s lost (%s): its %d rooms wait for its slots' next owner, the other "
                    "masters' carry on", *node, exc or "connection closed", len(rooms) - (probe is not None))
        self.lost.lose(node, self._regain)

    async def _regain(self) -> bool:
        """One try (:meth:`LostMasters.lose` retries it): read the slot map; a lost master replaced in it, or
        answering again, is forgotten, and the rooms are subscribed on their owners and caught up. True once no
        master is lost."""
        await self.topology.refresh()
        back = []
        for node in list(self.lost.since):
            if node in self.topology.masters:  # not replaced (yet): it may answer again
                try:  # bounded: a paused master accepts the connection and never answers (its promotion, if it
                    # comes meanwhile, is seen at the next try)
                    await asyncio.wait_for(self._open(node), REOPEN_TIMEOUT)
                except (OSError, ConnectionError, TimeoutError, RespError):
                    continue
            back.append(node)
        if not back:
            return False
        window = self.lost.window() + REFRESH_EVERY
        self.lost.forget(back)
        await self._resubscribe(window)
        return not self.lost.since

    def progress(self) -> dict[Node, int]:
        return dict(self._events)

    def drop_deaf(self, token: bytes, before: object) -> bool:
        """Probe ``token`` is late. Masters that delivered neither it nor an event since ``before`` are deaf
        (paused, partitioned) if another master did deliver it (this process read its probes in time): dropped,
        each lost on its own (:meth:`_lose`). If none delivered it, events from any say this process is busy
        (nothing dropped); no events either is a whole-instance outage (:meth:`abandon`)."""
        seen, was = self._probe_seen.pop(token, set()), before if isinstance(before, dict) else {}
        deaf = [n for n in self._subs if n not in seen and self._events.get(n, 0) <= was.get(n, 0)]
        if not deaf or (not seen and len(deaf) < len(self._subs)):
            return False
        if len(deaf) == len(self._subs):
            self.abandon()
            return True
        for node in deaf:  # connection_lost -> _connection_lost: the others still open, so _lose(node)
            log.warning("redis cluster master %s:%s delivered neither the probe nor an event: dropping it", *node)
            if (transport := self._subs[node].transport) is not None:
                transport.abort()
        return True

    def abandon(self) -> None:
        self._abandoning = True  # the check found a subscriber deaf: Redis as a whole is suspect
        for protocol in self._subs.values():
            if protocol.transport is not None:
                protocol.transport.abort()

    async def close(self) -> None:
        self._closing = True
        for task in (self._fresh, self._rehoming):
            if task is not None:
                task.cancel()
        self.lost.clear()  # its retries would go on reading the slot map after the instance stopped
        for protocol in self._subs.values():
            protocol.close()

    # --- subscriptions --------------------------------------------------------------------------------------
    async def _ssubscribe(self, chans: list[bytes]) -> None:
        """``SSUBSCRIBE`` each channel on its slot's master (one command per slot: Redis refuses channels of
        several slots in one); returns once every one is confirmed. Raises ConnectionError for a lost master's
        (a connection to one of its workspaces accepted just before the loss is then closed 1013, as in an outage;
        later ones are refused 503 at the handshake)."""
        groups: dict[int, list[bytes]] = defaultdict(list)
        for chan in chans:
            groups[slot_of(chan)].append(chan)
        loop = asyncio.get_running_loop()
        waiters = []
        for slot, group in groups.items():
            node = self.topology.node_of(slot)
            if node in self.lost.since:
                raise ConnectionError(f"redis cluster master {node[0]}:{node[1]} is lost (slot {slot})")
            if node not in self._subs:
                await self._open(node)
            for chan in group:
                fut: asyncio.Future[None] = loop.create_future()
                self._pending.setdefault(chan, []).append(fut)
                waiters.append(fut)
                self._where[chan] = node
                self._dropping.discard(chan)
            self._subs[node].fenced(pack_command(b"SSUBSCRIBE", *group))
        await asyncio.gather(*waiters)

    async def _command(self, verb: bytes, chan: bytes) -> None:
        """A room's first local peer (:meth:`Fanout.add`): subscribe its channel on the channel's master."""
        await self._ssubscribe([chan])

    def _write(self, data: bytes) -> None:
        """What :meth:`Fanout.remove` writes after a room's last local peer left, its one write left here (the
        others are overridden): ``UNSUBSCRIBE <channel>``, sent as ``SUNSUBSCRIBE`` to the channel's master."""
        reader = hiredis.Reader()
        reader.feed(data)
        verb, chan = reader.gets()
        assert verb == b"UNSUBSCRIBE", verb
        node = self._where.pop(chan, None)
        protocol = self._subs.get(node) if node is not None else None
        if protocol is not None and protocol.open:
            self._dropping.add(chan)
            protocol.fenced(pack_command(b"SUNSUBSCRIBE", chan))

    # --- pub/sub input ----------------------------------------------------------------------------------------
    def _on_node_reply(self, node: Node, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError | RespError):
            # MOVED (or ASK) to an SSUBSCRIBE sent on a stale map: read it again, subscribe where it says
            log.info("redis cluster node %s:%s: %s; reading the slot map again", *node, reply)
            self._rehome_soon()
            return
        kind = reply[0]
        if kind == b"smessage":
            if self._probes.get(node) == reply[1]:
                self._probe_back(node, reply[2])
                return
            self.events_in += 1
            self._events[node] = self._events.get(node, 0) + 1
            self.deliver(workspace_of_channel(reply[1]), reply[2])
        elif kind == b"ssubscribe":
            self._on_reply([b"subscribe", reply[1]])  # Fanout's: wake the subscription's waiter
        elif kind == b"sunsubscribe":
            if reply[1] in self._dropping:
                self._dropping.discard(reply[1])
            else:  # the node gave the channel's slot away (a resharding, a failover): subscribe at the new owner
                log.info("redis cluster node %s:%s dropped %r (its slot moved)", *node, reply[1])
                if self._where.get(reply[1]) == node:
                    del self._where[reply[1]]
                self._hold(reply[1])
                self._rehome_soon()

    def _probe_back(self, node: Node, token: bytes) -> None:
        """A probe came back from one master; it counts (``probes[token]``) once every master delivered it."""
        seen = self._probe_seen.setdefault(token, set())
        seen.add(node)
        if seen.issuperset(self._subs):
            del self._probe_seen[token]
            if (fut := self.probes.pop(token, None)) is not None and not fut.done():
                fut.set_result(None)
        if len(self._probe_seen) > 64:  # tokens given up on by the check
            self._probe_seen = {t: s for t, s in self._probe_seen.items() if t in self.probes}

    # --- slot moves -------------------------------------------------------------------------------------------
    def _rehome_soon(self) -> None:
        if not self._closing and (self._rehoming is None or self._rehoming.done()):
            self._rehoming = spawn(self._rehome(), name="cluster-resubscribe")

    async def _rehome(self) -> None:
        """Read the slot map, then :meth:`_resubscribe`; a failure is retried at the next map read."""
        try:
            await self.topology.refresh()
            await self._resubscribe(REFRESH_EVERY + RESUBSCRIBE_TIMEOUT)
        except (OSError, ConnectionError, TimeoutError, RespError) as exc:
            log.warning("redis cluster: re-subscribing after a slot move failed (%s); next map read retries", exc)

    async def _resubscribe(self, window: float) -> None:
        """Open subscribers on new masters (not on lost ones), close those of nodes no longer masters, subscribe
        every room (and probe) whose channel is not subscribed on its slot's owner, and catch the held rooms up
        (``window``: seconds they may have missed)."""
        async with self._moving:
            masters = set(self.topology.masters)
            for node in [n for n in self._subs if n not in masters]:
                protocol = self._subs.pop(node)
                protocol.on_lost = None
                protocol.close()
                self._probes.pop(node, None)
            for node in self.topology.masters:
                if node not in self._subs and node not in self.lost.since:
                    await self._open(node)
            if self.probe_channel is not None:
                self._probes = {node: self._probe_for(node) for node in self._subs}
            wanted = [*self._probes.values(), *(channel(ws).encode() for ws in self.rooms)]
            moved = [c for c in wanted if self._where.get(c) != (owner := self.topology.owner[slot_of(c)])
                     and owner not in self.lost.since]
            if moved:
                log.info("re-subscribing %d channel(s) on their new master", len(moved))
                for chan in moved:
                    self._hold(chan)
                async with asyncio.timeout(RESUBSCRIBE_TIMEOUT):
                    await self._ssubscribe(moved)
            # what the moved rooms missed, from history; then their held live events (no gap, no duplicate); a
            # lost master's rooms wait for their own re-subscription
            ready = [ws for ws in self.holding if self.serves(ws)]
            if ready and self._catch_up is not None and self.connected:
                report = await self._catch_up(len(moved), window, ready)
                log.info("rooms caught up after a slot move: %s", report.summary())

    def _hold(self, chan: bytes) -> None:
        """From now on keep the room's live events (:meth:`Fanout.deliver`) until its catch-up releases them."""
        if chan not in self._probes.values() and (ws := workspace_of_channel(chan)) in self.rooms:
            self.holding.setdefault(ws, [])

    async def _keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_EVERY)
            if self.connected:
                await self._rehome()
