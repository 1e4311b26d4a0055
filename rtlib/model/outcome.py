"""What an executor reports: every presence event the store published, and what the run cost."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtlib.model.scenario import ModelScenario

__all__ = ["Outcome", "sweep_lags"]


@dataclass
class Outcome:
    """Published presence events, as (viewer, Redis time) arrays: ``joined`` (first join and every re-join)
    and ``left`` (reason ``timeout``: a sweep popped the viewer's entry). Plus counts for the cost."""

    joined_viewer: np.ndarray
    joined_t: np.ndarray
    left_viewer: np.ndarray
    left_t: np.ndarray
    joined_away: np.ndarray  # a re-join that ends an absence: when the absence began (else nan)
    writes_t: np.ndarray  # Redis time of every upsert (join or heartbeat)
    sweeps: int  # sweep scripts run, all instances
    attempted_beats: int
    lost_beats: int
    span: float  # sweeps ran from the start until here

    def events(self) -> list[tuple[int, str, float]]:
        """Every event as ``(viewer, kind, t)``, sorted: what the equivalence test compares."""
        out = [(int(v), "joined", float(t)) for v, t in zip(self.joined_viewer, self.joined_t, strict=True)]
        out += [(int(v), "left", float(t)) for v, t in zip(self.left_viewer, self.left_t, strict=True)]
        return sorted(out)


def sweep_lags(sc: ModelScenario, instance: int, count: int) -> np.ndarray:
    """How late each of an instance's ``count`` sweeps reads its clock: ``U(0, sc.sweep_lag)`` (seeded per
    instance), zeros by default. A live sweeper wakes a few ms after its grid time and cuts off at the time
    it read; that matters where beats are phase-locked to the sweep grid (server probes: every fifth probe
    tick is a sweep instant at 30 s / 5 s), where it decides whether a sweep and an answer race."""
    if sc.sweep_lag <= 0:
        return np.zeros(count)
    return np.random.default_rng([sc.seed, 5, instance]).uniform(0.0, sc.sweep_lag, count)
