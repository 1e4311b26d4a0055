"""What a simulation run is: a seeded, declarative :class:`Scenario`, in design seconds.

Durations are **design seconds** (what a real deployment would see). ``time_scale`` compresses them for a
live run: at ``time_scale=0.01`` a 30 s heartbeat is sent every 0.3 s of wall time, and the servers' presence
timing is scaled the same way. Results are converted back to design seconds (latency stays in real
milliseconds: the network does not get faster with the clock).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from rtlib.clientmodels.ordering import STRATEGIES
from rtlib.protocol.presence import PresenceConfig, PresenceMode

_P = PresenceConfig  # presence settings and their defaults are declared once, there

__all__ = ["Impairment", "Scenario"]


@dataclass(frozen=True)
class Impairment:
    """Per-message network trouble between each simulated client and its server (both directions).

    Each frame is held for ``delay + U(0, jitter)`` seconds (real, not design, seconds: a network property)
    and dropped with probability ``loss``. Frames held for different times overtake each other: this is the
    reordering the ordering strategies are compared under.
    """

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        if self.delay < 0 or self.jitter < 0 or not 0 <= self.loss < 1:
            raise ValueError("impairment needs delay >= 0, jitter >= 0 and 0 <= loss < 1")

    @property
    def active(self) -> bool:
        return self.delay > 0 or self.jitter > 0 or self.loss > 0


@dataclass(frozen=True)
class Scenario:
    """A seeded description of clients, their behaviour, the network and the server mode."""

    clients: int = 20
    workspaces: int = 1
    tasks: int = 10  # per workspace
    duration: float = 10.0  # design seconds of load, after everyone connected
    editors: float = 0.25  # share of clients that edit
    update_rate: float = 20.0  # task.update per design second, whole run (Poisson, open loop)
    hot_tasks: int = 2  # per workspace: the first N tasks...
    hot_share: float = 0.5  # ...receive this share of all edits, so concurrent edits collide
    viewers: float = 0.5  # share of clients that open a task view (presence.join + heartbeats)
    crash: float = 0.0  # share of viewers whose socket is dropped mid-run with no leave
    churn: float = 0.0  # share of clients that disconnect and reconnect mid-run
    heartbeat: str = "interval:30"  # a rtlib.clientmodels.heartbeat model spec, in design seconds
    heartbeat_interval: float = _P.heartbeat_interval  # server settings, design seconds (defaults: PresenceConfig)
    presence_timeout: float = _P.timeout
    sweep_interval: float = _P.sweep_interval
    # Presence alternatives (docs/protocol.md §9): "probe" = the server probes, the clients' answers are the
    # beats (their heartbeat model then only says when they stop answering); visibility_beat is announced to
    # clients; leave_grace holds a timeout's presence.left back (design seconds).
    presence_mode: PresenceMode = _P.mode
    visibility_beat: bool = _P.visibility_beat
    leave_grace: float = _P.leave_grace
    publish_mode: Literal["atomic", "split"] = "atomic"
    ordering: str = "gap_resync"
    impairment: Impairment = field(default_factory=Impairment)
    time_scale: float = 1.0
    seed: int = 0
    drain: float = 2.0  # real seconds to wait for in-flight frames after the load stops

    def __post_init__(self) -> None:
        if self.clients < 1 or self.workspaces < 1 or self.tasks < 1:
            raise ValueError("need at least one client, workspace and task")
        if self.clients < self.workspaces:
            raise ValueError("need at least one client per workspace")
        for name in ("editors", "viewers", "crash", "churn", "hot_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a share between 0 and 1")
        for name in ("duration", "update_rate", "time_scale", "heartbeat_interval", "presence_timeout",
                     "sweep_interval"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0) and not (name == "update_rate" and value == 0):
                raise ValueError(f"{name} must be positive")
        if self.ordering not in STRATEGIES:
            raise ValueError(f"ordering must be one of {STRATEGIES}")
        if self.publish_mode not in ("atomic", "split"):
            raise ValueError("publish_mode must be 'atomic' or 'split'")
        self.presence  # noqa: B018 - validates the presence settings (mode, grace) in their one place
        if self.hot_tasks > self.tasks:
            raise ValueError("hot_tasks cannot exceed tasks")

    def wall(self, design_seconds: float) -> float:
        """Design seconds -> wall seconds of a live run."""
        return design_seconds * self.time_scale

    @property
    def presence(self) -> PresenceConfig:
        """The presence settings, in design seconds (validated by :class:`PresenceConfig` itself)."""
        return PresenceConfig(self.heartbeat_interval, self.presence_timeout, self.sweep_interval, self.leave_grace,
                              self.presence_mode, self.visibility_beat)

    def server_options(self) -> dict[str, object]:
        """The server settings this scenario needs, in wall seconds."""
        return {"heartbeat_interval": self.wall(self.heartbeat_interval),
                "presence_timeout": self.wall(self.presence_timeout),
                "sweep_interval": self.wall(self.sweep_interval), "publish_mode": self.publish_mode,
                "presence_mode": self.presence_mode, "visibility_beat": self.visibility_beat,
                "leave_grace": self.wall(self.leave_grace)}

    def replace(self, **changes: object) -> Scenario:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
