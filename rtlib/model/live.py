"""The model on a live run's own scenario, for validation against ``rtlib.lab``.

The lab plans its clients deterministically (``rtlib.lab.sim.plan_clients``): when each viewer joins, which
instance it uses, when it crashes; each live client draws its beats from its heartbeat model with
``random.Random(f"{seed}:{index}")``. :func:`timelines_from_plan` rebuilds exactly those timelines for the
model (duck-typed: this layer does not import the lab). What the model cannot know in advance is where the
servers' absolute sweep grid fell against the run's origin; :func:`sweep_offset` measures it from the run's
own ``presence.left`` (timeout) events, which all happen just after a sweep.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from rtlib.client.heartbeat import Lossy, parse_model
from rtlib.model.beats import Timelines
from rtlib.protocol.probes import TICK_PHASE, TICKS_PER_INTERVAL

__all__ = ["VALIDATION_CASES", "compare_run", "failed_checks", "live_mistakes", "pong_draws", "sweep_offset",
           "timelines_from_plan"]

#: The validation cases: ``rtlib.lab.Scenario`` fields, all at 30 s / 60 s / sweep 5 s on 2 instances; issue 9's
#: four for the client timer, then issue 10's presence alternatives (server probes, a leave grace, a visibility
#: beat). Durations are
#: design seconds at CI size; the throttled cases run past 300 s so their tabs get throttled. (A probed client
#: answers from its message handler, which hidden tabs do not throttle: its heartbeat model only says which
#: answers are lost.)
VALIDATION_CASES: dict[str, dict[str, Any]] = {
    "exact 30/60": {"heartbeat": "interval:30", "duration": 300.0, "crash": 0.3},
    "Chrome intensive throttling": {"heartbeat": "background:30:300", "duration": 450.0, "crash": 0.5},
    "10 % loss": {"heartbeat": "lossy:0.1:interval:30", "duration": 300.0, "crash": 0.2},
    "crash-heavy": {"heartbeat": "interval:30", "duration": 300.0, "crash": 0.8},
    "probe, Chrome throttling": {"heartbeat": "background:30:300", "presence_mode": "probe", "duration": 450.0,
                                 "crash": 0.5},
    "probe, 10 % loss": {"heartbeat": "lossy:0.1:interval:30", "presence_mode": "probe", "duration": 300.0,
                         "crash": 0.3},
    "grace 15 s, Chrome throttling": {"heartbeat": "background:30:300", "leave_grace": 15.0, "duration": 450.0,
                                      "crash": 0.5},
    # Tabs hidden and shown (means 120 s / 240 s) with Chromium's measured throttling, beating at every change.
    "visibility beat, Chrome hide/show": {"heartbeat": "chromevis:30:60:120:240", "visibility_beat": True,
                                          "duration": 450.0, "crash": 0.3},
}


def timelines_from_plan(plans: Iterable[Any], heartbeat: str, duration: float, seed: int,
                        end: float | None = None) -> tuple[Timelines, list[str]]:
    """Timelines of the plan's viewers (``view_task`` set) and their user ids, in the same order.

    Viewers that crash stop beating at ``crash_at`` (the live client's beat loop is cancelled then);
    the others beat until ``end`` (default: ``duration``; the live client leaves cleanly at ``duration``,
    so the model's metrics should use ``hours = duration / 3600``).
    """
    model = parse_model(heartbeat)
    start, depart, instance, beats, users = [], [], [], [], []
    for p in plans:
        if p.view_task is None:
            continue
        gone = p.crash_at if p.crash_at is not None and p.crash_at < duration else math.inf
        stop = min(gone, duration if end is None else end)
        start.append(p.view_at)
        depart.append(gone)
        instance.append(p.instance)
        beats.append([b for b in model.beats(p.view_at, stop, random.Random(f"{seed}:{p.index}")) if b.t < gone])
        users.append(p.user)
    tl = Timelines.from_beats(start, depart, instance, beats, duration if end is None else end)
    return tl, users


def pong_draws(plans: Iterable[Any], heartbeat: str, seed: int, viewers: int, duration: float,
               interval: float) -> list[list[bool]]:
    """Presence mode "probe": per viewer of the plan (in :func:`timelines_from_plan`'s order), whether it
    answers its 1st, 2nd, ... probe: the live client's own draws (``rtlib.lab.sim``: one
    ``random.Random(f"{seed}:{index}:pong")`` draw per probe, lost with a ``lossy`` model's loss)."""
    model = parse_model(heartbeat)
    loss = model.loss if isinstance(model, Lossy) else 0.0
    n = int(duration / interval) + 2
    out = []
    for p in plans:
        if p.view_task is None:
            continue
        rng = random.Random(f"{seed}:{p.index}:pong")
        out.append([rng.random() >= loss for _ in range(n)])
    assert len(out) == viewers
    return out


def sweep_offset(left_times: Sequence[float], sweep_interval: float, latency: float = 0.0) -> float:
    """The instances' clock offset (``ModelScenario.sweep_phase``) that puts the model's sweeps where a live
    run's were: the circular mean of the observed ``presence.left`` (timeout) times, less their delivery
    ``latency``, modulo the sweep interval. ``0.0`` if the run had no timeout."""
    t = np.asarray(left_times, dtype=float) - latency
    if not len(t):
        return 0.0
    angle = 2 * np.pi * np.mod(t, sweep_interval) / sweep_interval
    mean = math.atan2(float(np.sin(angle).mean()), float(np.cos(angle).mean()))
    for _ in range(3):  # late observations (a loaded machine) are outliers: keep the ones near the mean
        near = np.abs(np.angle(np.exp(1j * (angle - mean)))) <= 2 * np.pi * 0.1
        if not near.any():
            break
        mean = math.atan2(float(np.sin(angle[near]).mean()), float(np.cos(angle[near]).mean()))
    # Lateness is never negative: the sweep is at the early edge of the cluster, not its middle.
    around = np.angle(np.exp(1j * (angle - mean)))
    edge = mean + float(np.quantile(around[np.abs(around) <= 2 * np.pi * 0.1], 0.1)) if len(around) else mean
    phase = (edge / (2 * np.pi)) * sweep_interval % sweep_interval  # sweeps at design times = phase (mod S)
    return (-phase) % sweep_interval  # clock = t + offset is a multiple of S at those times


def live_mistakes(presence: Any, sweep_interval: float) -> int:
    """False departures in a live run: ``presence.left`` (timeout) of a user who never left, counted once per
    (user, task, sweep) although every observer receives it."""
    p = presence
    f = p[(p["kind"] == "left") & (p["reason"] == "timeout") & p["t_actual"].isna()].sort_values("t_observed")
    count = 0
    for _, g in f.groupby(["subject", "task"]):
        count += int((g["t_observed"].diff().fillna(math.inf) > sweep_interval / 2).sum())
    return count


def compare_run(results: Any, plans: Sequence[Any], instances: int, *, latency: float = 0.002,
                redis_rtt: float = 0.0005, quantiles: Sequence[float] = (0.5, 0.9, 0.99)) -> dict[str, Any]:
    """The model on a live run's scenario, next to the live numbers.

    ``results``: an ``rtlib.lab`` run (its ``scenario``, ``presence``, ``connections``); ``plans``: its
    ``plan_clients(scenario, instances)``. ``latency`` (real seconds, one way, client to observer) and
    ``redis_rtt`` (real seconds) become design seconds through the run's ``time_scale``. Returns T_D quantiles
    (``live_td_p50``, ``model_td_p50``, ``td_p50_rel``, ...), mistakes (live count, its exact 95 % Poisson
    interval, the model's count, whether it lies inside), crash by crash agreement (``paired_within_1s``: the
    share of crashes whose modelled detection is within 1 design s of the live one; ``paired_max_diff``;
    ``paired_races``: crashes off by more than 1 s whose expiry fell within ``race_band`` design s of a sweep
    instant (the run's own measured scheduling noise), or whose departure fell that close to a beat;
    ``paired_explained``: the share within 1 s or explained by such a race, one sweep or one beat off at most;
    ``off_crashes``: (user, model - live, expiry slack) of each crash off by more than 1 s),
    ``td_agrees`` (quantiles within 5 %, or every crash explained), and the measured sweep offset.
    """
    from rtlib.model.alternatives import probe_timelines  # noqa: PLC0415
    from rtlib.model.fast import run_fast  # noqa: PLC0415
    from rtlib.model.metrics import metrics, poisson_interval  # noqa: PLC0415
    from rtlib.model.scenario import ModelScenario, PresenceConfig  # noqa: PLC0415

    sc = results.scenario
    ts = sc.time_scale
    tl, users = timelines_from_plan(plans, sc.heartbeat, sc.duration, sc.seed)
    presence = results.presence
    timeouts = presence[(presence["kind"] == "left") & (presence["reason"] == "timeout")].sort_values("t_observed")
    first_seen = [g["t_observed"].to_numpy()[np.r_[True, np.diff(g["t_observed"].to_numpy()) > sc.sweep_interval / 2]]
                  for _, g in timeouts.groupby(["subject", "task"])]  # each event as its first observer saw it
    seen = np.concatenate(first_seen) if first_seen else np.array([])
    offset = sweep_offset(seen, sc.sweep_interval, latency=latency / ts)
    # How late the run's events were (the first observer of each timeout, after its sweep): the scheduling
    # noise of this run, in design seconds. The model's frames get it as jitter: at a sweep boundary (Chrome's
    # minute-aligned beats, gaps equal to the timeout) it decides which of a beat and a sweep comes first.
    lateness = np.mod(seen - (-offset) % sc.sweep_interval, sc.sweep_interval) if len(seen) else np.array([])
    late = lateness[lateness < 0.2 * sc.sweep_interval]
    jitter = float(np.quantile(late, 0.9)) if len(late) >= 5 else 0.0
    mode = getattr(sc, "presence_mode", "timer")
    probe = mode == "probe"
    # Probe answers land just after the probe ticks, and every fifth tick is a sweep instant: whether that sweep
    # pops an entry is a race of a few ms between the sweeper's wake-up and the probe's round trip. (Only in
    # compressed time: at real scale a round trip of tens of ms always reaches Redis after a sweep that read its
    # clock a ms late.) So in probe mode the run's scheduling noise goes to the sweeps' clock readings, and half
    # of it to each trip of the probe's round trip.
    msc = ModelScenario(viewers=len(users), hours=sc.duration / 3600, instances=instances, sweep_phase=offset,
                        delay=latency / 2 / ts, jitter=jitter / 2 if probe else jitter, redis_rtt=redis_rtt / ts,
                        departures=0.0, seed=sc.seed, presence_mode=mode, handler_delay=0.0,
                        sweep_lag=jitter if probe else 0.0)
    config = PresenceConfig(sc.heartbeat_interval, sc.presence_timeout, sc.sweep_interval,
                            getattr(sc, "leave_grace", 0.0))
    if mode == "probe":  # the beats are the answers to the servers' probes, which follow the measured clocks
        tl = probe_timelines(tl.start, tl.depart, tl.instance, config, msc, sc.duration,
                             answered=pong_draws(plans, sc.heartbeat, sc.seed, len(users), sc.duration,
                                                 sc.heartbeat_interval))
    out = run_fast(tl, config, msc)
    m = metrics(out, tl, msc)
    model_by_user = {users[v]: t + latency / 2 / ts for v, t in _model_delays(out, tl).items()}  # + delivery
    model_td = np.array(list(model_by_user.values()))
    crashed = set(results.connections.loc[results.connections["event"] == "crashed", "user"])
    d = results.detection_delays().reset_index()
    d = d[d["subject"].isin(crashed)]
    live_td = d["detection_delay"].to_numpy()
    # Crash by crash: the same crash's detection, live and modelled.
    matched = [(u, t) for u, t in zip(d["subject"], live_td, strict=True) if u in model_by_user]
    paired = np.array([abs(model_by_user[u] - t) for u, t in matched])
    row: dict[str, Any] = {"heartbeat": sc.heartbeat, "presence_mode": mode, "leave_grace": config.leave_grace,
                           "viewers": len(users), "viewer_hours": m["viewer_hours"], "crashes": len(crashed),
                           "sweep_offset": offset, "jitter": jitter, "live_detected": len(live_td),
                           "model_detected": len(model_td)}
    for q in quantiles:
        name = f"td_p{round(q * 100)}"
        live_q = float(np.quantile(live_td, q)) if len(live_td) else math.nan
        model_q = float(np.quantile(model_td, q)) if len(model_td) else math.nan
        row[f"live_{name}"], row[f"model_{name}"] = live_q, model_q
        row[f"{name}_rel"] = abs(model_q - live_q) / live_q if len(live_td) else math.nan
    live_m = live_mistakes(presence, sc.sweep_interval)
    low, high = poisson_interval(live_m)
    row.update({"paired": len(paired),
                "paired_within_1s": float((paired <= 1.0).mean()) if len(paired) else math.nan,
                "paired_max_diff": float(paired.max()) if len(paired) else math.nan,
                "live_mistakes": live_m, "live_mistakes_low95": low, "live_mistakes_high95": high,
                "model_mistakes": m["mistakes"], "mistakes_within": low <= m["mistakes"] <= high,
                "td_within_5pct": bool(all(row[f"td_p{round(q * 100)}_rel"] <= 0.05 for q in quantiles))
                if len(live_td) else True})
    # With a handful of crashes one detection moved by a sweep (live scheduling noise at a sweep boundary)
    # moves p90/p99 by more than 5 %: then the crash-by-crash comparison decides. A crash whose last beat
    # expires within the run's own scheduling noise of a sweep instant is a race the model cannot call (the
    # live beat or sweep landed a few ms the other way): it may differ by one sweep, no more.
    # The race band: the latest event of this run after its sweep instant (up to half a sweep interval: a later
    # one is a sweep's own phase, not lateness), e.g. a sweep that woke 70 ms late on a loaded machine.
    worst = lateness[lateness < 0.5 * sc.sweep_interval]
    band = max(float(worst.max()) if len(worst) else 0.0, _MIN_RACE_BAND * sc.sweep_interval)
    if probe:  # answers land half a probe tick after a tick, and every fifth tick is a sweep instant: in
        band += TICK_PHASE * sc.heartbeat_interval / TICKS_PER_INTERVAL  # compressed time, a race of ~20 ms
    # Likewise a crash within that noise of a beat (or of the next one due) may have sent one beat more or
    # less live: then it may differ by an interval.
    slack, since = _expiry_slack(tl, config, latency / 2 / ts, offset)
    viewer = {u: v for v, u in enumerate(users)}
    index = [viewer[u] for u, _ in matched]
    race = np.array([min(slack[v], sc.sweep_interval - slack[v]) <= band for v in index], dtype=bool)
    beat_race = np.array([min(since[v], abs(since[v] - sc.heartbeat_interval)) <= band for v in index], dtype=bool)
    off = paired > 1.0
    explained = ~off | (race & (paired <= sc.sweep_interval + 1.0)) \
        | (beat_race & (paired <= sc.heartbeat_interval + sc.sweep_interval + 1.0))
    row["off_crashes"] = [(u, round(float(model_by_user[u] - t), 3), round(float(slack[v]), 3))
                          for (u, t), v, o in zip(matched, index, off, strict=True) if o]
    row.update({"race_band": band, "paired_races": int((off & (race | beat_race)).sum()),
                "paired_explained": float(explained.mean()) if len(paired) else math.nan})
    row["td_agrees"] = bool(row["td_within_5pct"] or explained.all()
                            or (off.sum() <= 1 and (paired <= sc.sweep_interval + 1.0).all()))
    row["failed_checks"] = failed_checks(row)
    return row


def failed_checks(row: dict[str, Any]) -> list[str]:
    """Which of the validation criteria a :func:`compare_run` row misses (empty: model and live agree):
    the same crashes announced (``detected``), T_D (``td``), crash by crash (``paired``: at least 80 % within
    1 s, 70 % with server probes, whose answers race the sweeps in compressed time), mistakes inside the live
    count's 95 % Poisson interval (``mistakes``)."""
    out = []
    if not row["live_detected"] == row["model_detected"] > 0:
        out.append("detected")
    if not row["td_agrees"]:
        out.append("td")
    if not (row["paired"] == row["live_detected"]
            and row["paired_within_1s"] >= (0.7 if row["presence_mode"] == "probe" else 0.8)):
        out.append("paired")
    if not row["mistakes_within"]:
        out.append("mistakes")
    return out


#: The narrowest band (a share of the sweep interval) around a sweep instant inside which a crash's expiry is
#: counted a race: at CI scale (40 ms per design second) a few ms of wake-up noise is 0.1 design s.
_MIN_RACE_BAND = 0.02


def _expiry_slack(tl: Timelines, config: Any, delay: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Per viewer: how long after a sweep instant (mod the sweep interval, in design s) the entry of its last
    delivered beat (or its join) before it departs expires (near 0 or near the interval: a race), and how long
    before its departure that beat was sent."""
    slack, since = np.empty(tl.n), np.empty(tl.n)
    for v in range(tl.n):
        lo, hi = tl.offsets[v], tl.offsets[v + 1]
        t, ok = tl.beat_t[lo:hi], tl.beat_ok[lo:hi]
        heard = t[ok & (t < tl.depart[v])]
        last = float(heard.max()) if len(heard) else float(tl.start[v])
        slack[v] = (last + delay + config.expiry + offset) % config.sweep_interval
        since[v] = tl.depart[v] - last
    return slack, since


def _model_delays(out: Any, tl: Timelines) -> dict[int, float]:
    """Each departed viewer's first ``presence.left`` at or after its departure, minus the departure: the
    live ``Results.detection_delays`` definition. (A viewer wrongly shown gone when it crashed, and never
    re-joined, has no such event: Chen's T_D = 0 in :func:`rtlib.model.metrics.metrics`, absent here as in
    the live table.)"""
    order = np.lexsort((out.left_t, out.left_viewer))
    lv, lt = out.left_viewer[order], out.left_t[order]
    after = lt >= tl.depart[lv]
    lv, lt = lv[after], lt[after]
    first = np.unique(lv, return_index=True)[1]
    return dict(zip(lv[first].tolist(), (lt[first] - tl.depart[lv[first]]).tolist(), strict=True))
