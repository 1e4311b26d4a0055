"""The probe schedule (presence mode "probe"), with an injected clock: who is probed when, and what a pong does."""

from __future__ import annotations

import json

import pytest

from rtlib.protocol.config import ServerConfig
from rtlib.protocol.presence_protocol import Hold, PresenceProtocol, Remove, Upsert
from rtlib.protocol.probes import TICKS_PER_INTERVAL, Prober
from rtlib.protocol.session import Session

CONFIG = ServerConfig(heartbeat_interval=30, presence_timeout=60, sweep_interval=5, presence_mode="probe")


def session(conn: str = "c1", user: str = "alice") -> Session:
    return Session(conn, user, "w1", CONFIG)


def test_a_viewing_connection_is_probed_every_interval_from_its_first_join() -> None:
    prober, protocol = Prober(30.0), PresenceProtocol(CONFIG.presence)
    s = session()
    sessions = {s.conn_id: s}
    prober.watch(s, 100.0)
    assert len(prober) == 0, "a connection that views nothing is not probed"
    protocol.request(s, "presence.join", "T-1", 100.0)
    prober.watch(s, 100.0)
    protocol.request(s, "presence.join", "T-2", 110.0)
    prober.watch(s, 110.0)  # already scheduled: a second task does not add a second probe
    assert prober.due(129.99, sessions) == []
    (got, frame), = prober.due(130.0, sessions)
    event = json.loads(frame)
    assert got is s and event["type"] == "presence.probe" and event["payload"] == {"seq": 1}
    assert event["userId"] == "alice" and event["workspaceId"] == "w1"
    assert prober.due(159.0, sessions) == []
    assert [json.loads(f)["payload"]["seq"] for _, f in prober.due(160.5, sessions)] == [2]
    # A driver that fell far behind probes once, then one interval after now (no burst of catch-up probes).
    assert len(prober.due(300.0, sessions)) == 1
    assert prober.due(329.0, sessions) == [] and len(prober.due(330.0, sessions)) == 1


def test_probes_stop_when_the_connection_views_nothing_or_closes_and_restart_on_a_join() -> None:
    prober, protocol = Prober(30.0), PresenceProtocol(CONFIG.presence)
    a, b = session("c1"), session("c2", "bob")
    sessions = {a.conn_id: a, b.conn_id: b}
    for s in (a, b):
        protocol.request(s, "presence.join", "T-1", 0.0)
        prober.watch(s, 0.0)
    protocol.request(a, "presence.leave", "T-1", 10.0)
    del sessions[b.conn_id]  # b closed
    assert prober.due(30.0, sessions) == [] and len(prober) == 0
    protocol.request(a, "presence.join", "T-3", 40.0)
    prober.watch(a, 40.0)
    assert [s for s, _ in prober.due(70.0, sessions)] == [a]


def test_ticks_are_a_thirtieth_of_the_interval_half_a_tick_off_the_sweep_grid() -> None:
    prober = Prober(30.0)
    assert prober.tick == 30.0 / TICKS_PER_INTERVAL == 1.0
    assert prober.next_tick(100.0) == 100.5 and prober.next_tick(100.2) == 100.5
    assert prober.next_tick(100.5) == 101.5 and prober.next_tick(100.7) == 101.5
    # A chain of wake-ups never stalls on one tick, whatever the float rounding of odd intervals.
    for interval in (0.3, 0.7, 1.1, 29.9, 30.0):
        p, now = Prober(interval), 1_700_000_000.123
        for _ in range(200):
            nxt = p.next_tick(now)
            assert now < nxt <= now + p.tick + 1e-6  # (Unix times near 1.7e9: float spacing 2.4e-7)
            now = nxt
    with pytest.raises(ValueError):
        Prober(0.0)


def test_a_pong_is_a_heartbeat_of_every_viewed_task() -> None:
    protocol, s = PresenceProtocol(CONFIG.presence), session()
    assert protocol.pong(s, 5.0) == []
    for task in ("T-2", "T-1"):
        protocol.request(s, "presence.join", task, 1.0)
    ops = protocol.pong(s, 5.0)
    assert [(op.task_id, op.now) for op in ops] == [("T-1", 5.0), ("T-2", 5.0)]
    assert all(isinstance(op, Upsert) for op in ops)


def test_a_lost_connection_is_held_for_the_grace_a_clean_close_is_not() -> None:
    graced = ServerConfig(presence_timeout=60, leave_grace=15).presence
    protocol = PresenceProtocol(graced)
    s = session()
    protocol.request(s, "presence.join", "T-1", 0.0)
    (hold,) = protocol.disconnect(s, 100.0, clean=False)
    assert hold == Hold("w1", "T-1", "c1", "alice", 40.0) and s.tasks == set()
    # Back-dated to now - timeout: the first cutoff that reaches it is now + grace.
    assert graced.cutoff(115.0) == hold.score and graced.cutoff(114.9) < hold.score
    protocol.request(s, "presence.join", "T-1", 0.0)
    assert all(isinstance(op, Remove) for op in protocol.disconnect(s, 100.0, clean=True))
    protocol.request(s, "presence.join", "T-1", 0.0)
    no_grace = PresenceProtocol(CONFIG.presence)
    assert all(isinstance(op, Remove) for op in no_grace.disconnect(s, 100.0, clean=False))


def test_the_grace_delays_expiry_and_is_validated() -> None:
    cfg = ServerConfig(presence_timeout=60, sweep_interval=5, leave_grace=15).presence
    assert cfg.expiry == 75 and cfg.cutoff(1000.0) == 925.0 and cfg.worst_case_detection() == 80
    with pytest.raises(ValueError, match="leave_grace"):
        ServerConfig(leave_grace=-1)
    with pytest.raises(ValueError, match="presence_mode"):
        ServerConfig(presence_mode="push")  # type: ignore[arg-type]
