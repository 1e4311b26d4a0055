"""The presence machine's blindness rules (issue 20), sans-I/O: an injected clock, effects run on the in-memory
BookStore exactly as the live server runs them on Redis.

While the store cannot be reached the machine holds each entry's latest operation and does not sweep; when the
store answers again the held operations are drained first; time spent blind (or with the driver's own loop
stalled) does not count towards expiry. A viewer that kept beating is never swept; a viewer that really went
silent is swept at most the blind time later.
"""

from __future__ import annotations

from collections.abc import Sequence

from rtlib.protocol.config import ServerConfig
from rtlib.protocol.presence import PresenceConfig
from rtlib.protocol.presence_machine import Deferred, Effect, PresenceMachine
from rtlib.protocol.presence_protocol import BookStore, Expire, Hold, Remove, Upsert
from rtlib.protocol.session import Session

CFG = PresenceConfig(heartbeat_interval=30, timeout=60, sweep_interval=5)


def _session(conn: str, user: str) -> Session:
    return Session(conn, user, "w1", ServerConfig())


def _run(store: BookStore, effects: Sequence[Effect]) -> list[str]:
    """Carry effects out on the book; the users whose entries a sweep popped."""
    gone: list[str] = []
    for effect in effects:
        op = effect.op if isinstance(effect, Deferred) else effect
        if isinstance(op, Upsert):
            store.upsert(op)
        elif isinstance(op, Remove):
            store.remove(op)
        elif isinstance(op, Hold):
            store.hold(op)
        elif isinstance(op, Expire):
            gone += [f.user_id for f in store.expire(op)]
    return gone


def test_while_blind_inputs_are_held_latest_per_entry_and_drained_first() -> None:
    m = PresenceMachine(CFG)
    a, b = _session("c1", "ann"), _session("c2", "bob")
    m.open(a)
    m.open(b)
    m.blind(100.0)
    assert m.receive(a, "presence.join", "t1", 101.0) == []
    assert m.receive(a, "presence.heartbeat", "t1", 131.0) == []  # the same entry: replaces the join...
    assert m.receive(b, "presence.join", "t1", 102.0) == []
    assert m.close(b, 103.0) == []  # ...and a close replaces bob's join
    assert m.pong(a, 134.0) == []
    held = m.sighted(140.0)
    assert [(d.cause, type(d.op).__name__, d.op.conn_id) for d in held] == [  # in the order of the latest inputs
        ("close", "Remove", "c2"),
        ("presence.join", "Upsert", "c1")]  # still a join (its presence.state is owed), at the latest beat
    assert isinstance(held[1].op, Upsert) and held[1].op.now == 134.0
    assert m.blind_since == 100.0  # still blind until the driver reports the drain done
    assert m.receive(a, "presence.heartbeat", "t1", 141.0) == []  # arrived during the drain: held too
    assert [d.op.now for d in m.sighted(142.0) if isinstance(d.op, Upsert)] == [141.0]
    assert m.sighted(143.0) == [] and m.blind_since is None
    assert m.receive(a, "presence.heartbeat", "t1", 144.0) != []  # sighted: effects are returned again


def test_no_sweep_while_blind_and_blind_time_does_not_count_afterwards() -> None:
    m = PresenceMachine(CFG)
    m.start(0.0)
    assert m.on_timer(5.0) and m.cutoff(5.0) == 5.0 - 60
    m.blind(10.0)
    assert m.on_timer(15.0) == [] and m.on_timer(40.0) == []  # no sweep while blind
    assert m.sighted(40.0) == []  # nothing held: blindness is over, 30 s of it
    [sweep] = m.on_timer(45.0)
    assert isinstance(sweep, Expire) and sweep.cutoff == 45.0 - 60 - 30
    assert m.cutoff(99.9) == 99.9 - 60 - 30  # the shift holds while the blind interval is within reach...
    assert m.cutoff(100.0) == 40.0  # ...and ends a timeout after it: entries beaten while blind are judged
    assert m.cutoff(130.0) == 70.0 and m._gaps == []  # then it is forgotten


def test_requeue_holds_failed_operations_behind_newer_ones_only_while_blind() -> None:
    m = PresenceMachine(CFG)
    s = _session("c1", "ann")
    m.open(s)
    [old] = m.receive(s, "presence.heartbeat", "t1", 10.0)
    assert isinstance(old, Upsert)
    assert m.requeue([Deferred(old, "presence.heartbeat")]) is False  # not an outage: dropped
    m.blind(9.0)
    m.receive(s, "presence.heartbeat", "t1", 12.0)
    [other] = m.close(_session("c9", "zed"), 12.5) or [None]  # a session with no tasks: nothing to hold
    assert other is None
    assert m.requeue([Deferred(old, "presence.heartbeat")]) is True
    [kept] = m.sighted(13.0)
    assert isinstance(kept.op, Upsert) and kept.op.now == 12.0  # the newer beat wins over the failed older one


def test_a_viewer_that_kept_beating_through_a_long_outage_is_never_swept() -> None:
    """Beats every 30 s, the store unreachable for 50 s (longer than timeout - interval): no departure."""
    m, store = PresenceMachine(CFG), BookStore()
    m.start(0.0)
    s = _session("c1", "ann")
    m.open(s)
    _run(store, m.receive(s, "presence.join", "t1", 1.0))
    gone: list[str] = []
    beat = 1.0
    t = 0.0
    while t < 400.0:
        t = round(t + 0.5, 6)
        if t == 31.5:
            m.blind(31.0)  # the last contact with the store
        if t == 81.5:
            while held := m.sighted(t):
                _run(store, held)
        if t >= beat + 30:
            beat = t
            _run(store, m.receive(s, "presence.heartbeat", "t1", t))
        if t >= m.next_deadline():
            gone += _run(store, m.on_timer(t))
    assert gone == []


def test_a_viewer_that_crashed_during_the_outage_is_swept_at_most_the_outage_later() -> None:
    m, store = PresenceMachine(CFG), BookStore()
    m.start(0.0)
    s = _session("c1", "ann")
    m.open(s)
    _run(store, m.receive(s, "presence.join", "t1", 1.0))
    m.blind(20.0)
    m.receive(s, "presence.heartbeat", "t1", 31.0)  # its last beat, held; then it crashes (silent)
    outage = 50.0 - 20.0
    swept_at = None
    t = 20.0
    while swept_at is None and t < 300:
        t = round(t + 0.25, 6)
        if t == 50.0:
            while held := m.sighted(t):
                _run(store, held)
        if t >= m.next_deadline() and _run(store, m.on_timer(t)) == ["ann"]:
            swept_at = t
    assert swept_at is not None
    assert swept_at <= 31.0 + CFG.timeout + outage + CFG.sweep_interval
    assert swept_at >= 31.0 + CFG.timeout  # never before its own timeout


def test_a_stalled_driver_does_not_count_the_stall() -> None:
    """The timer woke 40 s late (a stopped VM): beats still unread in the sockets are not judged by it."""
    m = PresenceMachine(CFG, stall_after=5.0)
    m.start(0.0)
    m.on_timer(5.0)
    [sweep] = m.on_timer(50.0)  # due at 10.0
    assert isinstance(sweep, Expire) and sweep.cutoff == 50.0 - 60 - 40
    lenient = PresenceMachine(CFG)  # without stall_after (the model): a late wake is just late
    lenient.start(0.0)
    [plain] = lenient.on_timer(50.0)
    assert isinstance(plain, Expire) and plain.cutoff == 50.0 - 60


def test_gaps_that_overlap_merge_and_a_leave_grace_counts_in_the_expiry() -> None:
    m = PresenceMachine(PresenceConfig(30, 60, 5, leave_grace=15))
    m.stalled(10.0, 20.0)
    m.stalled(15.0, 30.0)
    m.blind(25.0)
    assert m.sighted(40.0) == []
    assert m._gaps == [(10.0, 40.0)]
    assert m.cutoff(50.0) == 50.0 - 75 - 30
