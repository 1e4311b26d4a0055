"""Profiling aid (not part of rtlib): log event-loop iterations whose callbacks ran for more than 10 ms, and what
ran in them (callbacks and task coroutines, counts and time), to find what stalls a loop under load.

Use: ``LOOPSPY=/tmp/loopspy.log PYTHONPATH=bench/hostile/loopspy python -m bench.hostile.run --only load ...``
(every Python process started with that environment loads it, the server under test included; it forces
asyncio's own loop, because uvloop's handles cannot be timed from Python). ``LOOPSPY_MS`` sets the threshold
(default 10 ms; 0 logs every iteration). Each line: wall time, pid, the iteration's callback time, the
number of handles, and the six costliest callback kinds.
"""

import collections
import os
import sys
import time

if os.environ.get("LOOPSPY"):
    sys.modules["uvloop"] = None  # type: ignore[assignment]  # force asyncio's loop: its Handle can be timed
    import asyncio.base_events as be
    import asyncio.events as ev

    THRESHOLD = float(os.environ.get("LOOPSPY_MS", "10")) / 1000  # log iterations busier than this
    PID = os.getpid()
    out = open(os.environ["LOOPSPY"], "a")  # noqa: SIM115 - open for the life of the process
    cur: collections.Counter[str] = collections.Counter()
    dur: collections.Counter[str] = collections.Counter()
    orig_run = ev.Handle._run
    orig_once = be.BaseEventLoop._run_once

    def _run(self: ev.Handle) -> None:
        t = time.perf_counter()
        cb = self._callback  # read first: a handle may cancel itself (and clear it) while it runs
        try:
            return orig_run(self)
        finally:
            name = getattr(cb, "__qualname__", None) or type(cb).__name__
            owner = getattr(cb, "__self__", None)
            if owner is not None and hasattr(owner, "get_coro"):
                coro = owner.get_coro()
                name = "Task:" + getattr(coro, "__qualname__", str(coro))
            cur[name] += 1
            dur[name] += time.perf_counter() - t

    def _run_once(self: be.BaseEventLoop) -> None:
        cur.clear()
        dur.clear()
        orig_once(self)
        busy = sum(dur.values())
        if busy > THRESHOLD:
            top = sorted(dur.items(), key=lambda kv: -kv[1])[:6]
            out.write(f"{time.time():.3f} pid {PID} iter {busy * 1000:.1f}ms handles {sum(cur.values())} "
                      + "; ".join(f"{k} x{cur[k]} {v * 1000:.1f}ms" for k, v in top) + "\n")
            out.flush()

    ev.Handle._run = _run  # type: ignore[method-assign]
    be.BaseEventLoop._run_once = _run_once  # type: ignore[method-assign]
