"""The vectorised executor: the same outcome as :mod:`rtlib.model.engine`, computed per entry in bulk.

Why it is exact. Every viewer is one user with one connection on one task, so its entry's life is decided
by its own writes and by the sweeps. Write ``k`` (Redis time ``a_k``, score ``s_k`` on its instance's clock)
is popped by the first sweep, of any instance, that runs after it at Redis (``apply > a_k``; a sweep and a
write at the same Redis instant run sweep first, the pessimistic order the engine uses too) and whose cutoff
``now - timeout`` (:meth:`PresenceConfig.cutoff`) is ``>= s_k`` (the book's inclusive ``score <= cutoff``).
Call that ``P_k``. If ``P_k <= a_{k+1}`` the sweep pops the entry before the next write (a ``presence.left``
at ``P_k``, then a re-join at ``a_{k+1}``); otherwise the next write overwrites the score. The sweep times
are each instance's :class:`~rtlib.protocol.presence_machine.PresenceMachine` timer, run by
:func:`~rtlib.protocol.presence_machine.sweep_instants` (the object the live server runs), so ``P_k`` is two
``searchsorted`` per instance. ``tests/model/test_equivalence.py`` checks event for event,
float for float, against the engine that runs :class:`PresenceProtocol` and :class:`BookStore` one event at
a time.
"""

from __future__ import annotations

import numpy as np

from rtlib.model.beats import Timelines, run_end
from rtlib.model.network import frames
from rtlib.model.outcome import Outcome, sweep_lags
from rtlib.model.scenario import ModelScenario, PresenceConfig
from rtlib.protocol.presence_machine import sweep_instants

__all__ = ["run_fast"]


def run_fast(tl: Timelines, config: PresenceConfig, sc: ModelScenario) -> Outcome:
    fr = frames(tl, sc)
    end = run_end(sc, config)
    half_rtt = sc.redis_rtt / 2
    arrival = fr.arrival()
    offsets = [sc.clock_offset(m) for m in range(sc.instances)]
    if len(set(offsets)) == 1:
        score = arrival + offsets[0]  # the receiving instance's clock
    else:
        score = arrival + np.array(offsets)[tl.instance[fr.viewer]]
    apply = arrival + half_rtt
    t_lo = float(arrival.min()) - 1.0 if len(arrival) else 0.0
    popped_at = np.full(len(apply), np.inf)
    sweeps = 0
    # Instances on the same clock sweep at the same instants (one pops), unless each sweep reads its clock late.
    groups = [(offsets[m], [m], 1) for m in range(len(offsets))] if sc.sweep_lag > 0 else \
        [(c, [offsets.index(c)], offsets.count(c)) for c in sorted(set(offsets))]
    for c, members, same_clock in groups:
        wakes = int((end - t_lo) / config.sweep_interval) + 3  # more than the timer wakes (one per interval)
        for m in members:
            # What each sweep reads on its clock: the presence machine's own timer, woken lag late (not a copy
            # of its schedule).
            lags = sweep_lags(sc, m, wakes)
            on_time = sc.sweep_lag <= 0  # no lag: the machine's own schedule, computed once per configuration
            now = np.array(sweep_instants(config, t_lo + c, end + c,
                                          None if on_time else (lambda k, lags=lags: float(lags[k]))))
            sweeps += len(now) * same_clock
            if not len(now):
                continue
            sweep_now = np.append(now, np.inf)
            sweep_apply = np.append((now - c) + half_rtt, np.inf)
            k = _first_popping(config, sweep_now, score)
            late = sweep_apply[k] <= apply  # the sweep whose cutoff fits ran before the write reached Redis
            if late.any():
                k[late] = np.maximum(k[late], np.searchsorted(sweep_apply, apply[late], side="right"))
            np.minimum(popped_at, sweep_apply[k], out=popped_at)
    next_apply = np.full(len(apply), np.inf)
    same = fr.viewer[1:] == fr.viewer[:-1]
    next_apply[:-1][same] = apply[1:][same]
    popped = np.isfinite(popped_at) & (popped_at <= next_apply)
    rejoin = np.zeros(len(apply), dtype=bool)
    rejoin[fr.first] = True
    rejoin[1:] |= popped[:-1] & same
    return Outcome(fr.viewer[rejoin], apply[rejoin], fr.viewer[popped], popped_at[popped], fr.away[rejoin], apply,
                   sweeps, fr.attempted_beats, fr.lost_beats, end)


def _first_popping(config: PresenceConfig, sweep_now: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Per score, the index of the first sweep (``sweep_now``: the times the sweeps read, sorted, last ``inf``)
    that pops it, by the server's own predicate :meth:`PresenceConfig.is_expired`: an arithmetic guess on the
    nearly even grid, then corrected against the predicate itself, so the result is exact."""
    last = len(sweep_now) - 1
    step = config.sweep_interval
    k = np.clip(np.ceil((score + config.expiry - sweep_now[0]) / step), 0, last).astype(np.int64)
    while True:
        down = (k > 0) & config.is_expired(score, sweep_now[np.maximum(k - 1, 0)])
        if not down.any():
            break
        k[down] -= 1
    while True:
        up = ~config.is_expired(score, sweep_now[k])
        if not up.any():
            return k
        k[up] += 1
