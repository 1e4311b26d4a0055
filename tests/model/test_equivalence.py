"""The vectorised executor equals the plain one, event for event and float for float.

``run_engine`` drives the server's :class:`PresenceProtocol` and :class:`BookStore` one event at a time; ``run_fast``
computes each entry's fate in bulk. On small seeded inputs covering every knob (instances, clock skew larger than
a sweep, network jitter large enough to queue frames, Redis round trips, fractional sweep intervals whose sweep
chain is not ``k * step``, timeouts shorter than the interval, lossy and throttled clients), both must publish
exactly the same ``presence.joined`` / ``presence.left`` at exactly the same times, and cost the same.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numpy")

from rtlib.clientmodels.heartbeat import Beat  # noqa: E402
from rtlib.model.engine import run_engine  # noqa: E402
from rtlib.model.fast import run_fast  # noqa: E402
from rtlib.model.metrics import metrics  # noqa: E402
from rtlib.model.network import frames  # noqa: E402
from rtlib.model.scenario import ModelScenario, PresenceConfig  # noqa: E402
from rtlib.model.timelines import Timelines, generate  # noqa: E402

CLIENTS = ["interval:{hb}", "jitter:{hb}:8", "lossy:0.2:interval:{hb}", "background:{hb}:120", "chrome:{hb}:60:300:200",
           "lossy:0.2:ios:{hb}:300:100", "sleep:{hb}:3:200",
           "lossy:0.1:background:{hb}:60:60"]
CONFIGS = [PresenceConfig(30, 60, 5), PresenceConfig(30, 60, 0.7), PresenceConfig(20, 45, 3),
           PresenceConfig(15, 10, 2), PresenceConfig(30, 90, 15), PresenceConfig(0.6, 1.2, 0.1)]


def _same(sc: ModelScenario, cfg: PresenceConfig) -> int:
    tl = generate(sc, cfg)
    fast, plain = run_fast(tl, cfg, sc), run_engine(tl, cfg, sc)
    assert fast.events() == plain.events()
    assert fast.sweeps == plain.sweeps
    assert sorted(fast.writes_t.tolist()) == sorted(plain.writes_t.tolist())
    assert metrics(fast, tl, sc) == metrics(plain, tl, sc)
    return len(fast.left_t)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.heartbeat_interval:g}/{c.timeout:g}/{c.sweep_interval:g}")
def test_fast_equals_engine(client: str, cfg: PresenceConfig) -> None:
    hours = 0.4 if cfg.heartbeat_interval >= 1 else 0.02
    sc = ModelScenario(viewers=25, hours=hours, client=client, instances=3, skew=1.3 * cfg.sweep_interval,
                       sweep_phase=0.37, delay=0.05, jitter=0.4 * cfg.heartbeat_interval, redis_rtt=0.01,
                       departures=0.5, seed=7)
    _same(sc, cfg)


@pytest.mark.parametrize("seed", range(6))
def test_fast_equals_engine_random_knobs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    hb = float(rng.choice([5, 10, 30]))
    cfg = PresenceConfig(hb, float(hb * rng.choice([1.0, 1.5, 2.0, 3.0])), float(rng.choice([0.5, 1, 5])))
    sc = ModelScenario(viewers=20, hours=0.3, client=str(rng.choice(CLIENTS)), instances=int(rng.integers(1, 4)),
                       skew=float(rng.uniform(0, 10)), sweep_phase=float(rng.uniform(0, 5)),
                       delay=float(rng.uniform(0, 1)), jitter=float(rng.uniform(0, 2 * hb)),
                       loss=float(rng.uniform(0, 0.3)), redis_rtt=float(rng.uniform(0, 0.5)), seed=seed)
    _same(sc, cfg)


def test_the_knobs_produce_mistakes_and_detections() -> None:
    """The equivalence is not vacuous: the small runs above do publish timeouts of both kinds."""
    sc = ModelScenario(viewers=25, hours=0.4, client="background:{hb}:120", instances=3, skew=6.5, jitter=12,
                       departures=0.5, seed=7)
    cfg = PresenceConfig(30, 60, 5)
    assert _same(sc, cfg) > 25
    m = metrics(run_fast(generate(sc, cfg), cfg, sc), generate(sc, cfg), sc)
    assert m["mistakes"] > 0 and m["detected"] == m["departures"] > 0


def test_ties_run_the_sweep_first() -> None:
    """A beat reaching Redis at the very instant of the sweep that expires the previous one: the sweep first."""
    cfg = PresenceConfig(30, 60, 5)
    sc = ModelScenario(viewers=1, hours=0.05, instances=1, delay=0.0, jitter=0.0, redis_rtt=0.0, departures=0.0)
    tl = Timelines.from_beats([0.0], [np.inf], [0], [[Beat(60.0), Beat(90.0)]], end=150.0)
    sc = sc.replace(hours=(150.0 - 60 - 10 - 1) / 3600)  # sweeps until 150 s
    for run in (run_fast, run_engine):
        assert run(tl, cfg, sc).events() == [(0, "joined", 0.0), (0, "joined", 60.0), (0, "left", 60.0),
                                             (0, "left", 150.0)]


def test_in_order_arrival_vectorised() -> None:
    sc = ModelScenario(viewers=40, hours=0.2, client="jitter:{hb}:25", delay=1.0, jitter=40.0, seed=3)
    fr = frames(generate(sc, PresenceConfig(30, 60, 5)), sc)
    plain = fr.arrival_plain()
    assert fr.arrival().tolist() == plain
    assert plain != (fr.sent + fr.delay).tolist()  # frames did queue behind earlier ones
