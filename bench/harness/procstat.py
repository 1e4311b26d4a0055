"""CPU time from ``/proc`` (Linux): per process (tree) and for the whole machine.

utime + stime of ``/proc/<pid>/stat`` cover all the threads of a process; a process *tree* adds its live
descendants too, so a server that forks workers is measured whole. Per-process times are precise (the
scheduler's runtime, split into user/system by tick samples); the machine-wide ``/proc/stat`` is tick-sampled
only, and undercounts short bursts of work on a mostly idle machine: use it as a rough figure.
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


def cpu_by_pid() -> dict[int, float]:
    """CPU seconds of every live process on the machine (kernel threads included), by pid."""
    return {int(entry): process_cpu_seconds(int(entry)) for entry in os.listdir("/proc") if entry.isdigit()}


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds all processes spent between two :func:`cpu_by_pid` readings. A process that started in
    between counts whole; one that exited in between is missed (its final time is gone with it)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants."""
    return sum(process_cpu_seconds(p) for p in (pid, *descendants(pid)))


def _machine_ticks() -> list[int]:
    """The 'cpu' line of /proc/stat: user nice system idle iowait irq softirq steal (guest is in user)."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:9]]


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    values = _machine_ticks()
    total = sum(values)
    idle = values[3] + values[4]
    return (total - idle) / CLK_TCK, total / CLK_TCK


def machine_irq_seconds() -> float:
    """Seconds all cores spent in hard and soft interrupts since boot. Loopback TCP delivery runs largely
    in softirq context, which (with IRQ time accounting) is charged to no process: it shows up here."""
    values = _machine_ticks()
    return (values[5] + values[6]) / CLK_TCK


@dataclass
class CpuSnapshot:
    """CPU seconds of named probes at one instant (``wall`` is time.monotonic())."""

    wall: float
    seconds: dict[str, float]
    by_pid: dict[int, float]  # every process on the machine

    def minus(self, earlier: CpuSnapshot) -> dict[str, float]:
        """CPU seconds spent by each probe between ``earlier`` and this snapshot."""
        return {name: value - earlier.seconds[name] for name, value in self.seconds.items()}


def snapshot(probes: dict[str, Callable[[], float]]) -> CpuSnapshot:
    """Read every probe now."""
    return CpuSnapshot(time.monotonic(), {name: probe() for name, probe in probes.items()}, cpu_by_pid())


def precise_cpu_seconds(pid: int) -> float:
    """CPU seconds of every thread of one process from the scheduler's nanosecond runtime
    (``/proc/<pid>/task/*/schedstat``); 0.0 if it has exited. ``/proc/<pid>/stat`` reports in clock ticks (10 ms):
    a Redis node spending 1-2 ms per second needs better than that to tell 10 % apart over a few seconds.
    Only live threads are counted (an exited thread's time stays in ``/proc/<pid>/stat``, in no task's
    schedstat): right for redis-server, whose threads live as long as it does; a difference between two readings
    is exact as long as no thread exits in between."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue  # a thread that exited between the listing and the read
    return total / 1e9


def summed(pids: Iterable[int], read: Callable[[int], float] = process_cpu_seconds) -> Callable[[], float]:
    """A probe: the CPU seconds of several processes together (``read``: one process's, e.g.
    :func:`precise_cpu_seconds`)."""
    pids = list(pids)
    return lambda: sum(read(p) for p in pids)
