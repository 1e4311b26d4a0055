"""Running simulated clients: the phases of a run, in one loop or spread over worker processes.

A run has four phases, shared by the in-thread path and the workers: connect everyone, start the clock,
play the plans (then drain in-flight frames and re-request stalled resyncs), and check every cache against
the truth read from Redis. For large runs (≥ ``WORKER_THRESHOLD`` clients) the clients are split into
shards, each in a spawned process with its own event loop, so the load generator is not the bottleneck.
The processes agree on time through ``CLOCK_MONOTONIC``, which is system-wide on Linux.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rtlib.clientmodels.ordering import diverged
from rtlib.lab.recorder import Recorder
from rtlib.lab.scenario import Scenario
from rtlib.lab.sim import ClientPlan, SimClient

__all__ = ["WORKER_THRESHOLD", "Shard", "check", "connect_all", "play", "run_sharded", "start_clock"]

WORKER_THRESHOLD = 1000
Truth = dict[str, dict[str, tuple[int, dict[str, Any]]]]


@dataclass(frozen=True)
class Shard:
    """Everything a worker needs to build its clients (picklable)."""

    scenario: Scenario
    plans: list[ClientPlan]
    tokens: dict[str, str]
    urls: list[str]
    tasks: list[str]
    editor_rate: float


def build(shard: Shard, rec: Recorder) -> list[SimClient]:
    """The shard's clients. Their clock starts only once everyone is connected (:func:`play` sets it), so until
    then they share a provisional design second 0, an hour ahead; :func:`play` moves what they recorded
    while connecting onto the real one."""
    provisional = time.monotonic() + 3600
    return [SimClient(p, shard.scenario, shard.urls, shard.tokens[p.user], rec, provisional,
                      shard.tasks, shard.editor_rate if p.editor else 0.0) for p in shard.plans]


async def connect_all(clients: list[SimClient], parallel: int = 100) -> None:
    """Connect in waves of ``parallel``: a thundering herd would measure the handshake, not the design."""
    sem = asyncio.Semaphore(parallel)

    async def one(c: SimClient) -> None:
        async with sem:
            await c.connect()

    await asyncio.gather(*(one(c) for c in clients))


async def play(clients: list[SimClient], sc: Scenario, t0: float) -> None:
    """Play every plan from monotonic time ``t0``; drain; re-request resyncs that are still missing."""
    start_clock(clients, t0)
    await asyncio.gather(*(c.run(sc.duration) for c in clients))
    await asyncio.sleep(sc.drain)
    for c in clients:
        stalled: Callable[[float, float], list[str]] | None = getattr(c.cache, "stalled", None)
        for task in stalled(c.now(), 0.0) if stalled else []:
            await c.send("task.get", {"taskId": task})
    await asyncio.sleep(min(sc.drain, 1.0))


def start_clock(clients: list[SimClient], t0: float) -> None:
    """Make monotonic ``t0`` every client's design second 0. Rows recorded before (the ``connected`` rows of
    :func:`connect_all`, timed on :func:`build`'s provisional clock) are moved onto it: a tab that connected
    2 s before the start has ``t = -2 / time_scale``, not ``-3600 / time_scale``."""
    shift: dict[int, dict[str, float]] = {}
    recorders = {}
    for c in clients:
        recorders[id(c.rec)] = c.rec
        shift.setdefault(id(c.rec), {})[c.plan.user] = (c.t0 - t0) / c.sc.time_scale
        c.t0 = t0
    for key, rec in recorders.items():
        by_user = shift[key]
        rec.connections[:] = [(*row[:4], row[4] + by_user.get(row[0], 0.0), *row[5:]) for row in rec.connections]


def check(clients: list[SimClient], truth: Truth, rec: Recorder) -> dict[str, list[str]]:
    """Each live client's cache vs the truth; returns client -> diverged tasks (crashed tabs are skipped)."""
    bad = {}
    for c in clients:
        if c.plan.crash_at is not None and c.plan.crash_at < c.sc.duration:
            continue
        rec.caches[c.plan.user] = {t: c.cache.view(t) for t in c.cache.tasks()}
        if diff := diverged(c.cache, truth[c.plan.workspace]):
            bad[c.plan.user] = diff
    return bad


async def finish(clients: list[SimClient]) -> None:
    await asyncio.gather(*(c.finish() for c in clients), return_exceptions=True)


# --- worker processes ----------------------------------------------------------------------------------------
def _worker(pipe: Any, shard: Shard) -> None:
    asyncio.run(_worker_main(pipe, shard))


async def _worker_main(pipe: Any, shard: Shard) -> None:
    loop = asyncio.get_running_loop()
    rec = Recorder()
    clients = build(shard, rec)
    await connect_all(clients)
    pipe.send("ready")
    t0 = await loop.run_in_executor(None, pipe.recv)
    await play(clients, shard.scenario, t0)
    pipe.send("played")
    truth = await loop.run_in_executor(None, pipe.recv)
    bad = check(clients, truth, rec)
    await finish(clients)
    pipe.send((rec, bad))


async def run_sharded(shards: list[Shard], read_truth: Callable[[], Truth], on_start: Callable[[float], None]
                      ) -> tuple[Recorder, dict[str, list[str]]]:
    """Run each shard in a spawned process; returns the merged records and divergences."""
    ctx = mp.get_context("spawn")  # never fork a process that has threads (the lab's loop thread)
    links, procs = [], []
    for shard in shards:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, shard), daemon=True)
        proc.start()
        links.append(parent)
        procs.append(proc)
    try:
        for link in links:
            assert await asyncio.to_thread(link.recv) == "ready"
        t0 = time.monotonic() + 0.5
        on_start(t0)
        for link in links:
            link.send(t0)
        for link in links:
            assert await asyncio.to_thread(link.recv) == "played"
        truth = await asyncio.to_thread(read_truth)
        for link in links:
            link.send(truth)
        rec, bad = Recorder(), {}
        for link in links:
            part, part_bad = await asyncio.to_thread(link.recv)
            rec.merge(part)
            bad.update(part_bad)
        return rec, bad
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
