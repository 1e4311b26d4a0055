"""Design time on a real clock, with its overruns reported (SimPy's ``RealtimeEnvironment``, for the lab).

A live lab run plays its clients' schedules in *design* seconds compressed by ``time_scale`` (0.05: a 30 s
heartbeat every 1.5 s of wall time). The servers are real processes with real clocks, so their presence timing
is scaled to match; what compression cannot do is make the machine faster. When the clients' event loop is
busy, a wake scheduled for design second ``t`` happens later, and every presence measurement (detection delays,
false departures) is off by that much, silently. SimPy's real-time environment refuses to go on when it falls
behind (``strict``); the lab measures instead: every wake records how late it ran, in design seconds, and
:func:`overrun_report` says whether the run kept real time (:meth:`rtlib.lab.results.Results.summary` carries
it, and ``rtlib simulate`` warns).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["OVERRUN_FRACTION", "RealtimeClock", "overrun_report"]

#: A wake later than this share of the sweep interval is an overrun: by then it could move a departure to the
#: next sweep, which the run would report as the design's behaviour.
OVERRUN_FRACTION = 0.1


@dataclass
class RealtimeClock:
    """Design seconds since ``t0`` (a monotonic time) at ``time_scale`` wall seconds per design second; each
    :meth:`sleep_until` appends its lateness (design seconds, >= 0) to ``lateness``."""

    t0: float
    time_scale: float
    lateness: list[float]

    def now(self) -> float:
        return (time.monotonic() - self.t0) / self.time_scale

    async def sleep_until(self, design_t: float) -> float:
        """Wake at design second ``design_t``; returns (and records) how late the wake ran."""
        delay = self.t0 + design_t * self.time_scale - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        late = max(0.0, self.now() - design_t)
        self.lateness.append(late)
        return late


def overrun_report(lateness: Sequence[float], sweep_interval: float, time_scale: float) -> dict[str, Any]:
    """How well a run kept real time: its wakes' lateness quantiles (design seconds), the overruns (wakes later
    than :data:`OVERRUN_FRACTION` of the sweep interval) and whether the run counts as real-time (at most 1 % of
    its wakes overran)."""
    n = len(lateness)
    limit = OVERRUN_FRACTION * sweep_interval
    if not n:
        return {"wakes": 0, "overrun_limit_s": limit, "overruns": 0, "kept_real_time": True}
    ordered = sorted(lateness)

    def q(p: float) -> float:
        return round(ordered[min(n - 1, math.ceil(p * n) - 1)], 4)

    overruns = sum(1 for x in ordered if x > limit)
    return {"wakes": n, "late_p50_s": q(0.5), "late_p99_s": q(0.99), "late_max_s": round(ordered[-1], 4),
            "late_max_wall_ms": round(ordered[-1] * time_scale * 1000, 2), "overrun_limit_s": limit,
            "overruns": overruns, "kept_real_time": overruns <= 0.01 * n}
