"""What a lab run records: plain lists of tuples, one list per kind of row, cheap to append on the clients' hot
path and to send between worker processes; :mod:`rtlib.lab.results` turns them into DataFrames."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Recorder"]


@dataclass
class Recorder:
    """Plain lists of tuples (see :mod:`rtlib.lab.results` for the columns)."""

    deliveries: list[tuple[Any, ...]] = field(default_factory=list)
    applies: list[tuple[Any, ...]] = field(default_factory=list)
    presence: list[tuple[Any, ...]] = field(default_factory=list)
    departures: list[tuple[Any, ...]] = field(default_factory=list)
    connections: list[tuple[Any, ...]] = field(default_factory=list)
    sends: list[tuple[Any, ...]] = field(default_factory=list)
    acks: list[tuple[Any, ...]] = field(default_factory=list)
    recoveries: list[tuple[Any, ...]] = field(default_factory=list)  # reconnect -> caught up, per resume
    lateness: list[float] = field(default_factory=list)  # per scheduled wake, design seconds late (realtime)
    cross: list[tuple[Any, ...]] = field(default_factory=list)  # deliveries of another workspace's canary
    caches: dict[str, dict[str, tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    #: Every frame a client received, counted by (receiver, type, envelope workspace, content workspace): the
    #: cross-workspace check covers every event type, not only task.updated. The content workspace is the
    #: canary (``_ws``) of a task.updated or task.snapshot, "" for frames that carry none.
    frames: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)

    def merge(self, other: Recorder) -> None:
        for name in ("deliveries", "applies", "presence", "departures", "connections", "sends", "acks",
                     "recoveries", "cross", "lateness"):
            getattr(self, name).extend(getattr(other, name))
        self.caches.update(other.caches)
        self.frames.update(other.frames)
