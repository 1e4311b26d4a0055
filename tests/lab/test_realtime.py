"""The lab's real-time clock reports when a compressed run fell behind, instead of hiding it."""

from __future__ import annotations

import asyncio
import time

from rtlib.lab.realtime import OVERRUN_FRACTION, RealtimeClock, overrun_report


def test_report_counts_overruns_past_a_share_of_the_sweep_interval() -> None:
    limit = OVERRUN_FRACTION * 5.0
    on_time = overrun_report([0.0] * 990 + [limit * 2] * 10, sweep_interval=5.0, time_scale=0.05)
    assert on_time["overruns"] == 10 and on_time["kept_real_time"] and on_time["late_max_s"] == limit * 2
    assert on_time["late_max_wall_ms"] == round(limit * 2 * 0.05 * 1000, 2)
    behind = overrun_report([0.0] * 980 + [limit * 2] * 20, sweep_interval=5.0, time_scale=0.05)
    assert behind["overruns"] == 20 and not behind["kept_real_time"]
    assert overrun_report([], 5.0, 1.0) == {"wakes": 0, "overrun_limit_s": limit, "overruns": 0,
                                            "kept_real_time": True}


async def test_a_blocked_loop_shows_up_as_lateness_in_design_seconds() -> None:
    lateness: list[float] = []
    clock = RealtimeClock(time.monotonic(), 0.01, lateness)  # 1 design second = 10 ms

    async def blocker() -> None:
        await asyncio.sleep(0.005)
        time.sleep(0.1)  # the loop is busy for 100 ms: 10 design seconds

    task = asyncio.ensure_future(blocker())
    await clock.sleep_until(1.0)  # due at 10 ms, runs after the block: ~10 design seconds late
    await task
    await clock.sleep_until(clock.now() + 0.5)
    assert lateness[0] >= 8.0 and lateness[1] < 2.0
    assert not overrun_report(lateness, sweep_interval=5.0, time_scale=0.01)["kept_real_time"]
