"""Workspace rooms on Redis pub/sub, and the write path to local connections.

One pub/sub connection per server instance, one subscription per workspace that has local connections
(subscribed on the first, unsubscribed after the last). Each pub/sub message is turned into a WebSocket
frame **once** (server frames are unmasked and, with compression off, identical for every receiver) and that
frame is queued on every local connection of the workspace. Queues are flushed after each read from Redis,
so events that arrive together reach a socket in one ``write()``: under load, one syscall carries several
events (the hint from ``websockets.broadcast()``, taken one step further).

The pub/sub connection is :class:`rtlib.server.resp.RespProtocol` (rtlib's one Redis connection layer, hiredis's
parser) rather than redis-py's ``PubSub``: on the hot path it saves the per-message dict building and locking,
and the queues are flushed once per read. On Redis >= 6 it speaks RESP3, so the same connection also carries
the hot path's commands (:attr:`Fanout.command_connection`): per ``task.update``, Redis writes the event and the
script's reply to one socket, and this instance reads them with one wake-up instead of two.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import hiredis
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from rtlib.protocol.errors import CloseCode
from rtlib.server.keyspace import channel, split_frame, workspace_of_channel
from rtlib.server.resp import RespProtocol, open_connection, pack_command, parse_redis_url
from rtlib.server.rooms import Peer, Room
from rtlib.server.tasks import spawn

__all__ = ["Fanout", "Peer", "text_frame"]

log = logging.getLogger("rtlib.server.fanout")


def text_frame(payload: bytes) -> bytes:
    """One unmasked WebSocket text frame (server to client), serialized by websockets itself."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


class Fanout:
    """Local rooms (workspace -> peers) fed by Redis pub/sub; also the single write path for direct replies."""

    def __init__(self, max_write_buffer: int = 8 * 1024 * 1024) -> None:
        self.max_write_buffer = max_write_buffer
        self.rooms: dict[str, Room] = {}
        self._dirty_rooms: list[Room] = []  # rooms with frames or solo peers to write at the next flush
        self._dirty: list[Peer] = []  # peers outside any room with frames queued
        self._flush_soon = False  # a flush is scheduled (call_soon)
        self._protocol: RespProtocol | None = None
        self._pending: dict[bytes, list[asyncio.Future[None]]] = {}
        self._closing = False
        self.on_lost: Callable[[Exception | None], None] | None = None
        # Called with (workspace, local peers) whenever a room grows or shrinks (the cluster's connection counts).
        self.on_room_size: Callable[[str, int], None] | None = None
        self.events_in = 0  # pub/sub messages received (one per event per instance; the pub/sub check reads it)
        # The last event delivered to each room (its offset is parsed only when needed: a catch-up after an
        # outage reads the history from there, rtlib.server.catchup), and rooms whose live events are held
        # while such a catch-up reads the history (released after it, newer ones only).
        self.last_event: dict[str, bytes] = {}
        self.holding: dict[str, list[bytes]] = {}
        # End-to-end check of the subscriber: the instance publishes probes to this channel of its own and
        # waits for them here (see rtlib.server.loops.watch_pubsub); a connection that is up but delivers
        # nothing (Redis paused, a proxy in between) is caught by the missing probe.
        self.probe_channel: bytes | None = None
        self.probes: dict[bytes, asyncio.Future[None]] = {}

    async def connect(self, redis_url: str, chans: list[bytes] | None = None) -> None:
        """Open the pub/sub connection (any URL :func:`~rtlib.server.resp.parse_redis_url` reads) and subscribe
        the probe channel and ``chans`` in one command."""
        protocol = await open_connection(parse_redis_url(redis_url), resp3=True)
        protocol.subscribe_mode(self._on_reply, self.flush_soon)
        protocol.on_lost = self._connection_lost
        self._protocol = protocol
        chans = ([self.probe_channel] if self.probe_channel is not None else []) + (chans or [])
        if chans:
            await self._subscribe(chans)

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.open

    @property
    def command_connection(self) -> RespProtocol | None:
        """The pub/sub connection if it also takes commands (RESP3, Redis >= 6), else None. The hot path sends
        ``task.update``'s script on it, so the script's reply and the event it published come back in one read."""
        protocol = self._protocol
        return protocol if protocol is not None and protocol.resp3 else None

    def serves(self, workspace_id: str) -> bool:
        """Can this instance carry out the workspace's requests now (its Redis reachable, as far as this fan-out
        knows)? On one Redis always (the broker says when it is not); a Redis Cluster's fan-out says no for the
        slots of a master it lost (:mod:`rtlib.server.lost_masters`)."""
        return True

    def _connection_lost(self, protocol: RespProtocol, exc: Exception | None) -> None:
        if protocol is self._protocol:  # not a connection already replaced by a reconnect
            self._on_lost(exc)

    async def reconnect(self, redis_url: str) -> int:
        """Open a new pub/sub connection and re-subscribe the probe channel and every room that still has local
        peers, in one ``SUBSCRIBE`` command (returns the count: 1, whatever the number of rooms); from now on
        each room's live events are held (:attr:`holding`) until a catch-up releases them. A failure closes the
        new connection and raises."""
        self.holding = {ws: [] for ws in self.rooms}
        # The connection of an earlier attempt may still be open and subscribed (its catch-up failed while Redis
        # was loading its append-only file): close it first, or every later event arrives once per attempt (the
        # soak's 1.8 M duplicate deliveries, 2026-12-08). Its loss is not reported: it is no longer _protocol.
        previous, self._protocol = self._protocol, None
        if previous is not None:
            previous.close()
        try:
            await self.connect(redis_url, [channel(ws).encode() for ws in self.rooms])
        except BaseException:
            if self._protocol is not None:
                self._protocol.close()
            raise
        return 1

    async def _subscribe(self, chans: list[bytes]) -> None:
        """One ``SUBSCRIBE`` of several channels; returns once Redis confirmed each."""
        loop = asyncio.get_running_loop()
        waiters = []
        for chan in chans:
            fut: asyncio.Future[None] = loop.create_future()
            self._pending.setdefault(chan, []).append(fut)
            waiters.append(fut)
        self._write(pack_command(b"SUBSCRIBE", *chans))
        await asyncio.gather(*waiters)

    def release(self, workspace_id: str) -> list[bytes]:
        """Stop holding a room's live events; the messages held (pub/sub framing), for the catch-up to filter."""
        return self.holding.pop(workspace_id, [])

    def _write(self, data: bytes) -> None:
        if not self.connected:
            raise ConnectionError("redis pub/sub connection is down")
        self._protocol.write(data)  # type: ignore[union-attr]

    def progress(self) -> object:
        """What the pub/sub check notes before a probe, to tell a deaf subscriber from a busy process after it."""
        return self.events_in

    def drop_deaf(self, token: bytes, before: object) -> bool:
        """Probe ``token`` did not come back in time: drop the subscriber (:meth:`abandon`) unless it delivered
        events since :meth:`progress` said ``before``; True if dropped."""
        if self.events_in > before:  # type: ignore[operator]
            return False
        self.abandon()
        return True

    def abandon(self) -> None:
        """Drop a pub/sub connection that stopped delivering: ``on_lost`` then replaces it."""
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.abort()  # connection_lost -> _on_lost -> on_lost

    async def close(self) -> None:
        self._closing = True
        if self._protocol is not None:
            self._protocol.close()

    # --- rooms --------------------------------------------------------------------------------------------
    async def add(self, peer: Peer) -> None:
        """Put ``peer`` in its workspace room, subscribing first if it is the room's first local peer."""
        room = self.rooms.get(peer.workspace_id)
        if room is None:
            room = self.rooms[peer.workspace_id] = Room()
            room.join(peer)
            self._sized(peer.workspace_id, 1)
            await self._command(b"SUBSCRIBE", channel(peer.workspace_id).encode())
        else:
            room.join(peer)
            self._sized(peer.workspace_id, len(room))
            # A concurrent first joiner may still be waiting for the SUBSCRIBE confirmation: wait for it too,
            # so no peer is welcomed before its room actually receives events.
            waiting = self._pending.get(channel(peer.workspace_id).encode())
            if waiting:
                await asyncio.shield(waiting[-1])

    async def remove(self, peer: Peer) -> None:
        """Take ``peer`` out of its room; unsubscribe after the last local peer of the workspace."""
        room = self.rooms.get(peer.workspace_id)
        if room is None or room.pop(peer.conn_id, None) is None:
            return
        if room.solo.pop(peer.conn_id, None) is not None and peer.queue:
            self._dirty.append(peer)  # what it was owed is still written at the flush, as before it left
        self._sized(peer.workspace_id, len(room))
        if not room:
            del self.rooms[peer.workspace_id]
            self.last_event.pop(peer.workspace_id, None)
            if not self._closing and self.connected:
                self._write(pack_command(b"UNSUBSCRIBE", channel(peer.workspace_id)))

    def _sized(self, workspace_id: str, peers: int) -> None:
        if self.on_room_size is not None:
            self.on_room_size(workspace_id, peers)

    async def _command(self, verb: bytes, chan: bytes) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(chan, []).append(fut)
        self._write(pack_command(verb, chan))
        await fut

    # --- pub/sub input --------------------------------------------------------------------------------------
    def _on_reply(self, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):
            log.error("redis pub/sub error: %s", reply)
            return
        kind = reply[0]
        if kind == b"message" and reply[1] == self.probe_channel:
            if (fut := self.probes.pop(reply[2], None)) is not None and not fut.done():
                fut.set_result(None)
        elif kind == b"message":
            self.events_in += 1
            self.deliver(workspace_of_channel(reply[1]), reply[2])
        elif kind == b"subscribe":
            waiters = self._pending.get(reply[1])
            if waiters:
                fut = waiters.pop(0)
                if not waiters:
                    del self._pending[reply[1]]
                if not fut.done():
                    fut.set_result(None)

    def _on_lost(self, exc: Exception | None) -> None:
        for waiters in self._pending.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(ConnectionError("redis pub/sub connection lost"))
        self._pending.clear()
        if not self._closing:
            log.error("redis pub/sub connection lost: %s", exc)
            if self.on_lost:
                self.on_lost(exc)

    def deliver(self, workspace_id: str, message: bytes) -> None:
        """Queue one published event (:func:`rtlib.server.keyspace.frame`) for every local peer of the room."""
        room = self.rooms.get(workspace_id)
        if not room:
            return
        if self.holding and workspace_id in self.holding:  # a catch-up is reading this room's history
            self.holding[workspace_id].append(message)
            return
        skip, event = split_frame(message)
        self.last_event[workspace_id] = event
        if not room.dirty:
            room.dirty = True
            self._dirty_rooms.append(room)
        room.add_event(text_frame(event), event, skip)  # no per-peer work but for the few solo peers

    # --- output ---------------------------------------------------------------------------------------------
    def send(self, peer: Peer, event: bytes) -> None:
        """Queue a direct reply to one peer, in order with its room events; written at the next flush."""
        self._own_queue(peer)
        peer.queue.append(text_frame(event))

    def send_framed(self, peer: Peer, frames: list[bytes]) -> None:
        """Queue frames already framed (:func:`text_frame`: a catch-up frames each replayed event once for
        every connection of its room) for one peer, in order with its other frames."""
        if not frames:
            return
        self._own_queue(peer)
        peer.queue.extend(frames)

    def _own_queue(self, peer: Peer) -> None:
        """Make ``peer.queue`` what the peer is owed until the next flush (its room's events so far included),
        and schedule that flush."""
        room = self.rooms.get(peer.workspace_id)
        if room is not None and room.get(peer.conn_id) is peer:
            room.single_out(peer)
            if not room.dirty:
                room.dirty = True
                self._dirty_rooms.append(room)
        elif not peer.queue:
            self._dirty.append(peer)
        self.flush_soon()

    def flush_soon(self) -> None:
        """Flush after the callbacks already scheduled: a read from Redis that resolves a ``task.update``'s
        script call also holds its event (RESP3, one connection), and the handler it resumes queues the ack
        before this flush, so the sender gets event and ack in one write."""
        if (self._dirty or self._dirty_rooms) and not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what each peer is owed in one ``transport.write`` (one syscall when it drains): each dirty
        room's events to its peers (:meth:`Room.flush`), then the queues of the peers that have their own."""
        rooms, self._dirty_rooms = self._dirty_rooms, []
        dirty, self._dirty = self._dirty, []
        self._flush_soon = False
        for room in rooms:
            dirty += room.flush(self.max_write_buffer)
        for peer in dirty:
            frames, peer.queue = peer.queue, []
            if not frames or not peer.writable:
                continue  # closing: websockets owns the socket now, and a data frame would follow the close
            transport = peer.transport
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
            if transport.get_write_buffer_size() > self.max_write_buffer and peer.on_slow is not None:
                peer.on_slow(peer)

    def flush_peer(self, peer: Peer) -> None:
        """Flush one peer now (before closing it, so queued events go out ahead of the close frame)."""
        room = self.rooms.get(peer.workspace_id)
        if peer.queue or (room is not None and room.frames and peer.conn_id in room):
            self.flush()


def slow_consumer_closer(peer: Peer) -> None:
    """Default ``on_slow``: close a client whose backlog passed the limit with 1013 (try again later)."""
    conn = peer.connection
    if conn.protocol.state is State.OPEN:
        log.warning("closing slow consumer %s", peer.conn_id)
        spawn(conn.close(CloseCode.TRY_AGAIN_LATER, "slow consumer"))
