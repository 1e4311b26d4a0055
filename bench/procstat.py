"""CPU time from ``/proc`` (Linux): per process (tree) and for the whole machine.

utime + stime of ``/proc/<pid>/stat`` cover all the threads of a process; a process *tree* adds its live
descendants too, so a server that forks workers is measured whole.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces), i.e. from 'state' on."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds; 0.0 if it has exited."""
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # Fields 14 and 15 of proc(5) (utime, stime) are at 11 and 12 once the first three are cut off.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children, grandchildren, ...), by scanning /proc for parent links."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants."""
    return sum(process_cpu_seconds(p) for p in (pid, *descendants(pid)))


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
    total = sum(values[:8])
    idle = values[3] + values[4]
    return (total - idle) / CLK_TCK, total / CLK_TCK


@dataclass
class CpuSnapshot:
    """CPU seconds of named probes at one instant (``wall`` is time.monotonic())."""

    wall: float
    seconds: dict[str, float]

    def minus(self, earlier: CpuSnapshot) -> dict[str, float]:
        """CPU seconds spent by each probe between ``earlier`` and this snapshot."""
        return {name: value - earlier.seconds[name] for name, value in self.seconds.items()}


def snapshot(probes: dict[str, Callable[[], float]]) -> CpuSnapshot:
    """Read every probe now."""
    return CpuSnapshot(time.monotonic(), {name: probe() for name, probe in probes.items()})


def summed(pids: Iterable[int]) -> Callable[[], float]:
    """A probe: the CPU seconds of several processes together."""
    pids = list(pids)
    return lambda: sum(process_cpu_seconds(p) for p in pids)
