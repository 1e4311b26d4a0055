"""A workspace room on one instance: its local connections, and the frames owed to them until the next flush.

Per delivered event, the per-recipient work in Python is what a big workspace pays once per member: at S2 (200
receivers in one workspace, 100 updates/s) it is 20,000 times a second. A room therefore keeps **one** list of the
event frames of this turn for all its peers (:attr:`Room.frames`), instead of a queue per peer. Only the few
peers that must differ this turn get a queue of their own (:attr:`Room.solo`):

* the sender of an event (Redis publishes it to the whole room; the sender gets an ``ack`` instead);
* a peer with a direct reply queued (an ``ack``, an error, a welcome): its reply must keep its place among the
  room's events, so its queue starts with the room's frames queued before it;
* a peer that joined after this turn's first event (it must not get the events from before it joined);
* a resuming peer whose room events are held while its catch-up reads the history (:attr:`Peer.held`).

At the flush (:meth:`Room.flush`) the room's frames are joined once and written to every other peer: per
recipient, one state check and one ``transport.write``, and no list built or emptied. The solo peers are
written from their own queues by the caller, in the same flush.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from websockets.protocol import State

__all__ = ["Peer", "Room"]

_OPEN = State.OPEN


class Peer:
    """The outbound side of one local WebSocket connection: its own queue of frames, when it needs one."""

    __slots__ = ("conn_id", "connection", "epoch", "held", "on_slow", "protocol", "queue", "since", "transport",
                 "workspace_id")

    def __init__(self, conn_id: str, workspace_id: str, connection: Any,
                 on_slow: Callable[[Peer], None] | None = None) -> None:
        self.conn_id = conn_id
        self.workspace_id = workspace_id
        self.connection = connection  # a websockets ServerConnection
        # Read once here: the flush touches these two per recipient instead of going through the connection.
        self.protocol = connection.protocol
        self.transport = connection.transport
        self.queue: list[bytes] = []
        self.on_slow = on_slow
        # While not None, room events are kept here (as event JSON) instead of being sent: a resuming
        # connection is subscribed first, caught up from history, then released (no gap, no duplicate).
        self.held: list[bytes] | None = None
        # Where this connection started in the workspace history (its welcome's offset and epoch, or where a
        # catch-up left it): with the room's last delivered event, what it has been sent (rtlib.server.catchup).
        self.since: str | None = None
        self.epoch: str | None = None

    @property
    def writable(self) -> bool:
        """Data frames may still be written: once websockets has sent or received a close frame, it owns the
        socket, and a data frame would follow the close."""
        return self.protocol.state is _OPEN


class Room(dict[str, Peer]):
    """conn_id -> :class:`Peer` (a plain dict to its readers), plus what is owed to the peers until the next flush.

    Invariant between two flushes: a peer in :attr:`solo` is owed exactly its :attr:`Peer.queue` (room events
    included, in order); every other peer of the room is owed :attr:`frames`, and its own queue is empty.
    """

    __slots__ = ("dirty", "frames", "solo")

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[bytes] = []  # this turn's room events, framed, for every peer not in solo
        self.solo: dict[str, Peer] = {}
        self.dirty = False  # in the fan-out's list of rooms to flush

    def join(self, peer: Peer) -> None:
        """Add ``peer``; after this turn's first event, or while its events are held, it starts solo (and gets
        none of the frames queued before it joined)."""
        self[peer.conn_id] = peer
        if self.frames or peer.held is not None:
            self.solo[peer.conn_id] = peer

    def single_out(self, peer: Peer) -> None:
        """Give ``peer`` a queue of its own until the flush, starting with the room frames it is owed so far."""
        if peer.conn_id not in self.solo:
            self.solo[peer.conn_id] = peer
            if self.frames:
                peer.queue[:0] = self.frames

    def add_event(self, frame: bytes, event: bytes, skip: str | None) -> None:
        """Queue one room event (``frame``: ``event`` framed) for every peer except ``skip`` (its sender)."""
        if skip is not None and (sender := self.get(skip)) is not None:
            self.single_out(sender)  # before the frame is added: the sender's queue stops just before it
        for conn_id, peer in self.solo.items():
            if conn_id == skip:
                continue
            if peer.held is not None:
                peer.held.append(event)
            else:
                peer.queue.append(frame)
        self.frames.append(frame)

    def flush(self, max_write_buffer: int) -> list[Peer]:
        """Write this turn's frames to every peer not solo, in one ``transport.write`` each; return the solo
        peers (the caller writes their queues). A resuming peer whose events are still held stays solo."""
        frames, solo = self.frames, self.solo
        self.frames, self.dirty = [], False
        if solo:
            self.solo = {conn_id: p for conn_id, p in solo.items() if p.held is not None}
        if frames:
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            for conn_id, peer in self.items():
                if conn_id in solo or peer.protocol.state is not _OPEN:
                    continue
                transport = peer.transport
                transport.write(data)
                if transport.get_write_buffer_size() > max_write_buffer and peer.on_slow is not None:
                    peer.on_slow(peer)
        return list(solo.values())
