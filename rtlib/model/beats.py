"""Drawing client timelines: the :class:`Timelines` both executors share and the beats of each client model.

The client models of :mod:`rtlib.clientmodels.heartbeat` that have an exact vectorised form (``interval``,
``jitter``, ``lossy``, ``background``) are drawn in bulk; so are Chrome's hidden tabs (``chrome:``,
``chromevis:``, bare or under one ``lossy:``), by :mod:`rtlib.model.chrome_beats`, which gives float for float
the beats of :func:`per_viewer_beats` (each viewer's own ``beats()`` and ``random.Random``). Every other model
goes through :func:`per_viewer_beats`, one viewer at a time (slower, same semantics).
:func:`rtlib.model.timelines.generate` draws a whole population (timer mode here, probe mode through
:mod:`rtlib.model.alternatives`); both build on this module, which imports neither (so no import cycle).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rtlib.clientmodels.heartbeat import (
    MIN_PERIOD_FRACTION,
    BackgroundTab,
    Beat,
    HeartbeatModel,
    Interval,
    Jitter,
    Lossy,
)
from rtlib.model.chrome_beats import chrome_beats, is_chrome
from rtlib.model.scenario import ModelScenario, PresenceConfig

__all__ = ["Timelines", "beats_end", "draw_beats", "per_viewer_beats", "run_end"]


@dataclass
class Timelines:
    """Per viewer: ``start`` (sends ``presence.join``), ``depart`` (vanishes silently; ``inf`` = stays),
    ``instance``; flat beats grouped by viewer in time order: ``beat_t``, ``beat_ok`` (reaches the network),
    ``beat_away`` (:attr:`Beat.away_since`, ``nan`` for most), ``offsets`` (viewer ``i``'s beats are
    ``offsets[i]:offsets[i+1]``). ``end``: no beat after it."""

    start: np.ndarray
    depart: np.ndarray
    instance: np.ndarray
    beat_t: np.ndarray
    beat_ok: np.ndarray
    offsets: np.ndarray
    end: float
    beat_away: np.ndarray | None = None
    #: per viewer: away since then when its beats end (a departure during an absence), else nan
    open_away: np.ndarray | None = None
    #: presence mode "probe": when the server sent each probe (virtual time; cost), else None
    probe_t: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.beat_away is None:
            self.beat_away = np.full(len(self.beat_t), np.nan)
        if self.open_away is None:
            self.open_away = np.full(len(self.start), np.nan)

    @property
    def n(self) -> int:
        return len(self.start)

    @classmethod
    def from_beats(cls, start: Sequence[float], depart: Sequence[float], instance: Sequence[int],
                   beats: Sequence[Sequence[Beat]], end: float) -> Timelines:
        counts = np.array([len(b) for b in beats], dtype=np.int64)
        offsets = np.zeros(len(beats) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(np.asarray(start, dtype=float), np.asarray(depart, dtype=float),
                   np.asarray(instance, dtype=np.int64),
                   np.array([b.t for bs in beats for b in bs], dtype=float),
                   np.array([b.delivered for bs in beats for b in bs], dtype=bool), offsets, float(end),
                   np.array([b.away_since for bs in beats for b in bs], dtype=float))

    def viewer_of_beats(self) -> np.ndarray:
        return np.repeat(np.arange(self.n), np.diff(self.offsets))


def run_end(sc: ModelScenario, config: PresenceConfig) -> float:
    """Sweeps run until here: past the horizon by a timeout and more, so every departure in it is announced."""
    return sc.horizon + config.expiry + 2 * config.sweep_interval + sc.skew + 10 * (sc.delay + sc.jitter) + 1.0


def beats_end(sc: ModelScenario, config: PresenceConfig) -> float:
    """Staying viewers keep beating until here (past :func:`run_end`, so no entry expires for want of beats).
    It depends on the heartbeat interval only (unless the timeout is very long), so the timelines of one
    client model serve every timeout and sweep of a grid, with the same draws."""
    return max(sc.horizon + max(600.0, 4 * config.heartbeat_interval), run_end(sc, config) + config.heartbeat_interval)


def draw_beats(model: HeartbeatModel, start: np.ndarray, stop: np.ndarray, rng: np.random.Generator, seed: int,
           open_away: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(viewer, t, delivered, away_since) of every beat in ``(start, stop]``, grouped by viewer, in time order."""
    if is_chrome(model):  # in bulk, the very beats per_viewer_beats would give (None: it cannot vouch for that)
        drawn = chrome_beats(model, start, stop, seed, _AWAY_LOOKAHEAD)
        if drawn is None:
            return per_viewer_beats(model, start, stop, seed, open_away)
        return (*drawn, np.full(len(drawn[1]), np.nan))
    if isinstance(model, Lossy) and isinstance(model.base, Interval | Jitter | BackgroundTab | Lossy):
        viewer, t, ok, away = draw_beats(model.base, start, stop, rng, seed, open_away)
        return viewer, t, ok & (rng.random(len(t)) >= model.loss), away
    if isinstance(model, Interval):
        out = _periodic(start, stop, model.interval)
    elif isinstance(model, Jitter):
        out = _jitter(model, start, stop, rng)
    elif isinstance(model, BackgroundTab):
        out = _background(model, start, stop)
    else:
        return per_viewer_beats(model, start, stop, seed, open_away)
    return (*out, np.full(len(out[1]), np.nan))


def _ramp(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ``counts`` per viewer: the viewer of each slot and its 1-based rank within the viewer."""
    viewer = np.repeat(np.arange(len(counts)), counts)
    first = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    rank = np.arange(len(viewer), dtype=np.int64) - first[viewer] + 1
    return viewer, rank


def _periodic(start: np.ndarray, stop: np.ndarray, interval: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # heartbeat.Interval: start + k * interval (computed, not accumulated), k = 1, 2, ... while <= stop.
    counts = np.floor(np.maximum(stop - start, 0.0) / interval).astype(np.int64) + 1
    viewer, k = _ramp(counts)
    t = start[viewer] + k * interval
    keep = t <= stop[viewer]
    return viewer[keep], t[keep], np.ones(int(keep.sum()), dtype=bool)


def _jitter(model: Jitter, start: np.ndarray, stop: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # heartbeat.Jitter: a chained timer, each period U(interval - jitter, interval + jitter), floored.
    floor = model.interval * MIN_PERIOD_FRACTION
    shortest = max(floor, model.interval - model.jitter)
    counts = np.ceil(np.maximum(stop - start, 0.0) / shortest).astype(np.int64) + 1
    viewer, rank = _ramp(counts)
    periods = np.maximum(floor, rng.uniform(model.interval - model.jitter, model.interval + model.jitter,
                                            len(viewer)))
    cum = np.cumsum(periods)
    first = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    before = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0.0)
    t = start[viewer] + (cum - before[viewer])
    keep = t <= stop[viewer]
    return viewer[keep], t[keep], np.ones(int(keep.sum()), dtype=bool)


def _background(model: BackgroundTab, start: np.ndarray, stop: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # heartbeat.BackgroundTab: exact interval beats until start + hidden_after; then a timer due at `due`
    # fires at the next multiple of `align`, and the next is due `interval` after it fired: from the first
    # throttled fire F0 on, beats are F0 + m * align * ceil(interval / align).
    interval, align = model.interval, model.align
    pre_n = np.maximum(np.ceil(model.hidden_after / interval) - 1, 0).astype(np.int64)  # due < throttled_from
    pre_n = np.where(start + pre_n * interval >= start + model.hidden_after, np.maximum(pre_n - 1, 0), pre_n)
    last_pre = start + pre_n * interval
    f0 = np.ceil((last_pre + interval) / align) * align
    period = align * math.ceil(interval / align)
    post_n = np.floor(np.maximum(stop - f0, -period) / period).astype(np.int64) + 1
    counts = pre_n + np.maximum(post_n, 0)
    viewer, k = _ramp(counts)
    pre = k <= pre_n[viewer]
    t = np.where(pre, start[viewer] + k * interval, f0[viewer] + (k - pre_n[viewer] - 1) * period)
    keep = t <= stop[viewer]
    return viewer[keep], t[keep], np.ones(int(keep.sum()), dtype=bool)


_AWAY_LOOKAHEAD = 24 * 3600.0  # how far past the end a model runs to find where an open absence ends


def per_viewer_beats(model: HeartbeatModel, start: np.ndarray, stop: np.ndarray, seed: int, open_away: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Any model, through its own ``beats()`` (one ``random.Random(f"{seed}:{viewer}")`` per viewer): the
    reference the bulk ``chrome:`` draws are tested against, and the path of models without a bulk form."""
    viewers, ts, oks, aways = [], [], [], []
    last = float(stop.max()) if len(stop) else 0.0
    for i, (s, e) in enumerate(zip(start.tolist(), stop.tolist(), strict=True)):
        # A viewer still away when its beats end would leave its absence open (and its presence.left would
        # look like a mistake): run the model on to find the beat that ends the absence. A staying viewer
        # keeps that beat; one that departs meanwhile records that it was away (open_away).
        for beat in model.beats(s, e + _AWAY_LOOKAHEAD, random.Random(f"{seed}:{i}")):
            if beat.t > e:
                if beat.away_since <= e and e >= last:
                    viewers.append(i)
                    ts.append(beat.t)
                    oks.append(True)
                    aways.append(beat.away_since)
                elif beat.away_since <= e:
                    open_away[i] = beat.away_since
                break
            viewers.append(i)
            ts.append(beat.t)
            oks.append(beat.delivered)
            aways.append(beat.away_since)
    return (np.array(viewers, dtype=np.int64), np.array(ts, dtype=float), np.array(oks, dtype=bool),
            np.array(aways, dtype=float))
