"""The presence alternatives as Scenario options, live: simulated tabs on two real `rtlib serve` instances.

The tabs' timers are throttled to one beat every 90 s (``background:30:0:90``: a hidden tab past its grace),
longer than the 60 s timeout, so the client-timer design flaps every viewer. Probe mode does not depend on
the tabs' timers; a leave grace longer than the excess gap absorbs it. Crashed tabs are still detected.
"""

from __future__ import annotations

import pytest

from rtlib.lab.cluster import Cluster
from rtlib.lab.scenario import Scenario

THROTTLED = Scenario(clients=16, workspaces=1, tasks=4, duration=300, update_rate=0, viewers=1.0, crash=0.25,
                     heartbeat="background:30:0:90", presence_timeout=60, sweep_interval=5, time_scale=0.02,
                     seed=5, drain=0.5)


@pytest.fixture(scope="module")
def lab():
    with Cluster(instances=2) as cluster:
        yield cluster


def _crash_delays(results) -> list[float]:
    """Per crashed tab, design seconds from its crash to the first presence.left of it; asserts every one
    crashed tab was announced."""
    crashed = set(results.connections[results.connections["event"] == "crashed"]["user"])
    left = results.presence[(results.presence["kind"] == "left") & results.presence["subject"].isin(crashed)]
    delays = (left["t_observed"] - left["t_actual"]).groupby(left["subject"]).min()
    assert crashed and set(delays.index) == crashed, (crashed, delays.to_dict())
    return list(delays)


def test_throttled_timers_flap_in_timer_mode_and_not_with_probes_or_a_grace(lab: Cluster) -> None:
    timer = lab.run(THROTTLED, progress=False).summary()
    assert timer["false_departures"] > 0  # the control: this traffic does flap with the seed's design
    probe = lab.run(THROTTLED.replace(presence_mode="probe"), progress=False)
    assert probe.summary()["false_departures"] == 0
    delays = _crash_delays(probe)
    assert max(delays) <= 60 + 30 + 5 + 3, delays  # within timeout + one probe interval + a sweep (+ slack)
    graced = lab.run(THROTTLED.replace(leave_grace=45), progress=False)
    assert graced.summary()["false_departures"] == 0
    assert max(_crash_delays(graced)) <= 60 + 45 + 90 + 5 + 3  # the last beat can be 90 s before the crash
