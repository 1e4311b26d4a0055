"""Client timelines: when each viewer joins, what it sends, and when (if ever) it silently departs.

A :class:`Timelines` is the input both executors share (:mod:`rtlib.model.engine`, event by event, and
:mod:`rtlib.model.fast`, vectorised), so the equivalence test compares the executors on identical traffic.
:func:`generate` draws one from a :class:`~rtlib.model.scenario.ModelScenario` with numpy, seeded: the client
models' beats (:mod:`rtlib.model.beats`) in timer mode, the answers to the server's probes in probe mode
(:mod:`rtlib.model.alternatives`). :meth:`Timelines.from_beats` takes explicit beats (e.g. a live run's plan).
"""

from __future__ import annotations

import math

import numpy as np

from rtlib.clientmodels.heartbeat import parse_model
from rtlib.model.alternatives import generate_alternative, with_visibility
from rtlib.model.beats import Timelines, beats_end, draw_beats, run_end
from rtlib.model.scenario import ModelScenario, PresenceConfig

__all__ = ["Timelines", "beats_end", "generate", "run_end"]


def generate(sc: ModelScenario, config: PresenceConfig) -> Timelines:
    """Draw the viewers of ``sc`` for ``config`` (the client model's interval is ``config.heartbeat_interval``)."""
    rng = np.random.default_rng([sc.seed, 1])
    n, horizon = sc.viewers, sc.horizon
    end = beats_end(sc, config)
    start = rng.uniform(0.0, sc.join_spread, n) if sc.join_spread > 0 else np.zeros(n)
    leaves = rng.random(n) < sc.departures
    depart = np.where(leaves, rng.uniform(start, np.maximum(start, horizon)), math.inf)
    instance = np.arange(n, dtype=np.int64) % sc.instances
    if sc.presence_mode == "probe":  # the server's probes drive the beats (rtlib.model.alternatives)
        return generate_alternative(sc, config, start, depart, instance)
    stop = np.minimum(depart, end)
    model = parse_model(sc.client_spec(config.heartbeat_interval))
    if sc.visibility_beat:
        model = with_visibility(model)
    open_away = np.full(n, np.nan)
    viewer, t, ok, away = draw_beats(model, start, stop, rng, sc.seed, open_away)
    counts = np.bincount(viewer, minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Timelines(start, depart, instance, t, ok, offsets, end, away, open_away)
