"""CPU of a live run's processes, and whether the run measured the design or the machine (Linux ``/proc``).

A lab run puts the servers, Redis and the simulated clients on one machine. Past some load one of them runs
out of CPU and every latency measured from then on is the machine's queue, not the design's. :class:`CpuMeter`
reads utime + stime of each process (all its threads, ``/proc/<pid>/stat``) at the start and at the end of the
load window, and the machine's busy time (``/proc/stat``, tick-sampled: a rough figure that also counts other
users of the machine). :func:`saturation` applies the lab's rule:

* a group of processes (the server instances, Redis, the simulated clients) used at least
  :data:`SATURATED` (90 %) of the cores it could use: its processes' count, at most the machine's cores (each
  server instance, Redis and each client worker is one event loop, so one core at most);
* any single process used at least 90 % of one core (one event loop at its limit);
* the lab's processes together, or the whole machine, were at least 90 % busy;
* the simulated clients did not keep real time (:func:`rtlib.lab.realtime.overrun_report`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SATURATED", "CpuMeter", "descendants", "process_cpu_seconds", "saturation"]

#: The share of a group's available cores from which a run counts as saturated.
SATURATED = 0.9
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces), from 'state' on."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process (all its threads), seconds; None if it is gone."""
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, from each of its threads' ``/proc/<pid>/task/<tid>/children``."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    kids: list[int] = []
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(v) for v in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return kids


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children, grandchildren...), walking the kernel's children lists."""
    found, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        found += kids
        todo += kids
    return found


def _machine() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (tick-sampled)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK, sum(values) / CLK_TCK


@dataclass
class CpuMeter:
    """CPU per process group over one window: :meth:`start`, then :meth:`stop` returns :meth:`usage`.

    ``groups``: name -> pids (``servers``, ``redis``, ``clients``...). Read only the pids' own stat files, so a
    reading costs well under a millisecond and can run on the clients' event loop."""

    groups: Mapping[str, Sequence[int]]
    cores: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    _t: float = 0.0
    _before: dict[int, float] = field(default_factory=dict)
    _machine: tuple[float, float] = (0.0, 0.0)
    result: dict[str, Any] = field(default_factory=dict)

    def _read(self) -> dict[int, float]:
        return {p: s for pids in self.groups.values() for p in pids if (s := process_cpu_seconds(p)) is not None}

    def start(self) -> None:
        self._t, self._before, self._machine = time.monotonic(), self._read(), _machine()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self._t
        after, machine = self._read(), _machine()
        self.result = usage(self.groups, self._before, after, wall, self.cores,
                            (machine[0] - self._machine[0], machine[1] - self._machine[1]))
        return self.result


def usage(groups: Mapping[str, Sequence[int]], before: Mapping[int, float], after: Mapping[int, float],
          wall: float, cores: int, machine: tuple[float, float] = (float("nan"), float("nan"))) -> dict[str, Any]:
    """Per group: CPU seconds, cores used (CPU / wall), its available cores (processes, at most ``cores``), the
    share of them used, and its busiest process in cores; then the lab's total and the machine's busy share."""
    out: dict[str, Any] = {"wall_s": round(wall, 3), "cores": cores}
    total = 0.0
    for name, pids in groups.items():
        spent = {p: after[p] - before.get(p, after[p]) for p in pids if p in after}
        cpu = sum(spent.values())
        total += cpu
        available = max(1, min(len(pids), cores))
        out[name] = {"cpu_s": round(cpu, 3), "cores_used": round(cpu / wall, 3) if wall > 0 else float("nan"),
                     "cores_available": available, "processes": len(pids),
                     "share": round(cpu / wall / available, 3) if wall > 0 else float("nan"),
                     "busiest_process_cores": round(max(spent.values(), default=0.0) / wall, 3) if wall > 0
                     else float("nan")}
    out["lab_share"] = round(total / wall / cores, 3) if wall > 0 else float("nan")
    busy, all_ = machine
    out["machine_share"] = round(busy / all_, 3) if all_ and all_ > 0 else float("nan")
    return out


def saturation(cpu: Mapping[str, Any], realtime: Mapping[str, Any] | None = None,
               threshold: float = SATURATED) -> list[str]:
    """Why a run is saturated (the module's rule), as short phrases; empty: it was not."""
    reasons = []
    groups = [k for k, v in cpu.items() if isinstance(v, Mapping)]
    for name in groups:
        g = cpu[name]
        if g["share"] >= threshold:
            reasons.append(f"{name} {g['cores_used']:.2f} of {g['cores_available']} cores")
        elif g["busiest_process_cores"] >= threshold:
            reasons.append(f"a {name} process at {g['busiest_process_cores']:.0%} of a core")
    if cpu.get("lab_share", 0.0) >= threshold:
        reasons.append(f"lab processes {cpu['lab_share']:.0%} of {cpu['cores']} cores")
    elif cpu.get("machine_share", 0.0) >= threshold:
        reasons.append(f"machine {cpu['machine_share']:.0%} busy, the lab's own processes "
                       f"{cpu.get('lab_share', float('nan')):.0%}: other work shared the cores")
    if realtime is not None and not realtime.get("kept_real_time", True):
        reasons.append(f"clients overran {realtime['overruns']} of {realtime['wakes']} wakes")
    return reasons
