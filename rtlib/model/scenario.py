"""What a virtual-time run is: the viewers, their client behaviour, the network, Redis and the instances' clocks.

Times are design seconds from the run's origin. Instance ``m``'s wall clock reads ``t + clock_offset(m)`` at
virtual time ``t``: ``sweep_phase`` (where the absolute sweep grid falls relative to the origin, the same for
every instance) plus that instance's skew. Heartbeat scores are stamped with the receiving instance's clock and
sweeps run at the multiples of the sweep interval on each instance's own clock, exactly as the live server does.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from rtlib.protocol.presence import PresenceConfig, check_presence_mode

__all__ = ["ModelScenario", "PresenceConfig"]


@dataclass(frozen=True)
class ModelScenario:
    """A seeded population of viewers; every random draw derives from ``seed``.

    ``client`` is a :func:`rtlib.clientmodels.heartbeat.parse_model` spec; ``{hb}`` in it is replaced by the
    configuration's heartbeat interval (so one scenario serves a whole grid), e.g. ``"lossy:0.1:interval:{hb}"``.
    """

    viewers: int = 1000
    hours: float = 8.0  # horizon H: metrics count what happens in [0, H]
    client: str = "interval:{hb}"
    departures: float = 0.3  # share of viewers that vanish silently (crash, discarded tab, dead network)
    join_spread: float = 60.0  # joins uniform in [0, join_spread)
    instances: int = 2
    skew: float = 0.0  # instance clocks spread evenly over [-skew/2, +skew/2] seconds
    sweep_phase: float = 0.0  # offset of the absolute sweep grid against the origin (live runs: measured)
    delay: float = 0.02  # one-way network delay of a client frame, seconds
    jitter: float = 0.01  # + U(0, jitter) per frame (TCP keeps a connection's frames in order)
    loss: float = 0.0  # network loss of heartbeat frames, on top of the client model's own
    redis_rtt: float = 0.0005  # an operation reaches Redis rtt/2 after the instance stamps it
    sweep_lag: float = 0.0  # each sweep reads its clock U(0, sweep_lag) after its grid time (must be < sweep)
    workspace_size: int = 50  # connections per workspace: fan-out of presence events (cost only)
    seed: int = 0
    # Presence alternatives (docs/protocol.md §9, rtlib.model.alternatives). "probe": the server's probes
    # drive the beats and the client model only says whether it answers; visibility_beat: chrome: models also
    # beat (and restart their timer) at every hide and show. The leave grace is PresenceConfig.leave_grace.
    presence_mode: str = "timer"
    visibility_beat: bool = False
    handler_delay: float = 0.003  # probe -> answer in the client's message handler (hidden Chromium: 1-6 ms)
    tasks_per_viewer: int = 1  # tasks each connection views (cost only: a timer beats each, a probe is one)

    def __post_init__(self) -> None:
        if self.viewers < 1 or self.instances < 1:
            raise ValueError("need at least one viewer and one instance")
        check_presence_mode(self.presence_mode)
        if self.tasks_per_viewer < 1:
            raise ValueError("tasks_per_viewer must be at least 1")
        for name in ("hours", "join_spread", "skew", "delay", "jitter", "redis_rtt", "sweep_phase",
                     "handler_delay", "sweep_lag"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
        for name in ("departures", "loss"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]")

    @property
    def horizon(self) -> float:
        return 3600.0 * self.hours

    def client_spec(self, heartbeat_interval: float) -> str:
        hb = str(int(heartbeat_interval)) if float(heartbeat_interval).is_integer() else repr(heartbeat_interval)
        return self.client.replace("{hb}", hb)

    def clock_offset(self, instance: int) -> float:
        """Instance ``instance``'s clock minus virtual time."""
        if self.instances == 1 or self.skew == 0:
            return self.sweep_phase
        return self.sweep_phase + self.skew * (instance / (self.instances - 1) - 0.5)

    @property
    def alternative(self) -> str:
        """The design this scenario runs, as a label: ``timer``, ``probe``, ``timer+visibility``."""
        return self.presence_mode + ("+visibility" if self.visibility_beat else "")

    def replace(self, **changes: object) -> ModelScenario:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def with_design(self, config: PresenceConfig) -> ModelScenario:
        """This population under ``config``'s design (its presence mode and visibility beat): the design is the
        server's setting (``PresenceConfig``), but what the clients send depends on it, so a grid that searches
        designs (:func:`rtlib.model.search.grid`) runs each configuration on the scenario this returns."""
        return self.replace(presence_mode=config.mode, visibility_beat=config.visibility_beat)
