"""Quality of service of presence as a failure detector (Chen, Toueg, Aguilera, *On the QoS of failure
detectors*, IEEE Trans. Computers 51(5), 2002), and what it costs.

Ground truth: viewer ``i`` is present from ``start[i]`` until ``depart[i]`` (a silent departure: crash,
discarded tab, dead network; ``inf`` = stays past the horizon ``H``). The detector's output is the
published ``presence.joined`` / ``presence.left`` stream.

* **T_D, detection time**: from a silent departure to the ``presence.left`` that follows it for good
  (0 if the viewer was already, wrongly, shown gone). Departures in ``[0, H]``.
* **Mistake**: a ``presence.left`` at ``t <= H`` while the viewer is present. **λ_M, mistake rate**: mistakes
  per present viewer-hour (1 / E(T_MR)). ``mistakes_upper95``: the one-sided 95 % Poisson upper bound of λ_M
  (3.0 / viewer-hours when no mistake was seen), because a rate measured as 0 is not a rate of 0.
* **T_M, mistake duration**: from the mistaken ``left`` to the re-join (or to the departure / ``H``).
* **P_A, query accuracy**: the share of present viewer-time shown as present, 1 - ΣT_M / Σ(present time).
* **Cost per 10,000 present viewers**: presence frames/s in (join + heartbeat, one per viewed task; in
  presence mode "probe" one ``presence.pong`` per connection) and out (``presence.probe``, one per connection),
  Redis commands/s (one script per task beat, one per sweep per instance), presence events/s published and
  bytes/s each way (frames in; probes out plus events fanned out to ``workspace_size`` connections).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

from rtlib.model.beats import Timelines
from rtlib.model.outcome import Outcome
from rtlib.model.scenario import ModelScenario
from rtlib.protocol import events

__all__ = ["EVENT_BYTES", "HEARTBEAT_FRAME_BYTES", "PONG_FRAME_BYTES", "PROBE_FRAME_BYTES", "detection_times",
           "metrics", "poisson_interval", "poisson_upper"]

#: A client's heartbeat frame as rtlib.lab.sim sends it (ids of the usual length), + 6 bytes of masked WS header.
HEARTBEAT_FRAME_BYTES = len(b'{"type":"presence.heartbeat","workspaceId":"ws_0001",'
                            b'"payload":{"taskId":"tsk_00001"}}') + 6
#: A presence.left event with its timestamp (rtlib.protocol.events.presence_change), + 2 bytes of WS header.
EVENT_BYTES = len(b'{"type":"presence.left","workspaceId":"ws_0001","payload":{"taskId":"tsk_00001","userId":'
                  b'"usr_00001","reason":"timeout"},"userId":"usr_00001","timestamp":"2026-11-26T02:31:47.123Z"}') + 2
#: presence.probe as the server encodes it (a 5-digit seq), + 2 bytes of WS header; the client's answer + 6.
PROBE_FRAME_BYTES = len(events.presence_probe("ws_0001", "usr_00001", 12345, 1.8e9)) + 2
PONG_FRAME_BYTES = len(b'{"type":"presence.pong","workspaceId":"ws_0001","payload":{"seq":12345}}') + 6


def poisson_interval(count: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) two-sided interval of a Poisson mean for ``count`` observed events (bisection on the
    Poisson CDF; no scipy needed)."""
    a = (1 - level) / 2
    if count > 50:  # chi-square quantiles by Wilson-Hilferty (relative error < 1e-3 here)
        return (0.0 if count == 0 else _chi2_ppf(a, 2 * count) / 2), _chi2_ppf(1 - a, 2 * count + 2) / 2
    low = 0.0 if count == 0 else _solve(lambda mu: 1 - _poisson_cdf(count - 1, mu), a, count)
    return low, _solve(lambda mu: -_poisson_cdf(count, mu), -a, count)


def poisson_upper(count: int, level: float = 0.95) -> float:
    """One-sided upper bound of a Poisson mean (3.0 for no event at 95 %)."""
    if count > 50:
        return _chi2_ppf(level, 2 * count + 2) / 2
    return _solve(lambda mu: -_poisson_cdf(count, mu), -(1 - level), count)


def _chi2_ppf(p: float, k: int) -> float:
    z = NormalDist().inv_cdf(p)
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


def _poisson_cdf(k: int, mu: float) -> float:
    if k < 0:
        return 0.0
    if mu == 0:
        return 1.0
    term = math.exp(-mu) if mu < 700 else 0.0
    if term == 0.0:  # large mu: sum in log space
        logs = [i * math.log(mu) - mu - math.lgamma(i + 1) for i in range(k + 1)]
        top = max(logs)
        return min(1.0, math.exp(top) * sum(math.exp(x - top) for x in logs))
    total = term
    for i in range(1, k + 1):
        term *= mu / i
        total += term
    return min(1.0, total)


def _solve(f: object, target: float, count: int) -> float:
    """The ``mu`` where the increasing ``f(mu)`` reaches ``target``."""
    lo, hi = 0.0, max(10.0, 3.0 * count + 30.0)
    for _ in range(200):
        mid = (lo + hi) / 2
        if f(mid) < target:  # type: ignore[operator]
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def detection_times(out: Outcome, tl: Timelines, horizon: float) -> np.ndarray:
    """T_D of every silent departure in ``[0, horizon]`` detected within the run: the sample that
    :func:`metrics` summarises as ``td_p50`` ... ``td_max``. Public because quantiles do not add up: a
    population of several runs (:mod:`rtlib.model.population`) pools these samples to get its own."""
    ev_v = np.concatenate([out.left_viewer, out.joined_viewer])
    ev_t = np.concatenate([out.left_t, out.joined_t])
    ev_join = np.concatenate([np.zeros(len(out.left_t), dtype=bool), np.ones(len(out.joined_t), dtype=bool)])
    order = np.lexsort((ev_join, ev_t, ev_v))
    return _detection(ev_v[order], ev_t[order], ev_join[order], tl, horizon)


def _detection(ev_v: np.ndarray, ev_t: np.ndarray, ev_join: np.ndarray, tl: Timelines, horizon: float
               ) -> np.ndarray:
    """On events sorted by (viewer, time, left first): a departed viewer's last event is the left that follows
    its departure (T_D = left - depart), or a mistaken left before it (T_D = 0). A last event that is a join:
    not detected within the run."""
    departed = np.flatnonzero(tl.depart <= horizon)
    last_is_left = np.zeros(tl.n, dtype=bool)
    last_t = np.full(tl.n, np.nan)
    if len(ev_v):
        ends = np.flatnonzero(np.append(ev_v[1:] != ev_v[:-1], True))
        last_is_left[ev_v[ends]] = ~ev_join[ends]
        last_t[ev_v[ends]] = ev_t[ends]
    ok = last_is_left[departed]
    return np.maximum(last_t[departed][ok] - tl.depart[departed][ok], 0.0)


def metrics(out: Outcome, tl: Timelines, sc: ModelScenario) -> dict[str, Any]:
    horizon = sc.horizon
    stay_until = np.minimum(tl.depart, horizon)
    present_s = float(np.maximum(stay_until - tl.start, 0.0).sum())
    viewer_hours = present_s / 3600.0
    # Every event in (viewer, time) order, a left before a join at the same instant (the sweep ran first);
    # each left's next re-join is the next join position of the same viewer.
    ev_v = np.concatenate([out.left_viewer, out.joined_viewer])
    ev_t = np.concatenate([out.left_t, out.joined_t])
    ev_join = np.concatenate([np.zeros(len(out.left_t), dtype=bool), np.ones(len(out.joined_t), dtype=bool)])
    ev_away = np.concatenate([np.full(len(out.left_t), np.nan), out.joined_away])
    order = np.lexsort((ev_join, ev_t, ev_v))
    ev_v, ev_t, ev_join, ev_away = ev_v[order], ev_t[order], ev_join[order], ev_away[order]
    join_pos = np.flatnonzero(ev_join)
    left_pos = np.flatnonzero(~ev_join)
    lv, lt = ev_v[left_pos], ev_t[left_pos]
    nxt = np.searchsorted(join_pos, left_pos, side="right")
    has_next = nxt < len(join_pos)
    has_next[has_next] = ev_v[join_pos[nxt[has_next]]] == lv[has_next]
    next_join = np.full(len(lv), np.inf)
    next_join[has_next] = ev_t[join_pos[nxt[has_next]]]
    # A re-join that ends an absence (a backgrounded app, a sleeping laptop): the viewer really was away from
    # away_since on, so a left after that is a correct detection, and one before it a mistake until then.
    away = np.full(len(lv), np.nan)
    away[has_next] = ev_away[join_pos[nxt[has_next]]]
    away[~has_next] = tl.open_away[lv[~has_next]]  # departed while away: gone for good since then
    absent = ~np.isnan(away) & (lt >= away)
    next_join = np.where(~np.isnan(away) & (lt < away), away, next_join)
    dep = tl.depart[lv]
    mistake = (lt < dep) & (lt <= horizon) & ~absent
    duration = np.minimum(next_join, np.minimum(dep, horizon)) - lt
    t_m = duration[mistake]
    departed = np.flatnonzero(tl.depart <= horizon)
    t_d = _detection(ev_v, ev_t, ev_join, tl, horizon)
    n_mist = int(mistake.sum())
    q = (lambda p: float(np.quantile(t_d, p))) if len(t_d) else (lambda p: math.nan)
    per10k = 1e4 / (present_s / horizon) if present_s else math.nan  # scale to 10,000 present viewers
    in_window = out.writes_t <= horizon
    tasks = sc.tasks_per_viewer
    writes_s = float(in_window.sum()) / horizon * per10k  # upserts of the model's one task per viewer
    probe = sc.presence_mode == "probe"
    # A timer beats every viewed task; a probe's answer is one frame for all of them (one upsert each).
    frames_s = writes_s if probe else writes_s * tasks
    probes_s = (float((tl.probe_t <= horizon).sum()) / horizon * per10k) if probe and tl.probe_t is not None \
        else 0.0
    n_events = int((out.joined_t <= horizon).sum() + (out.left_t <= horizon).sum())
    events_s = n_events / horizon * per10k
    sweeps_s = out.sweeps / out.span if out.span > 0 else 0.0  # all instances; does not grow with viewers
    bytes_in = frames_s * (PONG_FRAME_BYTES if probe else HEARTBEAT_FRAME_BYTES)
    bytes_out = probes_s * PROBE_FRAME_BYTES + events_s * sc.workspace_size * EVENT_BYTES
    return {
        "viewers": tl.n, "viewer_hours": viewer_hours, "departures": int(len(departed)),
        "detected": int(len(t_d)),
        "td_p50": q(0.5), "td_p90": q(0.9), "td_p99": q(0.99), "td_max": float(t_d.max()) if len(t_d) else math.nan,
        "td_mean": float(t_d.mean()) if len(t_d) else math.nan,
        "mistakes": n_mist,
        "mistakes_per_hour": n_mist / viewer_hours if viewer_hours else math.nan,
        "mistakes_upper95": poisson_upper(n_mist) / viewer_hours if viewer_hours else math.nan,
        "tm_mean": float(t_m.mean()) if len(t_m) else 0.0,
        "tm_max": float(t_m.max()) if len(t_m) else 0.0,
        "p_a": 1.0 - float(t_m.sum()) / present_s if present_s else math.nan,
        "frames_per_s": frames_s,
        "frames_out_per_s": probes_s,
        "redis_cmds_per_s": writes_s * tasks + sweeps_s,
        "events_per_s": events_s,
        "bytes_in_per_s": bytes_in,
        "bytes_out_per_s": bytes_out,
        "bytes_per_s": bytes_in + bytes_out,
        "absences_detected": int((absent & (lt <= horizon)).sum()),
        "absence_td_p50": float(np.median((lt - away)[absent])) if absent.any() else math.nan,
        "beats_attempted": out.attempted_beats,
    }

