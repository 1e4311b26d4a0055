"""The acceptance rule of model-vs-live validation (rtlib.model.acceptance), offline and fast.

The rule compares events viewer by viewer under numbers fixed in advance: a live event may be ``early`` (the
measured clock error) before the model's or ``late`` (the lateness budget) after it, one sweep off only where the
model's own timing is within ``w = early + late`` of a sweep, one beat off only for a crash within ``w`` after a
beat. Here the "live run" is the right model's own events delayed by seeded lateness within the budget, so the
right model must pass and every wrong model of ``rtlib.model.live.WRONG_MODELS`` must fail; and hand-made pairs
show each boundary of the rule.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from rtlib.lab.scenario import Scenario
from rtlib.lab.sim import plan_clients
from rtlib.model.acceptance import LATE_SHARE, Context, Event, Tolerance, compare_events
from rtlib.model.engine import run_engine
from rtlib.model.live import VALIDATION_CASES, WRONG_MODELS, RunFacts, model_of_run, right_spec
from rtlib.model.scenario import PresenceConfig

TS = 0.05
TOL = Tolerance(early=0.001, late=0.4, sweep=5.0, beat=30.0, expiry=60.0, offset=0.0)


def _ctx(writes: list[float], removals: tuple[float, ...] = ()) -> Context:
    return Context({"u": np.array(writes)}, {"u": list(removals)})


def test_within_early_and_late_only() -> None:
    ctx = _ctx([10.0])
    for delta, ok in ((0.0, True), (0.39, True), (0.41, False), (-0.0005, True), (-0.01, False)):
        c = compare_events([Event("u", "left", "timeout", 75.0)], [Event("u", "left", "timeout", 75.0 + delta)],
                           ctx, TOL)
        assert c.passed is ok, delta


def test_one_sweep_off_only_at_a_race() -> None:
    # Expiry 70 + 60 = 130 sits exactly on the sweep at 130 (model pops there): live may pop at 135.
    race = compare_events([Event("u", "left", "timeout", 130.0)], [Event("u", "left", "timeout", 135.1)],
                          _ctx([70.0]), TOL)
    assert race.passed and race.rows[0]["status"] == "one sweep"
    # Expiry 127.5: two and a half seconds from any sweep, so 5 s off is an error, not a race.
    off = compare_events([Event("u", "left", "timeout", 130.0)], [Event("u", "left", "timeout", 135.1)],
                         _ctx([67.5]), TOL)
    assert not off.passed


def test_one_sided_flap_only_at_a_race() -> None:
    # Beats 60 s apart with a 60 s timeout: the next beat lands on the expiry; at a sweep instant, a race.
    assert compare_events([], [Event("u", "left", "timeout", 130.01), Event("u", "joined", "", 130.02)],
                          _ctx([70.0, 130.0]), TOL).passed
    # The same live flap with beats 30 s apart: nothing could expire, so it is unexplained.
    c = compare_events([], [Event("u", "left", "timeout", 130.01)], _ctx([70.0, 100.0, 130.0]), TOL)
    assert not c.passed and c.rows[0]["status"] == "UNEXPLAINED: live only"


def test_a_disconnect_that_lost_to_a_sweep() -> None:
    # Model: removed at 130.1 (disconnect). Live: the sweep at 130 popped it first (expiry 130.0), no disconnect.
    c = compare_events([Event("u", "left", "disconnect", 130.1)], [Event("u", "left", "timeout", 130.05)],
                       _ctx([70.0], (130.1,)), TOL)
    assert c.passed, c.rows


def _fake_live(model_events: list[Event], seed: int, sweep: float) -> list[Event]:
    """The right model's events as a live run would stamp them: each timed one late by U(0, half the bound)."""
    rng = random.Random(seed)
    late = 0.5 * LATE_SHARE * sweep
    return [Event(e.subject, e.kind, e.reason, e.t if e.given else e.t + rng.uniform(0, late)) for e in model_events]


@pytest.mark.parametrize("case", list(VALIDATION_CASES))
def test_right_model_passes_and_every_wrong_model_fails(case: str) -> None:
    sc = Scenario(clients=60, workspaces=1, tasks=6, viewers=1.0, time_scale=TS, seed=3, drain=0.5,
                  churn=0.0, **VALIDATION_CASES[case])
    plans = plan_clients(sc, 2)
    facts = RunFacts(TS, t0_wall=1_765_000_000.123, clock_error=2e-6, observed_until=sc.duration + 10)
    live = _fake_live(model_of_run(plans, sc, 2, facts, []).events(), 1, sc.sweep_interval)
    assert model_of_run(plans, sc, 2, facts, live).compare(live, facts, sc.sweep_interval).passed
    detected = 0
    for name, variation in WRONG_MODELS.items():
        spec = variation(right_spec(sc))
        if spec is not None:
            wrong = model_of_run(plans, sc, 2, facts, live, spec)
            assert not wrong.compare(live, facts, sc.sweep_interval).passed, name
            detected += 1
    assert detected >= 3


def test_both_executors_give_the_model_of_a_run() -> None:
    sc = Scenario(clients=40, workspaces=1, tasks=6, viewers=1.0, time_scale=TS, seed=4, crash=0.3, churn=0.3,
                  heartbeat="lossy:0.2:interval:30", presence_mode="probe", leave_grace=15.0, duration=300.0)
    plans = plan_clients(sc, 2)
    facts = RunFacts(TS, 1_765_000_000.5, 0.0, sc.duration + 10)
    fast = model_of_run(plans, sc, 2, facts, [])
    plain = model_of_run(plans, sc, 2, facts, [], executor=run_engine)
    assert fast.events() == plain.events()
    kinds = {(e.kind, e.reason) for e in fast.events()}
    assert {("left", "timeout"), ("left", "disconnect"), ("left", "leave"), ("joined", "")} <= kinds


def test_wrong_models_are_variations_of_what_the_model_is_told() -> None:
    spec = right_spec(Scenario(heartbeat="lossy:0.1:background:30:300", leave_grace=15.0))
    assert WRONG_MODELS["sweep 10 s"](spec).config == PresenceConfig(30, 60, 10, 15)  # type: ignore[union-attr]
    assert WRONG_MODELS["no hidden-tab throttling"](spec).heartbeat == "lossy:0.1:interval:30"  # type: ignore[union-attr]
    assert WRONG_MODELS["probe interval x1.5"](spec) is None  # timer mode: nothing to get wrong
    probe = right_spec(Scenario(heartbeat="background:30:300", presence_mode="probe"))
    assert WRONG_MODELS["no hidden-tab throttling"](probe) is None  # a probe answer is never throttled
    assert WRONG_MODELS["probe interval x1.5"](probe).config.heartbeat_interval == 45  # type: ignore[union-attr]


def test_a_probe_answer_one_tick_early_only_if_its_probe_was_due_just_after_a_tick() -> None:
    # A live timer that wakes late for the tick at 99.5 also sends a probe due at 99.6: its answer (the re-join)
    # lands at 99.9, a tick before the model's 100.5. Allowed only for an answer the model marks as such.
    tol = Tolerance(early=0.001, late=0.4, sweep=5.0, beat=30.0, expiry=60.0, offset=0.0, tick=1.0)
    model, live = [Event("u", "joined", "", 100.5)], [Event("u", "joined", "", 99.9)]
    early = Context({"u": np.array([40.5, 100.5])}, early={"u": np.array([100.5])})
    on_time = Context({"u": np.array([40.5, 100.5])})
    assert compare_events(model, live, early, tol).rows[0]["status"] == "one tick"
    assert not compare_events(model, live, on_time, tol).passed
