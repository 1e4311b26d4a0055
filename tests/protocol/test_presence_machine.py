"""The presence machine, sans-I/O: an injected clock, no sleeping, effects checked as data."""

from __future__ import annotations

import math

from rtlib.protocol.config import ServerConfig
from rtlib.protocol.presence import PresenceConfig
from rtlib.protocol.presence_machine import PresenceMachine, Send, sweep_instants
from rtlib.protocol.presence_protocol import Expire, Hold, Remove, Upsert
from rtlib.protocol.probes import TICK_PHASE, TICKS_PER_INTERVAL
from rtlib.protocol.session import Session

CFG = PresenceConfig(heartbeat_interval=30, timeout=60, sweep_interval=5)


def _session(conn: str = "c1", user: str = "u1", grace: float = 0.0) -> Session:
    return Session(conn, user, "w1", ServerConfig(leave_grace=grace))


def test_sweeps_on_the_aligned_grid_and_cuts_off_at_the_time_read() -> None:
    m = PresenceMachine(CFG)
    assert m.next_deadline() == math.inf  # not started: no timer
    m.start(1001.2)
    assert m.next_deadline() == 1005.0
    effects = m.on_timer(1005.004)  # woke 4 ms late: the cutoff is from what it read
    assert effects == [m.protocol.sweep(1005.004)]
    assert isinstance(effects[0], Expire) and effects[0].cutoff == 1005.004 - 60
    assert m.next_deadline() == 1010.0


def test_an_early_call_does_nothing_and_a_late_wake_skips_the_sweeps_in_between() -> None:
    m = PresenceMachine(CFG)
    m.start(1000.0)
    assert m.on_timer(1004.9) == []
    assert len(m.on_timer(1017.0)) == 1  # 1005, 1010, 1015 were missed: one sweep pops all they would have
    assert m.next_deadline() == 1020.0


def test_requests_pong_and_close_are_store_operations() -> None:
    m = PresenceMachine(CFG)
    s = _session()
    m.open(s)
    [join] = m.receive(s, "presence.join", "t1", 10.0)
    assert isinstance(join, Upsert) and (join.task_id, join.now) == ("t1", 10.0)
    m.receive(s, "presence.join", "t2", 11.0)
    pong = m.pong(s, 12.0)
    assert [(op.task_id, op.now) for op in pong] == [("t1", 12.0), ("t2", 12.0)]
    [leave] = m.receive(s, "presence.leave", "t2", 13.0)
    assert isinstance(leave, Remove)
    closed = m.close(s, 14.0, clean=True)
    assert [type(op) for op in closed] == [Remove] and closed[0].task_id == "t1"
    assert s.conn_id not in m.sessions


def test_a_lost_connection_with_a_leave_grace_is_held() -> None:
    m = PresenceMachine(PresenceConfig(30, 60, 5, leave_grace=15))
    s = _session(grace=15)
    m.open(s)
    m.receive(s, "presence.join", "t1", 10.0)
    [hold] = m.close(s, 20.0, clean=False)
    assert isinstance(hold, Hold) and hold.score == 20.0 - 60


def test_probe_mode_sends_each_viewing_connection_a_probe_every_interval() -> None:
    m = PresenceMachine(CFG, probe_interval=30.0)
    m.start(0.0)
    s = _session()
    m.open(s)
    m.receive(s, "presence.join", "t1", 2.0)
    tick = 30.0 / TICKS_PER_INTERVAL
    first_tick = math.ceil((32.0 - TICK_PHASE * tick) / tick) * tick + TICK_PHASE * tick
    sent: list[tuple[float, Send]] = []
    while (at := m.next_deadline()) <= 100:
        sent += [(at, e) for e in m.on_timer(at) if isinstance(e, Send)]
    assert [t for t, _ in sent] == [first_tick, first_tick + 30, first_tick + 60]
    assert all(e.conn_id == "c1" and b'"presence.probe"' in e.frame for _, e in sent)
    m.close(s, 100.0)
    while (at := m.next_deadline()) <= 200:
        assert not [e for e in m.on_timer(at) if isinstance(e, Send)]  # closed: no more probes


def test_probe_deadlines_wake_only_when_something_is_due() -> None:
    m = PresenceMachine(PresenceConfig(30, 60, 1000), probe_interval=30.0)
    m.start(0.0)
    assert m.next_deadline() == 1000.0  # no viewer: only the sweep
    s = _session()
    m.open(s)
    m.receive(s, "presence.join", "t1", 5.0)
    assert 35.0 <= m.next_deadline() < 36.0


def test_sweep_instants_are_the_machines_own_wakes() -> None:
    lags = [0.001 * k for k in range(100)]
    got = sweep_instants(CFG, 3.0, 60.0, lambda k: lags[k])
    m = PresenceMachine(CFG)
    m.start(3.0)
    want = []
    while (at := m.next_deadline()) <= 60.0:
        want.append(at + lags[len(want)])
        m.on_timer(want[-1])
    assert got == want and got[0] == 5.0 and len(got) == 12
