"""Frames on the wire: what reaches which instance when, and when its operation reaches Redis.

Shared by both executors. A viewer's frames are its ``presence.join`` then every beat the client model
delivered, minus the network's own ``loss``. Each frame takes ``delay + U(0, jitter)``; one connection is
one TCP stream, so a frame never overtakes an earlier one: it arrives at ``max(previous arrival, sent +
delay)``. The instance stamps it with its clock (``arrival + clock_offset``: the entry's score) and the
store operation reaches Redis ``redis_rtt / 2`` later (``apply``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtlib.model.beats import Timelines
from rtlib.model.scenario import ModelScenario

__all__ = ["Frames", "frames"]


@dataclass
class Frames:
    """Flat, grouped by viewer in send order; ``first[i]`` = index of viewer ``i``'s join."""

    viewer: np.ndarray
    sent: np.ndarray
    delay: np.ndarray  # drawn network delay of each frame
    away: np.ndarray  # the absence a frame ends (Beat.away_since, carried past lost beats), else nan
    first: np.ndarray
    attempted_beats: int  # heartbeats the clients tried to send (cost counts only the delivered ones)
    lost_beats: int

    def arrival_plain(self) -> list[float]:
        """In-order arrival times, one frame at a time (the reference the vectorised version must equal)."""
        out: list[float] = []
        prev_viewer, prev = -1, 0.0
        for v, s, d in zip(self.viewer.tolist(), self.sent.tolist(), self.delay.tolist(), strict=True):
            r = s + d
            if v == prev_viewer and r < prev:
                r = prev
            out.append(r)
            prev_viewer, prev = v, r
        return out

    def arrival(self) -> np.ndarray:
        """:meth:`arrival_plain`, vectorised: a running maximum within each viewer's frames."""
        r = self.sent + self.delay
        same = self.viewer[1:] == self.viewer[:-1]
        while True:
            late = same & (r[1:] < r[:-1])
            if not late.any():
                return r
            idx = np.flatnonzero(late) + 1
            r[idx] = r[idx - 1]


def frames(tl: Timelines, sc: ModelScenario) -> Frames:
    """The frames of ``tl`` under ``sc``'s network, seeded by ``sc.seed``."""
    rng = np.random.default_rng([sc.seed, 2])
    ok = tl.beat_ok.copy()
    attempted = len(ok)
    if sc.loss > 0:
        ok &= rng.random(len(ok)) >= sc.loss
    beat_viewer = tl.viewer_of_beats()
    kept = np.flatnonzero(ok)
    counts = np.bincount(beat_viewer[kept], minlength=tl.n) + 1  # + the join
    first = np.zeros(tl.n, dtype=np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    total = int(counts.sum())
    viewer = np.repeat(np.arange(tl.n), counts)
    sent = np.empty(total)
    sent[first] = tl.start
    is_beat = np.ones(total, dtype=bool)
    is_beat[first] = False
    sent[is_beat] = tl.beat_t[kept]  # beats are grouped by viewer in time order, as the slots are
    away = np.full(total, np.nan)
    beat_away = tl.beat_away.copy()
    for j in np.flatnonzero(~ok & ~np.isnan(beat_away)).tolist():  # a lost beat's absence ends at the next one
        if j + 1 < len(beat_away) and beat_viewer[j + 1] == beat_viewer[j] and np.isnan(beat_away[j + 1]):
            beat_away[j + 1] = beat_away[j]
    away[is_beat] = beat_away[kept]
    delay = np.full(total, sc.delay)
    if sc.jitter > 0:
        delay += rng.uniform(0.0, sc.jitter, total)
    return Frames(viewer, sent, delay, away, first, attempted, attempted - len(kept))
