"""Presence alternatives in the model (issue 10, ``docs/protocol.md`` §9): which beats reach the server when
the design is not "the client's own timer".

Each alternative only changes *when a viewer's beats are sent*, so it is an adapter that turns a client model
(:mod:`rtlib.clientmodels.heartbeat`) plus the alternative into :class:`~rtlib.model.timelines.Timelines`; both
executors then run the server's unchanged rules on them (the equivalence test covers every alternative):

* **timer** (today): the client model's beats.
* **probe** (``presence_mode="probe"``): the server sends ``presence.probe`` on its :class:`Prober` schedule
  (first probe one interval after the join reached the instance, then every interval, sent on ticks
  ``interval / 30`` apart on the *instance* clock) and the client's message handler answers at once, hidden or
  not (a hidden Chromium tab runs ``onmessage`` within 1-6 ms). A beat is that answer: probe sent + the trip
  out + ``handler_delay``; :mod:`rtlib.model.network` adds the trip back. The client model only says whether
  the viewer answers: not after it departed, not while its page is suspended (``ios``, ``sleep``: the beats'
  ``away_since`` windows), and a ``lossy`` model loses that share of the answers (as ``rtlib.lab.sim`` does).
  :func:`probe_sends` calls the Prober's own schedule functions on arrays; ``tests/model/test_alternatives.py``
  drives a real :class:`~rtlib.protocol.presence_machine.PresenceMachine` and checks they agree.
* **visibility beat** (``visibility_beat=True``): a ``chrome:`` model becomes its ``chromevis:`` twin
  (:func:`rtlib.clientmodels.chromium.visibility_beats`, the rule calibrated on recorded Chromium traces): a beat at
  every hide and show, and the ``setInterval`` restarted from the handler (a new timer chain, which Chromium
  does not throttle heavily for its first 6 runs). It draws the same hide/show episodes, so timer and
  visibility runs of one seed are paired. Models without visibility episodes are unchanged.
* **leave grace**: not a client change at all: ``PresenceConfig.leave_grace`` (the sweep pops ``timeout +
  grace`` after the last beat), a grid dimension of :func:`rtlib.model.tune.grid`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from rtlib.clientmodels.heartbeat import (
    BackgroundTab,
    ChromeHiddenTab,
    HeartbeatModel,
    Interval,
    Jitter,
    Lossy,
    parse_model,
)
from rtlib.model.beats import Timelines, beats_end, draw_beats
from rtlib.model.scenario import ModelScenario, PresenceConfig
from rtlib.protocol.probes import TICKS_PER_INTERVAL, probe_due, send_tick

__all__ = ["ALTERNATIVES", "client_loss", "generate_alternative", "probe_sends",
           "probe_timelines", "with_visibility"]

#: The alternatives side by side: label -> (ModelScenario fields, leave grace in seconds).
ALTERNATIVES: dict[str, tuple[dict[str, object], float]] = {
    "timer": ({}, 0.0),
    "probe": ({"presence_mode": "probe"}, 0.0),
    "visibility beat": ({"visibility_beat": True}, 0.0),
    "leave grace 15 s": ({}, 15.0),
}


def with_visibility(model: HeartbeatModel) -> HeartbeatModel:
    """``model`` with a beat on visibility changes (only ``chrome:`` models have them; a lossy one stays lossy)."""
    if isinstance(model, Lossy):
        return Lossy(with_visibility(model.base), model.loss)
    return dataclasses.replace(model, visibility_beat=True) if isinstance(model, ChromeHiddenTab) else model


def client_loss(model: HeartbeatModel) -> float:
    """The share of probe answers the client model loses (``lossy:`` wrappers, combined)."""
    keep = 1.0
    while isinstance(model, Lossy):
        keep *= 1.0 - model.loss
        model = model.base
    return 1.0 - keep


def probe_sends(join_clock: np.ndarray, stop_clock: np.ndarray, interval: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Every probe a :class:`~rtlib.protocol.probes.Prober` sends, in bulk, by its own rule
    (:func:`~rtlib.protocol.probes.probe_due`, :func:`~rtlib.protocol.probes.send_tick`, called on arrays): per
    viewer watched at ``join_clock`` on its instance's clock, probe ``n`` is due ``n`` intervals later and sent
    at the first tick at or after, while ``<= stop_clock``. Returns (viewer, instance-clock send time), grouped
    by viewer in time order."""
    counts = np.floor(np.maximum(stop_clock - join_clock, 0.0) / interval).astype(np.int64) + 1
    viewer = np.repeat(np.arange(len(counts)), counts)
    first = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    n = np.arange(len(viewer)) - first[viewer] + 1  # 1, 2, ... per viewer
    send = send_tick(probe_due(join_clock[viewer], n, interval), interval / TICKS_PER_INTERVAL)
    keep = send <= stop_clock[viewer]
    return viewer[keep], send[keep]


def probe_timelines(start: np.ndarray, depart: np.ndarray, instance: np.ndarray, config: PresenceConfig,
                    sc: ModelScenario, end: float, *, answered: Sequence[Sequence[bool]] | None = None,
                    loss: float = 0.0, absences: Sequence[Sequence[tuple[float, float]]] | None = None,
                    open_away: np.ndarray | None = None) -> Timelines:
    """Timelines of probe-mode viewers: each beat is the answer to a probe.

    The join reaches its instance ``delay + jitter / 2`` after ``start`` (the model draws the join's own
    jitter later, in :func:`rtlib.model.network.frames`: the probe phase may be off by up to ``jitter / 2``).
    A probe reaches the client after ``delay + U(0, jitter)`` (seeded ``[seed, 3]``); the client answers
    ``handler_delay`` later if it has not departed by then and is not in one of its ``absences`` ((begin,
    end) windows: no JavaScript runs; the first answer after one ends it, ``away_since`` = begin).
    ``answered``: per viewer, whether its k-th probe is answered (a live run's own draws); otherwise each
    answer is lost with ``loss`` (seeded ``[seed, 4]``). A probe lost on the way out (``sc.loss``) is never
    answered; the answer's own network loss is :func:`rtlib.model.network.frames`'."""
    offsets = np.array([sc.clock_offset(m) for m in range(sc.instances)])[instance]
    join_clock = start + sc.delay + sc.jitter / 2 + offsets
    stop = np.minimum(depart, end)
    viewer, send_clock = probe_sends(join_clock, stop + offsets, config.heartbeat_interval)
    rng = np.random.default_rng([sc.seed, 3])
    sent = send_clock - offsets[viewer]
    reach = sent + sc.delay + (rng.uniform(0.0, sc.jitter, len(sent)) if sc.jitter > 0 else 0.0)
    beat_t = reach + sc.handler_delay
    counts = np.bincount(viewer, minlength=len(start))
    first = _offsets(viewer, len(start))[:-1]
    if answered is not None:  # a live run's draws: the k-th probe a viewer receives uses its k-th draw
        ok = np.ones(len(sent), dtype=bool)
        for v, (lo, c) in enumerate(zip(first.tolist(), counts.tolist(), strict=True)):
            drawn = list(answered[v][:c])
            ok[lo:lo + len(drawn)] = drawn
    else:
        ok = np.random.default_rng([sc.seed, 4]).random(len(sent)) >= loss
    if sc.loss > 0:
        ok &= rng.random(len(sent)) >= sc.loss
    away = np.full(len(sent), np.nan)
    alive = beat_t <= stop[viewer]
    open_away = np.full(len(start), np.nan) if open_away is None else open_away
    for v, windows in enumerate(absences or ()):
        lo, hi = int(first[v]), int(first[v] + counts[v])
        r = reach[lo:hi]
        for begin, until in windows:  # every window first: the answer that ends one may fall in the next
            alive[lo:hi] &= ~((r >= begin) & (r < until))
        for begin, until in windows:
            after = np.flatnonzero((r >= until) & alive[lo:hi])
            if len(after) and np.isnan(away[lo + after[0]]):
                away[lo + after[0]] = begin
            elif not len(after) and begin <= stop[v] and np.isnan(open_away[v]):
                open_away[v] = begin  # still away when the probes end: gone for good since then
    keep = alive
    tl = Timelines(start, depart, instance, beat_t[keep], ok[keep], _offsets(viewer[keep], len(start)), end,
                   away[keep], open_away)
    tl.probe_t = sent[sent <= np.minimum(depart, end)[viewer]]
    return tl


def _offsets(viewer: np.ndarray, n: int) -> np.ndarray:
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(viewer, minlength=n), out=offsets[1:])
    return offsets


def _absences(model: HeartbeatModel, start: np.ndarray, stop: np.ndarray, seed: int
              ) -> tuple[list[list[tuple[float, float]]], np.ndarray]:
    """The (begin, end) windows in which each viewer's page runs no JavaScript, from the client model's own
    beats (``away_since``); and ``open_away`` (departed during one). Models without such windows: none."""
    base = model
    while isinstance(base, Lossy):
        base = base.base
    n = len(start)
    open_away = np.full(n, np.nan)
    if isinstance(base, Interval | Jitter | BackgroundTab | ChromeHiddenTab):
        return [[] for _ in range(n)], open_away
    rng = np.random.default_rng([seed, 1, 1])
    viewer, t, _, away = draw_beats(base, start, stop, rng, seed, open_away)
    out: list[list[tuple[float, float]]] = [[] for _ in range(n)]
    for v, end, begin in zip(viewer.tolist(), t.tolist(), away.tolist(), strict=True):
        if not math.isnan(begin):
            out[v].append((begin, end))
    return out, open_away


def generate_alternative(sc: ModelScenario, config: PresenceConfig, start: np.ndarray, depart: np.ndarray,
                         instance: np.ndarray) -> Timelines:
    """Probe-mode timelines for :func:`rtlib.model.timelines.generate` (which has drawn the viewers)."""
    model = parse_model(sc.client_spec(config.heartbeat_interval))
    end = beats_end(sc, config)
    absences, open_away = _absences(model, start, np.minimum(depart, end), sc.seed)
    return probe_timelines(start, depart, instance, config, sc, end, loss=client_loss(model), absences=absences,
                           open_away=open_away)

