"""rtlib.lab.cpu: CPU per process group over a window and the lab's saturation rule (no cluster needed)."""

from __future__ import annotations

import os
import time

from rtlib.lab.cpu import CpuMeter, saturation, usage


def test_meter_reads_this_process() -> None:
    meter = CpuMeter({"clients": [os.getpid()]})
    meter.start()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # burn CPU: this process is busy for the whole window
        pass
    cpu = meter.stop()
    assert 0.2 <= cpu["wall_s"] < 1.0
    assert cpu["clients"]["processes"] == 1 and cpu["clients"]["cores_available"] == 1
    assert 0.0 < cpu["clients"]["cpu_s"] <= cpu["wall_s"] + 0.05


def _cpu(servers: tuple[float, float], clients: float, machine: float, cores: int = 2) -> dict:
    before = {1: 0.0, 2: 0.0, 3: 0.0}
    after = {1: servers[0], 2: servers[1], 3: clients}
    return usage({"servers": [1, 2], "clients": [3]}, before, after, 1.0, cores, (machine * cores, float(cores)))


def test_saturation_rule() -> None:
    assert saturation(_cpu((0.2, 0.2), 0.3, 0.5)) == []
    assert saturation(_cpu((0.2, 0.2), 0.95, 0.8)) == ["clients 0.95 of 1 cores"]  # one event loop at its limit
    assert saturation(_cpu((0.92, 0.1), 0.1, 0.8)) == ["a servers process at 92% of a core"]
    assert saturation(_cpu((0.95, 0.9), 0.1, 0.99))[0].startswith("servers 1.85 of 2 cores")
    assert saturation(_cpu((0.1, 0.1), 0.1, 0.97))[0].startswith("machine 97% busy")  # other work on the cores
    late = {"kept_real_time": False, "overruns": 30, "wakes": 100}
    assert saturation(_cpu((0.1, 0.1), 0.1, 0.3), late) == ["clients overran 30 of 100 wakes"]


def test_answer_below_saturation_takes_the_onset_of_the_saturated_tail() -> None:
    import pandas as pd

    from rtlib.lab.saturation import answer_below_saturation

    points = pd.DataFrame({"clients": [50, 100, 200, 400], "per_s": [100.0, 400.0, 1600.0, 6400.0],
                           "saturated": [False, True, False, True],  # 100: a passing neighbour, not the onset
                           "lat_p99_high": [10.0, 12.0, 30.0, 300.0]})
    answer = answer_below_saturation(points, 45.0)
    assert answer["best"]["clients"] == 200  # the highest unsaturated point with p99's interval under 45 ms
    assert answer["saturated_from"]["clients"] == 400
    assert list(answer["disturbed"]["clients"]) == [100]
    assert answer_below_saturation(points.assign(lat_p99_high=[10.0, 12.0, 50.0, 300.0]), 45.0)["best"]["clients"] == 50
