"""What the server makes of a client's beats, analytically: the gaps between them and the false departures.

These apply the server's own presence rule (:meth:`rtlib.protocol.presence.PresenceConfig.popped_at`) to a
list of :class:`~rtlib.clientmodels.heartbeat.Beat` s, without a store or a clock: fast enough for a grid of
heartbeat x timeout x sweep settings in the presence notebook. The virtual-time model (:mod:`rtlib.model`)
is the full treatment (network, instances, skew).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

from rtlib.clientmodels.heartbeat import Beat, positive
from rtlib.protocol.presence import PresenceConfig

__all__ = ["false_departures", "gaps"]


def gaps(beats: Iterable[Beat], start: float) -> list[float]:
    """Seconds between consecutive *delivered* beats, the first measured from the join at ``start``."""
    out, last = [], start
    for beat in beats:
        if beat.delivered:
            out.append(beat.t - last)
            last = beat.t
    return out


def false_departures(beats: Iterable[Beat], start: float, end: float, timeout: float, sweep_interval: float,
                     *, ties: Literal["sweep_first", "beat_first"] = "sweep_first") -> list[float]:
    """When a server would declare a user gone who never left, for a user joined at ``start`` until ``end``.

    The server's rule (:meth:`rtlib.protocol.presence.PresenceConfig.popped_at`): sweeps run at the
    absolute multiples of ``sweep_interval`` (Unix time, the same phase on every instance) and pop an entry
    whose last heartbeat is ``<= now - timeout`` (inclusive). So the
    user is declared gone at the first sweep ``s >= last + timeout``, if ``s <= end`` and ``s`` comes
    before the next delivered beat; that beat re-adds the entry (a re-join: one "flap").

    ``ties`` orders a sweep and a beat at the very same instant. Because expiry is inclusive, a gap of
    *exactly* ``timeout`` expires the entry at the boundary, and with ``"sweep_first"`` (the default, the
    pessimistic and the usual live outcome, since the beat also needs network time to land) a sweep there
    counts as a departure. ``"beat_first"`` counts only sweeps strictly before the beat.
    """
    positive("timeout", timeout)
    positive("sweep_interval", sweep_interval)
    schedule = PresenceConfig(timeout=timeout, sweep_interval=sweep_interval)  # the live sweeper's schedule
    departures: list[float] = []
    last = start
    for t in [b.t for b in beats if b.delivered] + [math.inf]:
        sweep = schedule.popped_at(last)  # the server's own rule, not a restatement
        before_beat = sweep <= t if ties == "sweep_first" else sweep < t
        if before_beat and sweep <= end:
            departures.append(sweep)
        last = t
    return departures
