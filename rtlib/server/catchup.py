"""Bringing every open connection up to date after Redis was unreachable: server-side, without a reconnect.

While this instance could not reach Redis (paused, restarted, failed over, or its subscriber went deaf), events
published meanwhile never reached its pub/sub connection. They are in each workspace's history (the same
script that publishes an event appends it there, :mod:`rtlib.server.scripts`). The instance knows what it
sent each connection: where the connection started (``Peer.since``, its welcome's offset) and the room's last
delivered event (``Fanout.last_event``). So, once the pub/sub connection is back (:meth:`Fanout.reconnect`:
one ``SUBSCRIBE`` for every room, whose live events are held from then on), :func:`catch_up` reads each
workspace's missing range **once** (one history script call per workspace, however many connections it has
here), sends each connection the events after its own position, in order, then releases the held live events
newer than what was read: no gap, no duplicate, the same rule as a resume (:mod:`rtlib.protocol.history`).

When the history cannot cover a connection's gap (Redis restarted without persistence: a new epoch; or more
than ``--max-replay`` events missed; or history off) the connection gets ``session.resync`` instead of a
close: reload every task and re-join presence (``docs/protocol.md`` §11b).

One rule differs from a client's resume: a connection's position older than the history's first entry (a
connection welcomed while the history was empty, or a room quiet for longer than ``--history-age``) does not
by itself mean a gap. Everything after the position was published after the room last received an event live,
so within the outage (``window`` seconds): nothing of it was trimmed by age if ``window < history age``, and
nothing by length if fewer than ``history length`` entries follow the position (trimming by length keeps at
least that many, all of them newer than anything it removed). A resuming client cannot say when its position
was current; the instance can.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from rtlib.protocol import events
from rtlib.protocol.config import HistoryConfig
from rtlib.protocol.history import decide_resume, offset_key, offset_of, with_offset
from rtlib.protocol.session import Session
from rtlib.server.fanout import Fanout, Peer, text_frame
from rtlib.server.keyspace import split_frame
from rtlib.server.store import RedisStore

__all__ = ["CatchUpReport", "catch_up"]

#: Workspaces whose history is read concurrently (their calls are pipelined on one connection).
CHUNK = 256


@dataclass
class CatchUpReport:
    """What one catch-up did. ``commands`` counts the Redis commands sent per workspace (its history read);
    ``subscribe_commands`` the ``SUBSCRIBE`` shared by all of them."""

    workspaces: int = 0
    connections: int = 0
    replayed: int = 0  # events sent from the history, summed over connections
    resynced: int = 0  # connections told session.resync
    released: int = 0  # live events held during the reads and delivered after them
    subscribe_commands: int = 0
    commands: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        per_ws = sorted(set(self.commands.values())) or [0]
        return (f"caught up {self.connections} connections in {self.workspaces} workspaces: {self.replayed} events "
                f"replayed, {self.resynced} told to resync, {self.released} held events released; Redis commands: "
                f"{self.subscribe_commands} SUBSCRIBE for all + {'/'.join(map(str, per_ws))} per workspace "
                f"({sum(self.commands.values())} in all), {self.seconds * 1000:.1f} ms")


async def catch_up(fanout: Fanout, store: RedisStore, history: HistoryConfig, sessions: Mapping[str, Session],
                   subscribe_commands: int = 1, window: float = 0.0, only: list[str] | None = None) -> CatchUpReport:
    """Catch up every room :meth:`Fanout.reconnect` re-subscribed (and is holding), or ``only`` those of them;
    ``window``: seconds since the old subscriber may have stopped delivering (the outage and its detection).
    Raises if Redis fails again meanwhile: the caller retries the whole reconnect, and rooms are read again from
    where their connections stand (held events are dropped then: they are in the history)."""
    started = time.monotonic()
    report = CatchUpReport(subscribe_commands=subscribe_commands)
    rooms = [ws for ws in fanout.holding if only is None or ws in only]
    untrimmed_by_age = not history.max_age or window < history.max_age
    for i in range(0, len(rooms), CHUNK):
        await asyncio.gather(*(_room(fanout, store, history, sessions, ws, report, untrimmed_by_age)
                               for ws in rooms[i:i + CHUNK]))
    report.seconds = time.monotonic() - started
    return report


def _newest(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return a if offset_key(a) >= offset_key(b) else b


async def _room(fanout: Fanout, store: RedisStore, history: HistoryConfig, sessions: Mapping[str, Session],
                ws: str, report: CatchUpReport, untrimmed_by_age: bool) -> None:
    room = fanout.rooms.get(ws, {})
    # Connections still being welcomed hold their own events (Connections._welcome); the rest are live.
    peers = [p for p in room.values() if p.held is None and p.conn_id in sessions]
    last_event = fanout.last_event.get(ws)
    room_at = offset_of(last_event) if last_event is not None else None
    room_epoch = _epoch_of(last_event) if last_event is not None else None
    at = {p.conn_id: _newest(p.since, room_at) or "0-0" for p in peers}
    if not history.length or not peers:
        if peers:
            for p in peers:
                _resync(fanout, p, sessions, None, None, "history is off: the events missed cannot be replayed")
            report.resynced += len(peers)
        _release(fanout, ws, None, report)
        report.workspaces += 1
        report.connections += len(peers)
        return
    start = min(at.values(), key=offset_key)
    report.commands[ws] = report.commands.get(ws, 0) + 1
    epoch, first, last, entries = await store.history_since(ws, start, history.max_replay)
    truncated = len(entries) > history.max_replay
    # Nothing after `start` can have been trimmed (the module's docstring): then the oldest entry kept says
    # nothing about a gap, and decide_resume is not given it.
    kept_all = untrimmed_by_age and len(entries) < history.length
    frames = [(offset_key(i), text_frame(with_offset(e, i, epoch))) for i, e in entries]
    now_at = last or "0-0"
    for p in peers:
        if p.conn_id not in sessions or fanout.rooms.get(ws, {}).get(p.conn_id) is not p:
            continue  # closed while the history was read
        mine = [f for k, f in frames if k > offset_key(at[p.conn_id])]
        decision = decide_resume(at[p.conn_id], room_epoch or p.epoch or epoch, epoch, None if kept_all else first,
                                 last, history.max_replay + 1 if truncated else len(mine), history.max_replay)
        if decision.recovered:
            fanout.send_framed(p, mine)
            report.replayed += len(mine)
        else:
            _resync(fanout, p, sessions, epoch, now_at, decision.reason)
            report.resynced += 1
        p.since, p.epoch = now_at, epoch
    fanout.last_event.pop(ws, None)  # each connection's position is in its since now
    _release(fanout, ws, now_at, report)
    report.workspaces += 1
    report.connections += len(peers)


def _resync(fanout: Fanout, peer: Peer, sessions: Mapping[str, Session], epoch: str | None, offset: str | None,
            reason: str) -> None:
    session = sessions.get(peer.conn_id)
    if session is not None:
        fanout.send(peer, events.resync(peer.workspace_id, session.user_id, epoch, offset, reason, time.time()))


def _release(fanout: Fanout, ws: str, read_to: str | None, report: CatchUpReport) -> None:
    """Deliver the live events held while the history was read, those newer than it (the others were replayed,
    or are covered by the resync's reload)."""
    seen = offset_key(read_to) if read_to is not None else None
    for message in fanout.release(ws):
        offset = offset_of(split_frame(message)[1])
        if seen is None or offset is None or offset_key(offset) > seen:
            fanout.deliver(ws, message)
            report.released += 1


_EPOCH = b',"epoch":"'


def _epoch_of(event: bytes) -> str | None:
    """The epoch a delivered event carries (after its offset, :func:`rtlib.protocol.history.with_offset`)."""
    _, found, tail = event.rpartition(_EPOCH)
    return tail[: tail.index(b'"')].decode() if found else None
