"""Chromium's timer throttling, deterministic and trace-driven: when a page's heartbeat actually fires, for a
GIVEN hide/show schedule and a GIVEN phase of Chromium's monotonic clock against the wall clock.

One rule for every user of it: :class:`rtlib.clientmodels.heartbeat.ChromeHiddenTab` draws random hide/show
episodes and asks :func:`interval_fires` when its ``setInterval`` fires; ``tests/model/test_chromium_traces.py``
replays the schedules recorded by ``bench/presence/chromium_presence.py`` (``notebooks/data/chromium_*.json``)
through the same functions and compares the beats with what the server received.

What the model encodes, each rule measured in the recordings (Debian's Chromium 156, headless, Linux; the
numbers are in :data:`CHROMIUM`; every recorded beat is reproduced within a few ms):

* a ``setInterval`` is drift-free (Blink's ``TimerBase``): its due times stay on the grid
  ``origin + k * interval`` however late a throttled run was; after a run at ``t`` the next one is due at the
  first grid point after ``t``;
* a hidden page's timers run at the first whole second of the monotonic clock (``CLOCK_MONOTONIC``,
  Chromium's ``TimeTicks``, the same clock as Python's ``time.monotonic()``) at or after the due time;
* *intensive* throttling: a timer whose next whole-second wake-up comes more than ``grace`` seconds after
  the page was hidden (recorded: 60.000 s after, unthrottled; 60.361 s after, throttled: 1 minute; Chrome's
  documentation says 5), and that has already run ``chain`` times (recorded: an interval's 6th run is never
  intensively throttled, its 7th is), runs only at whole minutes of the monotonic clock. So a 30 s heartbeat
  hidden for 150 s shows one gap of 30-90 s (the first minute-aligned run; 40-78 s were recorded) and a long
  hide 60.00 s gaps; an open WebSocket does not exempt the page;
* showing the page runs an overdue timer at once (the visibility change lifts the throttling), so a gap
  shorter than the interval can follow, to the next grid point;
* restarting the timer (``clearInterval`` + ``setInterval``, as the visibility beat does) starts a new grid and
  a new chain: it is second-aligned again for its first ``chain`` runs (3 minutes at 30 s);
* message handlers (``WebSocket.onmessage``, ``visibilitychange``) are not timers: a probe answered from one,
  or a beat sent from one, leaves within milliseconds of the event, hidden or not.

Times are Unix seconds (the server's clock, which also schedules the sweeps); ``mono_offset`` is
``monotonic - wall`` (what ``time.monotonic() - time.time()`` gives on the same machine), so alignment to
whole seconds or minutes of the monotonic clock happens at wall times ``w`` with ``(w + mono_offset) % step == 0``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rtlib.protocol.presence import PresenceConfig

__all__ = [
    "ALIGN_EPS",
    "CHROMIUM",
    "GRACE_SLOP",
    "GRID_EPS",
    "Throttling",
    "aligned",
    "interval_fires",
    "probe_beats",
    "server_view",
    "visibility_beats",
]

# A run lands within this many intervals of a grid point it was due on (floating point, not a model parameter).
# Public, with GRACE_SLOP and ALIGN_EPS, because rtlib.model.chrome_beats computes the same rule on arrays and
# must use the very same constants to give the very same floats.
GRID_EPS = 1e-6
# A wake-up this close to the end of the grace counts as before it: the page's visibilitychange time has 1 ms
# steps, and Chromium's own end-of-grace task races a wake-up on the same millisecond (recorded: a wake-up
# 60.000 s after the event ran unthrottled, one 60.361 s after did not).
GRACE_SLOP = 0.002
# A run due exactly on an alignment boundary runs on it, not a step later (floating point).
ALIGN_EPS = 1e-9


@dataclass(frozen=True)
class Throttling:
    """The parameters of Chromium's timer throttling of a hidden page (see the module docstring)."""

    grace: float = 60.0  # hidden this long before intensive (once-a-minute) throttling applies
    align: float = 60.0  # intensive wake-ups: multiples of this on the monotonic clock
    second: float = 1.0  # ordinary hidden-page wake-ups: multiples of this
    chain: int = 6  # an interval that already ran this many times is intensively throttled

    def __post_init__(self) -> None:
        for name in ("align", "second"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not (math.isfinite(self.grace) and self.grace >= 0 and self.chain >= 0):
            raise ValueError(f"grace and chain must be non-negative, got {self.grace!r}, {self.chain!r}")


#: Calibrated on the recordings in ``notebooks/data/chromium_*.json`` (Chromium 156, headless, Linux).
CHROMIUM = Throttling()


def aligned(t: float, step: float, mono_offset: float) -> float:
    """The first wall time ``>= t`` that is a whole multiple of ``step`` on the monotonic clock."""
    m = t + mono_offset
    k = math.ceil(m / step - ALIGN_EPS)
    return k * step - mono_offset


def _hidden_at(t: float, hidden: Sequence[tuple[float, float]], starts: list[float]) -> tuple[float, float] | None:
    """The hidden period holding ``t`` (``starts``: the periods' begins, for a binary search: the model runs
    over thousands of viewer-hours)."""
    i = bisect.bisect_right(starts, t) - 1
    return hidden[i] if i >= 0 and t < hidden[i][1] else None


def interval_fires(origin: float, end: float, interval: float, hidden: Sequence[tuple[float, float]], *,
                   mono_offset: float = 0.0, throttling: Throttling = CHROMIUM,
                   restarts: Iterable[float] = ()) -> list[float]:
    """When a ``setInterval(interval)`` started at ``origin`` runs, up to ``end``, in a page that is hidden
    during each ``(begin, end)`` of ``hidden`` (sorted, disjoint). ``restarts``: times at which the page
    clears and sets the interval again (a new grid from there, nesting level reset); a restart at the very
    moment a throttled run was due replaces that run."""
    if not interval > 0:
        raise ValueError(f"interval must be positive, got {interval!r}")
    pending = sorted(r for r in restarts if r > origin)
    starts = [h0 for h0, _ in hidden]
    fires: list[float] = []
    runs, due = 0, origin + interval
    while True:
        fire = due
        period = _hidden_at(due, hidden, starts)
        if period is not None:
            h0, h1 = period
            # The grace is judged at the wake-up the timer would get (the next whole second), not its due time.
            wake = aligned(due, throttling.second, mono_offset)
            if runs >= throttling.chain and wake - h0 > throttling.grace + GRACE_SLOP:
                wake = aligned(due, throttling.align, mono_offset)
            fire = min(wake, h1)  # shown again: the overdue run happens at once
        if pending and pending[0] <= fire:
            origin = pending.pop(0)
            runs, due = 0, origin + interval
            continue
        if fire > end:
            return fires
        fires.append(fire)
        runs += 1
        # Drift-free (Blink's TimerBase): the next grid point strictly after this run.
        due = origin + interval * (math.floor((fire - origin) / interval + GRID_EPS) + 1)


def visibility_beats(origin: float, end: float, interval: float, hidden: Sequence[tuple[float, float]], *,
                     mono_offset: float = 0.0, throttling: Throttling = CHROMIUM) -> list[float]:
    """The ``--visibility-beat`` client: a beat from the ``visibilitychange`` handler at every hide and show
    (handlers are not throttled), and the heartbeat interval restarted there, so its grid and its nesting level
    start again at every change."""
    changes = sorted({t for period in hidden for t in period if origin < t <= end})
    fires = interval_fires(origin, end, interval, hidden, mono_offset=mono_offset, throttling=throttling,
                           restarts=changes)
    return sorted(fires + changes)


def probe_beats(probes: Iterable[float], delay: float = 0.003) -> list[float]:
    """The ``--presence-mode probe`` client: it answers each server probe from its message handler, which a
    hidden page runs within milliseconds, so its beats are the probe times plus ``delay`` whatever the timers."""
    return sorted(p + delay for p in probes)


def server_view(attempts: Iterable[float], join: float, end: float, *, timeout: float = 60.0,
                sweep_interval: float = 5.0, grace: float = 0.0, rejoin_delay: float = 0.005
                ) -> tuple[list[float], list[float]]:
    """What the server makes of a viewer who joined at ``join`` and then beat at ``attempts``, up to ``end``:
    ``(beats received, flaps)``. The live rule (:meth:`PresenceConfig.popped_at` and
    :attr:`PresenceConfig.expiry`): sweeps at the absolute multiples of ``sweep_interval`` pop an entry
    ``timeout + grace`` old or older, and announce ``presence.left`` (a sweep at the very instant of a beat pops
    it first: the beat still needs network time to land). rtlib-client.js answers its own timeout
    ``presence.left`` with a ``presence.join`` from its message handler, ``rejoin_delay`` later: that is a beat
    too (and the page's timer grid goes on unchanged)."""
    schedule = PresenceConfig(timeout=timeout, sweep_interval=sweep_interval, leave_grace=grace)
    queue = sorted(a for a in attempts if join < a <= end)
    beats, flaps, last, i = [join], [], join, 0
    while True:
        nxt = queue[i] if i < len(queue) else math.inf
        sweep = schedule.popped_at(last)  # the server's own rule, not a restatement
        if sweep <= nxt and sweep <= end:
            flaps.append(sweep)
            last = sweep + rejoin_delay  # the page's re-join
            beats.append(last)
            continue
        if nxt > end:
            return beats, flaps
        beats.append(nxt)
        last, i = nxt, i + 1
