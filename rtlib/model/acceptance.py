"""The acceptance rule of model-vs-live validation, in numbers that come from the design, and its pairing.

A live run and the model of it are compared **event by event, viewer by viewer**: every ``presence.joined`` and
``presence.left`` (with its reason) the servers published, at the server's own clock (the event's timestamp,
which a sweep and a request each read once), against the model's events for the same plan (it knows who crashes
when). Comparing stamps, not arrival at an observer, keeps the fan-out's delivery time out of it; what is left is
the lab's timing, bounded by numbers stated before the run:

* ``early`` (*a*): a live event may precede the model's by the lab's **measured clock error** (the clients
  schedule on the monotonic clock, the servers stamp with the wall clock) plus the stamps' resolution (1 µs,
  twice). Nothing more: the model takes every frame as sent on time and handled at once, so live can only be late;
* ``late`` (*b*): at most :data:`LATE_SHARE` of the run's **sweep interval** (0.4 s at 5 s), in design seconds:
  so at ``time_scale`` 0.05 the lab must keep every sweep, beat and wake within 20 ms of real time, at 0.1 within
  40 ms. Why that share: a probe answer lands half a probe tick from a sweep instant (0.5 s at 30 s, ticks of
  ``H / 30``), and the rule must still tell which side it fell on. The run's own lateness is *measured* (sweep
  stamps against the design's sweep instants, re-joins against the planned beats, the clients' wakes) and decides
  only whether the run was a valid trial, never the tolerance;
* a **race**, read from the model alone (its timing within ``w = a + b`` of a boundary the lab's lateness can
  cross): an entry's expiry (last write + timeout + grace), or the write or removal after it, within ``w`` of a
  sweep instant may pop one sweep ``S`` earlier or later, or not at all (a flap on one side only); a crash within
  ``w`` after its last beat may not have sent it (one beat ``H`` earlier); a probe due within ``w`` after a probe
  tick may leave at that tick's late wake instead of the next tick (its answer one tick early; with a crash just
  after that due time, one beat later). Nothing else is excused.

So a wrong model fails on every event that is not a race: a 10 s sweep, a timeout off by 5 s, a probe interval
× 1.5, a missing throttle or grace each move detections by seconds, far outside ``[-a, b]``. The power is shown,
not argued: each of :data:`rtlib.model.live.WRONG_MODELS` must fail.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LATE_SHARE", "Comparison", "Context", "Event", "Tolerance", "compare_events"]

#: The rule's lateness bound *b* as a share of the run's sweep interval (0.4 s at 5 s): below half a probe tick
#: (0.5 s at 30 s), and below ``rtlib.lab.realtime``'s overrun limit (10 % of the sweep interval).
LATE_SHARE = 0.08
#: Two timestamps' resolution (the wire carries microseconds), real seconds.
STAMP_RESOLUTION = 2e-6


@dataclass(frozen=True, slots=True)
class Event:
    """One published presence event: ``kind`` ``joined``/``left``, ``reason`` ``""`` for joins. ``given``: an
    event whose time the model takes from the live run (a request's arrival is the lab's, not a rule's)."""

    subject: str
    kind: str
    reason: str
    t: float
    given: bool = False


@dataclass(frozen=True)
class Tolerance:
    """The rule's numbers, design seconds: ``early`` (a), ``late`` (b), the model's sweep ``S``, beat ``H``,
    probe ``tick`` (0 in timer mode), expiry (timeout + grace) and sweep grid (instants ``k * S - offset``)."""

    early: float
    late: float
    sweep: float
    beat: float
    expiry: float
    offset: float
    tick: float = 0.0

    @classmethod
    def from_design(cls, config: Any, *, run_sweep: float, time_scale: float, clock_error: float, offset: float,
                    tick: float = 0.0) -> Tolerance:
        """``config``: the model's ``PresenceConfig``; ``run_sweep``: the live run's sweep interval (design s);
        ``clock_error``: real seconds."""
        return cls((abs(clock_error) + STAMP_RESOLUTION) / time_scale, LATE_SHARE * run_sweep,
                   config.sweep_interval, config.heartbeat_interval, config.expiry, offset, tick)

    @property
    def race(self) -> float:
        """``w``: how close to a decision boundary the model's timing is a race the live run may call otherwise."""
        return self.early + self.late

    def sweep_before(self, t: float) -> float:
        """The design sweep instant at or before ``t`` (live stamps are late, never early, by under a sweep; a
        stamp ``early`` before an instant is that instant, read on a clock a rounding error behind)."""
        return math.floor((t + self.early + self.offset) / self.sweep) * self.sweep - self.offset

    def within(self, delta: float, shift: float = 0.0, spread: float = 0.0) -> bool:
        return shift - spread - self.early <= delta <= shift + spread + self.late


@dataclass
class Context:
    """What the model knows per subject, for telling a race from an error: its write stamps (joins, beats and
    probe answers, sorted), the writes that may come one probe tick early (``early``), its removals (clean leaves
    and disconnects) and, per silent departure, the beat shifts it allows (``beat_shifts``: ``(depart, shift)``)."""

    writes: dict[str, np.ndarray]
    removals: dict[str, list[float]] = field(default_factory=dict)
    beat_shifts: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    early: dict[str, np.ndarray] = field(default_factory=dict)

    def _lead(self, subject: str, t: float, tol: Tolerance) -> float:
        """How much earlier than ``t`` the live run may have made the model's write at ``t``."""
        e = self.early.get(subject)
        return tol.tick if e is not None and len(e) and bool(np.isclose(e, t, rtol=0, atol=1e-9).any()) else 0.0

    def race_at(self, subject: str, g: float, tol: Tolerance) -> bool:
        """Whether a pop at sweep instant ``g`` is a race: the entry that could expire there expires within ``w``
        of ``g`` (and is not refreshed well before), or the write or removal after it lands within ``w`` of it."""
        w, ws = tol.race, self.writes.get(subject, np.array([]))
        i = int(np.searchsorted(ws, g + w + tol.tick - tol.expiry, side="right")) - 1
        if i < 0:
            return False
        s = float(ws[i])
        e_hi = s + tol.expiry
        e_lo = e_hi - self._lead(subject, s, tol)
        following = ([float(ws[i + 1])] if i + 1 < len(ws) else []) + [x for x in self.removals.get(subject, ())
                                                                       if x > s]
        n = min(following) if following else math.inf
        n_lo = n - (self._lead(subject, n, tol) if math.isfinite(n) else 0.0)
        return (e_lo - w <= g <= e_hi + w and n >= g - w) or n_lo - w <= g <= n + w

    def shifts(self, me: Event, tol: Tolerance) -> list[tuple[str, float, float]]:
        """The (label, shift, extra spread) a model event may be off by (module docstring)."""
        out: list[tuple[str, float, float]] = []
        if me.kind == "joined" and not me.given and self._lead(me.subject, me.t, tol):
            out.append(("one tick", -tol.tick, tol.race))
        if (me.kind, me.reason) != ("left", "timeout"):
            return out
        ws = self.writes.get(me.subject, np.array([]))
        i = int(np.searchsorted(ws, me.t - tol.expiry, side="right")) - 1
        if i >= 0:
            e = ws[i] + tol.expiry
            if 0 <= me.t - e <= tol.race:
                out.append(("one sweep", tol.sweep, 0.0))
            if e - self._lead(me.subject, float(ws[i]), tol) - (me.t - tol.sweep) <= tol.race:
                out.append(("one sweep", -tol.sweep, 0.0))
        for depart, shift in self.beat_shifts.get(me.subject, ()):
            if depart <= me.t:
                out.append(("one beat", shift, tol.sweep))
        return out


@dataclass
class Comparison:
    """The outcome: one row per event (``status``: ``exact``, ``one sweep``, ``one tick``, ``one beat``, ``race,
    model only``, ``race, live only``, ``UNEXPLAINED ...``), the counts, and :attr:`passed`."""

    rows: list[dict[str, Any]]
    tolerance: Tolerance
    model: Any = None  # the ModelRun compared (reports read it)

    @property
    def unexplained(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"].startswith("UNEXPLAINED")]

    @property
    def passed(self) -> bool:
        return not self.unexplained

    def summary(self) -> dict[str, Any]:
        """The numbers a report states: events on each side, the input ones (``given``), how the timed ones
        paired, their largest deviation when exact, and the tolerance (design s)."""
        status: dict[str, int] = defaultdict(int)
        for r in self.rows:
            status[r["status"]] += 1
        timed = [r for r in self.rows if not r["given"]]
        deltas = np.array([r["delta"] for r in timed if r["status"] == "exact"])
        tol = self.tolerance
        return {"events_model": sum(r["t_model"] is not None for r in self.rows),
                "events_live": sum(r["t_live"] is not None for r in self.rows),
                "given": len(self.rows) - len(timed), "compared": len(timed), "exact": int(len(deltas)),
                "one_sweep": status["one sweep"], "one_tick": status["one tick"], "one_beat": status["one beat"],
                "race_model_only": status["race, model only"], "race_live_only": status["race, live only"],
                "unexplained": len(self.unexplained),
                "max_delta": float(np.abs(deltas).max()) if len(deltas) else math.nan,
                "min_delta": float(deltas.min()) if len(deltas) else math.nan,
                "tol_early": tol.early, "tol_late": tol.late, "race_band": tol.race, "passed": self.passed}


def compare_events(model: list[Event], live: list[Event], ctx: Context, tol: Tolerance) -> Comparison:
    """Pair ``model`` and ``live`` events per (subject, kind, reason) under ``tol`` (module docstring): first
    within ``[-a, b]``, then shifted where the model's timing makes it a race; the rest one-sided."""
    rows: list[dict[str, Any]] = []
    m_by: dict[tuple[str, str, str], list[Event]] = defaultdict(list)
    l_by: dict[tuple[str, str, str], list[Event]] = defaultdict(list)
    for e in model:
        m_by[(e.subject, e.kind, e.reason)].append(e)
    for e in live:
        l_by[(e.subject, e.kind, e.reason)].append(e)
    for key in sorted(set(m_by) | set(l_by)):
        ms, ls = sorted(m_by[key], key=lambda e: e.t), sorted(l_by[key], key=lambda e: e.t)
        used: set[int] = set()
        pending: list[Event] = []
        for me in ms:
            j = _first(ls, used, lambda t, me=me: tol.within(t - me.t))
            if j is None:
                pending.append(me)
            else:
                used.add(j)
                rows.append(_row(me, ls[j], "exact"))
        for me in pending:
            hit = None
            for name, shift, spread in ctx.shifts(me, tol):
                j = _first(ls, used, lambda t, me=me, s=shift, p=spread: tol.within(t - me.t, s, p))
                if j is not None:
                    hit = (name, j)
                    break
            if hit is None:
                rows.append(_row(me, None, "model only"))
            else:
                used.add(hit[1])
                rows.append(_row(me, ls[hit[1]], hit[0]))
        rows += [_row(None, le, "live only") for j, le in enumerate(ls) if j not in used]
    _explain(rows, ctx, tol)
    rows.sort(key=lambda r: (r["subject"], r["t_model"] if r["t_model"] is not None else r["t_live"]))
    return Comparison(rows, tol)


def _first(ls: list[Event], used: set[int], ok: Any) -> int | None:
    for j, le in enumerate(ls):
        if j not in used and ok(le.t):
            return j
    return None


def _row(me: Event | None, le: Event | None, status: str) -> dict[str, Any]:
    e = me or le
    assert e is not None
    return {"subject": e.subject, "kind": e.kind, "reason": e.reason, "given": bool(me and me.given),
            "t_model": me.t if me else None, "t_live": le.t if le else None,
            "delta": (le.t - me.t) if me and le else None, "status": status}


def _explain(rows: list[dict[str, Any]], ctx: Context, tol: Tolerance) -> None:
    """Turn each ``model only`` / ``live only`` row into a race or an UNEXPLAINED one: a timeout at a race
    (:meth:`Context.race_at`), the re-join of such a flap, a clean leave or disconnect that such a pop beat."""
    one_sided = [k for k, r in enumerate(rows) if r["status"] in ("model only", "live only")]
    ok: set[int] = set()
    for k in one_sided:
        r = rows[k]
        if (r["kind"], r["reason"]) == ("left", "timeout"):
            g = r["t_model"] if r["t_model"] is not None else tol.sweep_before(r["t_live"])
            if ctx.race_at(r["subject"], g, tol):
                ok.add(k)
    for k in one_sided:
        r = rows[k]
        side = "t_model" if r["t_model"] is not None else "t_live"
        other = "t_live" if side == "t_model" else "t_model"
        t = r[side]
        if r["kind"] == "joined" and not r["given"]:
            before = [(q[side], i) for i, q in enumerate(rows) if q["subject"] == r["subject"]
                      and q["kind"] == "left" and q[side] is not None and q[side] <= t]
            if before and max(before)[1] in ok:
                ok.add(k)
        elif r["kind"] == "left" and r["reason"] in ("leave", "disconnect"):
            if any(i in ok and rows[i]["subject"] == r["subject"] and rows[i][other] is not None
                   and t - tol.sweep - tol.race <= rows[i][other] <= t + tol.race for i in one_sided):
                ok.add(k)
    for k in one_sided:
        rows[k]["status"] = ("race, " if k in ok else "UNEXPLAINED: ") + rows[k]["status"]
