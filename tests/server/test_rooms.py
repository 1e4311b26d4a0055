"""The fan-out's room batch (rtlib.server.rooms): what each peer is written, in what order, with one frame list per
room. Fake transports record the writes; no network, no Redis."""

from __future__ import annotations

from typing import Any

from websockets.protocol import State

from rtlib.server.fanout import Fanout, Peer, text_frame
from rtlib.server.keyspace import frame


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return 0


class FakeProtocol:
    state = State.OPEN


class FakeConnection:
    def __init__(self) -> None:
        self.protocol: Any = FakeProtocol()
        self.transport = FakeTransport()


async def _subscribed(verb: bytes, chan: bytes) -> None:  # no Redis: a SUBSCRIBE is taken as confirmed
    return None


async def _fanout(peers: int) -> tuple[Fanout, list[Peer]]:
    fanout = Fanout()
    fanout._command = _subscribed  # type: ignore[method-assign]
    members = [Peer(f"c{i}", "w", FakeConnection()) for i in range(peers)]
    for peer in members:
        await fanout.add(peer)
    return fanout, members


def _written(peer: Peer) -> bytes:
    return b"".join(peer.connection.transport.writes)


async def test_every_peer_but_the_sender_gets_the_events_in_one_write() -> None:
    fanout, (a, b, c) = await _fanout(3)
    fanout.deliver("w", frame(b'{"n":1}', "c0"))
    fanout.deliver("w", frame(b'{"n":2}', "c1"))
    fanout.flush()
    assert _written(a) == text_frame(b'{"n":2}')
    assert _written(b) == text_frame(b'{"n":1}')
    assert c.connection.transport.writes == [text_frame(b'{"n":1}') + text_frame(b'{"n":2}')]  # one write for both


async def test_a_direct_reply_keeps_its_place_among_the_room_events() -> None:
    fanout, (a, b) = await _fanout(2)
    fanout.deliver("w", frame(b'{"n":1}'))
    fanout.send(a, b'{"ack":1}')
    fanout.deliver("w", frame(b'{"n":2}'))
    fanout.flush()
    assert a.connection.transport.writes == [text_frame(b'{"n":1}') + text_frame(b'{"ack":1}') + text_frame(b'{"n":2}')]
    assert b.connection.transport.writes == [text_frame(b'{"n":1}') + text_frame(b'{"n":2}')]
    fanout.deliver("w", frame(b'{"n":3}'))  # the next turn: a is back on the room's list
    fanout.flush()
    assert a.connection.transport.writes[-1] == b.connection.transport.writes[-1] == text_frame(b'{"n":3}')


async def test_a_late_joiner_gets_only_what_came_after_it_joined() -> None:
    fanout, (a,) = await _fanout(1)
    fanout.deliver("w", frame(b'{"n":1}'))
    late = Peer("late", "w", FakeConnection())
    await fanout.add(late)
    fanout.deliver("w", frame(b'{"n":2}'))
    fanout.flush()
    assert _written(a) == text_frame(b'{"n":1}') + text_frame(b'{"n":2}')
    assert _written(late) == text_frame(b'{"n":2}')


async def test_a_held_peer_keeps_events_until_released_and_replies_still_go_out() -> None:
    fanout = Fanout()
    fanout._command = _subscribed  # type: ignore[method-assign]
    resuming = Peer("r", "w", FakeConnection())
    resuming.held = []
    await fanout.add(resuming)
    fanout.send(resuming, b'{"welcome":1}')
    fanout.deliver("w", frame(b'{"n":1}'))
    fanout.flush()
    fanout.deliver("w", frame(b'{"n":2}'))
    fanout.flush()
    assert _written(resuming) == text_frame(b'{"welcome":1}')
    assert resuming.held == [b'{"n":1}', b'{"n":2}']
    resuming.held = None  # released: live events flow again
    fanout.deliver("w", frame(b'{"n":3}'))
    fanout.flush()
    fanout.deliver("w", frame(b'{"n":4}'))
    fanout.flush()
    assert resuming.connection.transport.writes[1:] == [text_frame(b'{"n":3}'), text_frame(b'{"n":4}')]


async def test_a_closing_peer_gets_no_data_frame_and_flush_peer_sends_what_is_owed() -> None:
    fanout, (a, b) = await _fanout(2)
    fanout.deliver("w", frame(b'{"n":1}'))
    fanout.flush_peer(a)  # before a close: the room's queued events go out first
    assert _written(a) == _written(b) == text_frame(b'{"n":1}')
    b.connection.protocol.state = State.CLOSING
    fanout.deliver("w", frame(b'{"n":2}'))
    fanout.flush()
    assert _written(b) == text_frame(b'{"n":1}')
    assert _written(a) == text_frame(b'{"n":1}') + text_frame(b'{"n":2}')
