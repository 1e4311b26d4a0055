"""Presence in virtual time: the server's presence protocol on thousands of simulated viewers, in seconds.

* :mod:`rtlib.model.scenario` what a run is (viewers, client model, network, Redis, instance clocks);
* :mod:`rtlib.model.timelines` client timelines drawn from :mod:`rtlib.clientmodels.heartbeat` models, seeded;
* :mod:`rtlib.model.engine` the plain executor: :class:`~rtlib.protocol.presence_protocol.PresenceProtocol` and
  :class:`~rtlib.protocol.presence_protocol.BookStore`, one event at a time;
* :mod:`rtlib.model.fast` the vectorised executor, proven equal to the engine (``tests/model``);
* :mod:`rtlib.model.metrics` failure-detector QoS (T_D, λ_M, T_M, P_A) and cost;
* :mod:`rtlib.model.alternatives` the presence alternatives (probe, visibility beat; leave grace is a config);
* :mod:`rtlib.model.search` ``sweep`` over designs (presence mode, visibility beat) and numbers (heartbeat,
  timeout, sweep, leave grace), on several processes if asked (``workers``), and ``recommend``;
  :mod:`rtlib.model.population` a browser population run part by part and pooled; :mod:`rtlib.model.tune` the
  report ``rtlib tune`` prints;
* :mod:`rtlib.model.live` the same scenario as a live ``rtlib.lab`` run, for validation.

Needs numpy (and pandas/tqdm for ``sweep``): ``pip install 'rtlib[lab]'``.
"""

from rtlib.model.metrics import metrics, poisson_interval
from rtlib.model.scenario import ModelScenario, PresenceConfig
from rtlib.model.tune import DEFAULT_GRID, grid, pareto, recommend, simulate, sweep, sweep_many

__all__ = ["DEFAULT_GRID", "ModelScenario", "PresenceConfig", "grid", "metrics", "pareto", "poisson_interval",
           "recommend", "simulate", "sweep", "sweep_many"]
