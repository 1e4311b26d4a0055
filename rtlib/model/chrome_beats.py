"""The Chrome hidden-tab client models drawn in bulk: ``chrome:``, ``chromevis:`` and ``lossy:P:`` over either.

Why. :meth:`rtlib.clientmodels.heartbeat.ChromeHiddenTab.beats` walks one viewer's ``setInterval`` in Python, due time
by due time, through :func:`rtlib.clientmodels.chromium.interval_fires` (the rule fitted to the recorded Chromium
traces): about 3 s per 1,000 viewers x 8 h, so a 10,000-viewer run spent ~30 s drawing beats. This module
computes the same beats with numpy, for the whole population at once.

Exact, not approximate: for the same seed it gives the same beats, float for float, as the per-viewer code
(:func:`rtlib.model.beats.per_viewer_beats`; ``tests/model/test_chrome_beats.py`` compares them on many seeds
and parameter sets), so every result drawn before stays reproducible and the per-viewer code remains the
readable reference. Three things make that possible:

* **the random draws are the per-viewer ones.** Each viewer still has its own ``random.Random(f"{seed}:{i}")``;
  only its uniform draws are taken from it (in a list comprehension, cheap). The exponential hide/show episodes
  are then ``-log(1 - u) / rate`` exactly as :meth:`random.Random.expovariate` computes them, with
  :func:`math.log` (numpy's own ``log`` may differ in the last bit), and the episode boundaries are the running
  sum, which ``numpy.cumsum`` along a row adds in the same order as the Python loop;
* **the timer is the same arithmetic.** Every due time is ``origin + interval * k`` and every alignment
  ``ceil((t + phase) / step - ALIGN_EPS) * step - phase``, the same IEEE operations in the same order as
  :mod:`rtlib.clientmodels.chromium`, with its constants;
* **the sequence is kept.** Viewers (or, with a visibility beat, the independent stretches between two
  visibility changes, where the timer restarts) advance in lock-step: each step, a lane either fires once in a
  hidden period (the throttled chain depends on the previous run) or emits its whole visible run of grid points
  up to the next hide. Steps are about the number of hidden runs of the busiest viewer (a few hundred for 8 h).

Where exactness cannot be vouched for, :func:`chrome_beats` returns ``None`` and the caller draws per viewer:
a zero-length episode with a visibility beat (a uniform draw of exactly 0, odds 2**-53 a draw; the per-viewer
code merges equal visibility changes), or times so large against the interval (> 1e8 intervals) that a grid
point's rounding could exceed :data:`~rtlib.clientmodels.chromium.GRID_EPS`.
"""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np

from rtlib.clientmodels.chromium import ALIGN_EPS, CHROMIUM, GRACE_SLOP, GRID_EPS, Throttling
from rtlib.clientmodels.heartbeat import ChromeHiddenTab, HeartbeatModel, Lossy

__all__ = ["chrome_beats", "is_chrome"]

# Past this many intervals from the origin the visible-run shortcut (next due = next grid index) is not proven.
_MAX_INTERVALS = 1e8
# Draws taken at first per viewer: its expected hide/show cycles plus this many standard deviations (and 2); the
# few viewers whose episodes need more draw on (a second, smaller pass). More spare: more wasted draws.
_SPARE_SD = 2.0


def is_chrome(model: HeartbeatModel) -> bool:
    """``model`` is one :func:`chrome_beats` draws: a :class:`ChromeHiddenTab`, bare or under one ``lossy:``."""
    return isinstance(model, ChromeHiddenTab) or (isinstance(model, Lossy) and isinstance(model.base, ChromeHiddenTab))


def chrome_beats(model: HeartbeatModel, start: np.ndarray, stop: np.ndarray, seed: int, lookahead: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(viewer, t, delivered) of every beat in ``(start, stop]``, grouped by viewer in time order: what
    ``model.beats(start[i], stop[i] + lookahead, random.Random(f"{seed}:{i}"))`` gives up to ``stop[i]``, for
    each viewer ``i`` (``lookahead`` matters to ``lossy:`` only: the episodes drawn up to there come before the
    loss draws in each viewer's stream). ``None``: the caller must draw per viewer (see the module docstring)."""
    loss = model.loss if isinstance(model, Lossy) else None
    tab = model.base if isinstance(model, Lossy) else model
    if not isinstance(tab, ChromeHiddenTab):
        raise TypeError(f"not a chrome: model: {model.spec}")
    start, stop = np.asarray(start, dtype=float), np.asarray(stop, dtype=float)
    n = len(start)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=bool)
    if float(np.max(np.abs(start) + np.abs(stop))) > _MAX_INTERVALS * tab.interval:
        return None
    streams = _Streams(seed, n, keep=loss is not None)
    ep_end = stop + lookahead if loss is not None else stop  # episodes needed: the loss draws follow them all
    cycles = np.maximum(ep_end - start, 0.0) / (tab.visible_mean + tab.hidden_mean)  # expected hide/show cycles
    target = 2 * np.ceil(cycles + _SPARE_SD * np.sqrt(cycles) + 2).astype(np.int64) + 1  # ~99.9 % of viewers
    while True:
        streams.ensure(target, logs=True)
        bounds = _episode_bounds(streams.log1m, start, tab)
        episodes = (bounds[:, 1::2] <= ep_end[:, None]).sum(axis=1)  # the draw after them ended the loop
        short = 2 * episodes + 1 > streams.drawn  # that draw is not drawn yet: draw on
        if not short.any():
            break
        target = np.where(short, 2 * streams.drawn + 1, streams.drawn)
    throttling = dataclasses.replace(CHROMIUM, grace=tab.grace, align=tab.align)
    if tab.visibility_beat:
        if np.any(streams.log1m == 0.0):  # a draw of exactly 0: a zero-length episode
            return None
        lane_viewer, fires = _visibility_lanes(bounds, start, stop, tab, throttling)
    else:
        lane_viewer, fires = np.arange(n), _plain_lanes(bounds, start, stop, tab, throttling)
    counts, t = fires
    per_viewer = np.bincount(lane_viewer, weights=counts, minlength=n).astype(np.int64)
    viewer = np.repeat(np.arange(n), per_viewer)
    if loss is None:
        return viewer, t, np.ones(len(t), dtype=bool)
    # Lossy.beats draws once per beat, after ChromeHiddenTab.beats drew all its episodes (to stop + lookahead).
    first = 2 * episodes + 1
    streams.ensure(first + per_viewer, logs=False)
    offsets = np.zeros(n, dtype=np.int64)
    np.cumsum(per_viewer[:-1], out=offsets[1:])
    rank = np.arange(len(t)) - offsets[viewer]
    return viewer, t, streams.u[viewer, first[viewer] + rank] >= loss


class _Streams:
    """Each viewer's own ``random.Random(f"{seed}:{i}")`` (the per-viewer code's), drawn only as far as needed:
    ``drawn[i]`` draws so far; ``log1m[i, :]`` the ``log(1 - u)`` of its episode draws (what ``expovariate``
    takes, by :func:`math.log`); with ``keep``, ``u[i, :drawn[i]]`` the draws themselves (a ``lossy:`` model's
    loss draws follow the episode draws). Past ``drawn[i]``: padding (``u`` 0.5), which gives episodes that only
    ever come after the ones that count."""

    def __init__(self, seed: int, n: int, *, keep: bool) -> None:
        self._draw = [random.Random(f"{seed}:{i}").random for i in range(n)]
        self.keep = keep
        self.drawn = np.zeros(n, dtype=np.int64)
        self.u = np.zeros((n, 0))
        self.log1m = np.zeros((n, 0))

    def ensure(self, target: np.ndarray, *, logs: bool) -> None:
        """Draw on until viewer ``i`` has ``target[i]`` draws (and their logs, with ``logs``)."""
        need = np.maximum(target - self.drawn, 0)
        rows = np.flatnonzero(need)
        if not rows.size:
            return
        k = need[rows]
        pairs = list(zip([self._draw[r] for r in rows.tolist()], k.tolist(), strict=True))
        row = np.repeat(rows, k)
        col = np.arange(row.size) - np.repeat(np.cumsum(k) - k - self.drawn[rows], k)
        width = int(target.max())
        if self.keep:
            draws = [draw() for draw, count in pairs for _ in range(count)]
            self.u = _widen(self.u, width, 0.5)
            self.u[row, col] = draws
            ln = np.fromiter(map(math.log, map((1.0).__sub__, draws)), dtype=float, count=len(draws)) if logs else None
        else:  # the logs only, in one pass (the hot path: a bare chrome: model)
            log = math.log
            ln = np.array([log(1.0 - draw()) for draw, count in pairs for _ in range(count)])
        if ln is not None:
            self.log1m = _widen(self.log1m, width, math.log(0.5))
            self.log1m[row, col] = ln
        self.drawn[rows] += k


def _widen(a: np.ndarray, width: int, fill: float) -> np.ndarray:
    if width <= a.shape[1]:
        return a
    return np.hstack([a, np.full((a.shape[0], width - a.shape[1]), fill)])


def _episode_bounds(log1m: np.ndarray, start: np.ndarray, tab: ChromeHiddenTab) -> np.ndarray:
    """Per viewer: ``start``, then hide 1, show 1, hide 2, ... (``heartbeat._episodes`` on these draws: an
    ``expovariate(1 / visible_mean)``, then an ``expovariate(1 / hidden_mean)``, and so on, summed in order:
    ``numpy.cumsum`` along a row adds left to right, as the Python loop does)."""
    n, width = log1m.shape
    steps = np.empty((n, width + 1))
    steps[:, 0] = start
    steps[:, 1::2] = -log1m[:, 0::2] / (1.0 / tab.visible_mean)
    steps[:, 2::2] = -log1m[:, 1::2] / (1.0 / tab.hidden_mean)
    return np.cumsum(steps, axis=1)


def _plain_lanes(bounds: np.ndarray, start: np.ndarray, stop: np.ndarray, tab: ChromeHiddenTab,
                 throttling: Throttling) -> tuple[np.ndarray, np.ndarray]:
    """``chrome:``: one lane per viewer, its timer never restarted, hidden in every period begun by its stop."""
    h0, h1 = bounds[:, 1::2], bounds[:, 2::2]
    inside = h0 <= stop[:, None]
    periods = int(inside.sum(axis=1).max())
    hide = np.full((len(start), periods + 1), np.inf)  # an inf period closes every row
    show = np.full((len(start), periods + 1), np.inf)
    hide[:, :periods] = np.where(inside[:, :periods], h0[:, :periods], np.inf)
    show[:, :periods] = np.where(inside[:, :periods], h1[:, :periods], np.inf)
    return _run_lanes(start, stop, np.full(len(start), np.inf), hide, show, None, tab, throttling)


def _visibility_lanes(bounds: np.ndarray, start: np.ndarray, stop: np.ndarray, tab: ChromeHiddenTab,
                      throttling: Throttling) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """``chromevis:``: every visibility change beats and restarts the timer, so each stretch between two changes
    is an independent lane (origin the change, a new chain), hidden or not throughout; a run at or after the
    next change is replaced by that change's restart."""
    n, cols = bounds.shape
    changes = (bounds[:, 1:] <= stop[:, None]).sum(axis=1)  # changes by the stop; a lane begins at each
    take = np.arange(cols - 1)[None, :] <= changes[:, None]
    lane_viewer, col = np.nonzero(take)
    origin = bounds[lane_viewer, col]
    cut = bounds[lane_viewer, col + 1]
    hidden = col % 2 == 1
    hide = np.full((len(col), 2), np.inf)
    show = np.full((len(col), 2), np.inf)
    hide[hidden, 0], show[hidden, 0] = origin[hidden], cut[hidden]
    first = np.where(col > 0, origin, np.nan)  # the change's own beat, from the visibilitychange handler
    return lane_viewer, _run_lanes(origin, stop[lane_viewer], cut, hide, show, first, tab, throttling)


def _aligned(t: np.ndarray, step: float, phase: float) -> np.ndarray:
    """:func:`rtlib.clientmodels.chromium.aligned` on an array (the same operations, so the same floats)."""
    return np.ceil((t + phase) / step - ALIGN_EPS) * step - phase


def _count_grid(origin: np.ndarray, m: np.ndarray, interval: float, limit: np.ndarray, strict: bool
                ) -> np.ndarray:
    """How many grid points ``origin + interval * k``, ``k = m, m+1, ...``, are ``< limit`` (``strict``) or
    ``<= limit``: an arithmetic guess, corrected against the computed floats themselves (so exact)."""
    def fits(k: np.ndarray) -> np.ndarray:
        due = origin + interval * k
        return due < limit if strict else due <= limit
    k = np.maximum(np.floor((limit - origin) / interval), m - 1)
    while (up := fits(k + 1)).any():
        k += up
    while (down := (k >= m) & ~fits(k)).any():
        k -= down
    return (k - m + 1).astype(np.int64)


def _run_lanes(origin: np.ndarray, end: np.ndarray, cut: np.ndarray, hide: np.ndarray, show: np.ndarray,
               first: np.ndarray | None, tab: ChromeHiddenTab, th: Throttling) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rtlib.clientmodels.chromium.interval_fires` for every lane at once: a ``setInterval`` started at
    ``origin``, runs ``<= end`` and ``< cut`` (a restart there), hidden in the periods ``hide[l, :] ..
    show[l, :]`` (sorted, ``inf``-padded); ``first``: a beat to put before the lane's runs (``nan``: none).
    Returns (runs per lane, all runs grouped by lane in time order). Each step records single runs and visible
    stretches (lane, rank in lane, ...); the output is written once at the end, where every rank's place is
    known (no padded buffer to fill and compact: at 10,000 viewers x 8 h that alone cost ~0.2 s)."""
    interval, phase = tab.interval, tab.phase
    grace = th.grace + GRACE_SLOP
    nl = len(origin)
    pos = np.zeros(nl, dtype=np.int64)  # runs so far, per lane
    singles: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (lane, rank, t)
    stretches: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # lane, rank, o, k, n
    if first is not None:
        has = np.flatnonzero(~np.isnan(first))
        singles.append((has, np.zeros(has.size, dtype=np.int64), first[has]))
        pos[has] = 1
    lane = np.arange(nl)
    o, e, c = origin.copy(), end.copy(), cut.copy()
    m = np.ones(nl)  # the next run is due at o + interval * m
    runs = np.zeros(nl, dtype=np.int64)
    j = np.zeros(nl, dtype=np.int64)  # the first hidden period not over by the due time
    while lane.size:
        due = o + interval * m
        while (past := show[lane, j] <= due).any():
            j += past
        h0 = hide[lane, j]
        hid = h0 <= due
        fire = due.copy()
        hi = np.flatnonzero(hid)
        if hi.size:  # the next whole second, or minute once the grace is over; shown again: at once
            d = due[hi]
            wake = _aligned(d, th.second, phase)
            heavy = (runs[hi] >= th.chain) & (wake - h0[hi] > grace)
            wake[heavy] = _aligned(d[heavy], th.align, phase)
            fire[hi] = np.minimum(wake, show[lane[hi], j[hi]])
        live = (fire < c) & (fire <= e)
        if not live.all():
            lane, o, e, c, m, runs, j, h0, hid, fire = (a[live] for a in (lane, o, e, c, m, runs, j, h0, hid, fire))
            hi = np.flatnonzero(hid)
        if hi.size:  # one throttled run each
            li = lane[hi]
            singles.append((li, pos[li], fire[hi]))
            pos[li] += 1
            runs[hi] += 1
            m[hi] = np.floor((fire[hi] - o[hi]) / interval + GRID_EPS) + 1
        vi = np.flatnonzero(~hid)
        if vi.size:  # every grid point up to the next hide (or restart, or the end)
            ov, mv, ev = o[vi], m[vi], e[vi]
            limit = np.minimum(np.minimum(h0[vi], c[vi]), ev + interval)
            count = np.minimum(_count_grid(ov, mv, interval, limit, True), _count_grid(ov, mv, interval, ev, False))
            lv = lane[vi]
            stretches.append((lv, pos[lv], ov, mv, count))
            pos[lv] += count
            runs[vi] += count
            # The next due after the stretch's last run (o + interval * (m + count - 1)), by the same rule.
            m[vi] = np.floor((ov + interval * (mv + (count - 1)) - ov) / interval + GRID_EPS) + 1
    return pos, _assemble(pos, singles, stretches, interval)


def _assemble(pos: np.ndarray, singles: list[tuple[np.ndarray, ...]], stretches: list[tuple[np.ndarray, ...]],
              interval: float) -> np.ndarray:
    """Every lane's runs in one array, grouped by lane: single runs where they belong, and each stretch of ``n``
    grid points ``o + interval * k``, ``k = m .. m + n - 1`` (the per-element arrays built by running sums).
    Written step by step, in chunks of at most :data:`_CHUNK` runs: small temporaries that the allocator
    reuses, where whole-population ones cost as much again in page faults as in arithmetic."""
    place = np.zeros(len(pos), dtype=np.int64)
    np.cumsum(pos[:-1], out=place[1:])
    out = np.empty(int(pos.sum()))
    for lane, rank, t in singles:
        out[place[lane] + rank] = t
    for lane, rank, o, k0, n in stretches:
        ends = np.cumsum(n)
        cuts = np.searchsorted(ends, np.arange(_CHUNK, int(ends[-1]), _CHUNK), side="left") + 1
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(n)], strict=True):
            if lo < hi:
                _expand(out, place[lane[lo:hi]] + rank[lo:hi], o[lo:hi], k0[lo:hi].astype(np.int64), n[lo:hi],
                        interval)
    return out


_CHUNK = 1 << 20


def _expand(out: np.ndarray, dest: np.ndarray, o: np.ndarray, first: np.ndarray, n: np.ndarray,
            interval: float) -> None:
    """Write each stretch ``i``: ``out[dest[i] + r] = o[i] + interval * (first[i] + r)``, ``r < n[i]``."""
    begin = np.zeros(len(n), dtype=np.int64)
    np.cumsum(n[:-1], out=begin[1:])
    total = int(begin[-1] + n[-1])
    index = np.ones(total, dtype=np.int64)  # running sums: +1 within a stretch, a jump between stretches
    index[begin[1:]] = dest[1:] - (dest[:-1] + n[:-1] - 1)
    index[0] = dest[0]
    np.cumsum(index, out=index)
    grid = np.ones(total, dtype=np.int64)
    grid[begin[1:]] = first[1:] - (first[:-1] + n[:-1] - 1)
    grid[0] = first[0]
    np.cumsum(grid, out=grid)
    due = grid.astype(float)  # the grid index, a whole number (exact)
    due *= interval
    due += np.repeat(o, n)  # o + interval * k, as interval_fires computes a due time
    out[index] = due
