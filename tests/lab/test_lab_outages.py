"""The lab's broker-outage failures (issue 20): Redis frozen with SIGSTOP/SIGCONT, an instance stalled."""

from __future__ import annotations

import pytest

from rtlib.lab.cluster import Cluster
from rtlib.lab.scenario import Scenario


def test_a_five_second_redis_pause_closes_no_socket_and_loses_nothing_acked() -> None:
    sc = Scenario(clients=20, workspaces=1, tasks=4, duration=20, update_rate=10, viewers=0.5, time_scale=0.1,
                  seed=3, drain=1.0)
    with Cluster(instances=2) as lab:
        results = lab.run(sc, failures=[("pause", 5, 6.0)], progress=False)
        assert lab.pids["redis"] is not None  # SIGCONT was sent: the run ended and Redis still answers
    events = results.connections["event"]
    assert not events.isin(["lost", "closed"]).any(), results.connections[events != "connected"]
    s = results.summary()
    assert s["acked"] > 50 and s["lost_updates"] == 0 and s["converged"] is True
    assert s["false_departures"] == 0 and s["reconnects_recovered"] + s["reconnects_resynced"] == 0
    # The pause shows: some event waited for Redis about as long as it was frozen (0.5 s of wall time).
    assert s["latency_ms"]["max"] > 200


def test_malformed_failures_are_refused() -> None:
    with Cluster(instances=1) as lab, pytest.raises(ValueError, match="malformed"):
        lab.run(Scenario(clients=2, duration=1, time_scale=0.1), failures=[("stall", 0, 1.0)], progress=False)
