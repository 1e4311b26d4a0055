"""Where a process's CPU goes per update, from a ``perf record -g`` file (kernel stacks included).

``RTLIB_BENCH_PERF=PREFIX python -m bench.cost.server_cost ...`` records the server and redis-server through each case's
send phase (``PREFIX-<server pid>.data``). This script sorts every sample of each process into a few kinds, by
the kernel functions on its stack, and prints them as µs of CPU per update:

* ``send``: inside ``tcp_sendmsg`` / ``unix_stream_sendmsg``. On loopback this includes the *receiver's* TCP
  receive path (softirq), so it is what one delivery costs the kernel, whoever writes it;
* ``epoll_wait``, ``read``, ``sched`` (switching the process out and in: the price of sleeping between updates);
* ``user``: everything in user space (the interpreter, the event loop, Redis's own code).

py-spy sees the Python frames but not the kernel; this sees the kernel but not the Python frames. Usage::

    python -m bench.cost.perf_top FILE.data --updates 1000 [--hz 1999]
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys

__all__ = ["classify", "per_update"]

# The first match wins, in this order: a write that wakes the reader is "send" even if it schedules.
_KINDS = (
    ("send", ("tcp_sendmsg", "unix_stream_sendmsg")),
    ("epoll_wait", ("do_epoll_wait",)),
    ("read", ("tcp_recvmsg", "unix_stream_recvmsg", "ksys_read", "__x64_sys_recvfrom")),
    ("sched", ("__schedule", "schedule", "finish_task_switch.isra.0")),
)


def classify(frames: list[str]) -> str:
    """The kind of one sample, from its stack (innermost frame first, ``name (dso)`` strings)."""
    names = {frame.split(" (", 1)[0] for frame in frames}
    for kind, markers in _KINDS:
        if names.intersection(markers):
            return kind
    return "kernel other" if frames and "kernel.kallsyms" in frames[0] else "user"


def per_update(perf_script: str) -> dict[str, collections.Counter[str]]:
    """Samples by process (``comm pid``) and kind, from ``perf script -F comm,pid,ip,sym,dso`` output."""
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for block in perf_script.split("\n\n"):
        lines = [line.strip() for line in block.strip().splitlines()]
        if len(lines) < 2:
            continue
        frames = [line.split(None, 1)[1] if " " in line else line for line in lines[1:]]
        counts[" ".join(lines[0].split())][classify(frames)] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("data", help="a perf.data file")
    parser.add_argument("--updates", type=float, required=True, help="updates sent while it was recorded")
    parser.add_argument("--hz", type=float, default=1999.0, help="the sampling rate it was recorded at")
    args = parser.parse_args(argv)
    script = subprocess.run(["perf", "script", "-i", args.data, "-F", "comm,pid,ip,sym,dso"],
                            capture_output=True, text=True, check=True).stdout
    for proc, kinds in sorted(per_update(script).items()):
        total = sum(kinds.values())
        print(f"{proc}: {total / args.hz * 1e6 / args.updates:.0f} µs/update")
        for kind, count in kinds.most_common():
            print(f"  {count / args.hz * 1e6 / args.updates:7.1f}  {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
