"""CI-sized: a hidden board page in a real, throttling Chromium flaps with client-timer heartbeats and does not in
presence mode ``probe``, and the Chromium model reproduces both short recordings (about 2 minutes, both at once).

``bench/presence/chromium_presence.py`` records them (Chromium started by hand, attached over CDP: Playwright's launch()
turns throttling off). Intensive throttling cannot be compressed (1 minute hidden, then whole minutes), but the
presence timing can: a 2 s heartbeat reaches the throttled 7th run in 14 s, and a 6 s timeout turns a 60 s
throttled gap into a flap. The hide starts 1 s after a whole minute of the monotonic clock, so the first
throttled run waits ~60 s for the next one: the timer page must flap about 66 s after hiding.
"""

from __future__ import annotations

import asyncio

import pytest
from recording_chromium import chromium_or_missing

from rtlib.model.chromium_traces import as_polled, recorded_flaps, replay

CHROMIUM = chromium_or_missing()

from bench.presence.chromium_presence import record  # noqa: E402

pytestmark = pytest.mark.recording

TIMING = (2.0, 6.0, 1.0)  # heartbeat, timeout, sweep (s)
SCHEDULE = "show:15,wait:1,hide:76,show:3"  # flaps ~66 and ~73 s after hiding, none near the show


@pytest.mark.timeout(300)
async def test_hidden_tab_flaps_with_a_timer_not_with_probes_as_the_model_says() -> None:
    timer, probe = await asyncio.gather(record("timer", SCHEDULE, CHROMIUM, TIMING),
                                        record("probe", SCHEDULE, CHROMIUM, TIMING))
    for trace in (timer, probe):
        assert [s["visibilityState"] for s in trace["schedule"]] == ["visible", "hidden", "visible"]
        beats, flaps = replay(trace)
        model = as_polled(beats)
        assert len(model) == len(trace["beats"]), (trace["alternative"], model, trace["beats"])
        assert max(abs(m - r) for m, r in zip(model, trace["beats"], strict=True)) < 0.5
        assert len(flaps) == len(trace["flaps"])
        assert all(abs(m - r) < 0.5 for m, r in zip(flaps, recorded_flaps(trace), strict=True))
    assert timer["flaps"], "a throttled hidden page's timer heartbeat must flap at a 6 s timeout"
    assert not probe["flaps"], "probes are answered from onmessage, which throttling does not delay"
