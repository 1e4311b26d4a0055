"""The in-process lab: a real Redis, N real server instances, and simulated clients, safe in a notebook.

Servers run as ``rtlib serve`` child processes (real isolation: a cell that blocks the kernel cannot
freeze them, and an instance can be SIGKILLed for failure studies); the simulated clients run on a
:class:`~rtlib.lab.loopthread.LoopThread`, never on the kernel's own loop. ``Cluster.run`` blocks with a tqdm
progress bar; ``Cluster.run_async`` is its twin for async callers. Each run records the CPU of the server
instances, Redis and the simulated clients over its load window in ``Results.meta["cpu"]`` (:mod:`rtlib.lab.cpu`),
so a report can tell a saturated point from the design's own latency.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rtlib.lab.cpu import CpuMeter, descendants
from rtlib.lab.failures import Failover, Failure, Injector, acked_missing, check_failures
from rtlib.lab.loopthread import LoopThread
from rtlib.lab.progress import step as progress_step
from rtlib.lab.recorder import Recorder
from rtlib.lab.redis_access import flush, redis_client
from rtlib.lab.results import Results
from rtlib.lab.scenario import Scenario
from rtlib.lab.sim import plan_clients
from rtlib.lab.workers import WORKER_THRESHOLD, Shard, build, check, connect_all, finish, play, run_sharded
from rtlib.server import keyspace
from rtlib.server.auth import issue_token
from rtlib.server.redis_cluster import RedisClusterProcess
from rtlib.server.redis_process import RedisProcess, die_with_parent, free_port, stop_process

__all__ = ["Cluster", "Failure"]


class _Instance:
    def __init__(self, index: int, redis_url: str, secret: str, options: dict[str, Any], logdir: Path,
                 port: int | None = None) -> None:
        self.index, self.port = index, port or free_port()
        args = [sys.executable, "-m", "rtlib.cli", "serve", "--port", str(self.port), "--redis", redis_url,
                "--server-id", f"i{index}", "--log-level", os.environ.get("RTLIB_LAB_LOG_LEVEL", "WARNING")]
        for name, value in options.items():
            if isinstance(value, bool):  # a store_true flag: present or absent
                args += [f"--{name.replace('_', '-')}"] if value else []
            else:
                args += [f"--{name.replace('_', '-')}", str(value)]
        self.log = open(logdir / f"instance-{index}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, env={**os.environ, "RTLIB_SECRET": secret}, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, preexec_fn=die_with_parent)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "serving" not in line:
            self.stop()
            # rtlib serve says what went wrong in its last stderr line (e.g. "cannot reach Redis at ...").
            said = [t for t in Path(self.log.name).read_text(errors="replace").splitlines() if t.strip()]
            why = line.strip() or (said[-1].strip() if said else f"exit status {self.proc.returncode}")
            raise RuntimeError(f"instance {index} did not start: {why} (log: {self.log.name})")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig, timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


class Cluster:
    """A real Redis (embedded, or ``redis`` URL) and ``instances`` server processes on it.

    ``redis_shards=N``: a local Redis Cluster instead of one embedded Redis, ``N`` masters with ``replicas`` each
    (``redis-server --cluster-enabled``, created by :class:`~rtlib.server.redis_cluster.RedisClusterProcess`,
    ``cluster-node-timeout`` ``node_timeout`` s, ``cluster-require-full-coverage`` ``full_coverage``); the instances
    find it from one node's URL (``rtlib serve`` detects cluster mode). Failures to inject in a run
    (``failures=[...]``): :mod:`rtlib.lab.failures`.

    ``server_options`` are ``rtlib serve`` options (``rate_limit=...``); presence timing and publish mode are
    set per scenario (the instances restart when a scenario needs different ones).
    """

    def __init__(self, instances: int = 2, redis: str | None = None, redis_persist: bool = False,
                 keep_logs: bool = False, redis_shards: int | None = None, replicas: int = 0,
                 node_timeout: float = 2.0, full_coverage: bool = True, **server_options: Any) -> None:
        if instances < 1 or (redis_shards is not None and (redis_shards < 1 or redis is not None)):
            raise ValueError("need at least one instance, and redis_shards >= 1 without a redis URL")
        self.redis_shards, self.replicas, self.node_timeout = redis_shards, replicas, node_timeout
        self.full_coverage = full_coverage
        self.failovers: list[Failover] = []  # the last run's "master" failures (also in its meta)
        self._redis_cluster: RedisClusterProcess | None = None
        self.n = instances
        self.redis_url = redis
        # An append-only file for the embedded Redis: a Redis restart then keeps every acked write (and the
        # history's epoch), as a production Redis with AOF would; without it a restart is a new, empty Redis.
        self.redis_persist = redis_persist
        self.server_options = server_options
        self.secret = secrets.token_hex(32)
        self._redis_proc: RedisProcess | None = None
        self._instances: list[_Instance] = []
        self._options: dict[str, Any] | None = None
        self._loop: LoopThread | None = None
        # The instances' logs: removed by close() unless keep_logs (or an instance failed to start: its error
        # message names its log).
        self._logdir = Path(tempfile.mkdtemp(prefix="rtlib-lab-"))
        self.keep_logs = keep_logs
        self.workers: int | None = None  # worker processes for clients; None: automatic (>= 1,000 clients)
        self.calibration_ms = float("nan")
        self.started_at: float | None = None  # wall clock (time.time()) of design second 0 of the last run

    # --- lifecycle ------------------------------------------------------------------------------------------
    def start(self, scenario: Scenario | None = None) -> Cluster:
        self._logdir.mkdir(exist_ok=True)  # again after a close()
        if self.redis_url is None and self.redis_shards is not None:
            self._redis_cluster = RedisClusterProcess(self.redis_shards, self.replicas, self.node_timeout,
                                                      full_coverage=self.full_coverage).start()
            self.redis_url = self._redis_cluster.url
        elif self.redis_url is None:
            self._redis_proc = RedisProcess(persist=self.redis_persist).start()
            self.redis_url = self._redis_proc.url
        self._loop = LoopThread()
        self._configure((scenario or Scenario()).server_options())
        return self

    def _configure(self, options: dict[str, Any]) -> None:
        options = {**self.server_options, **options}
        if options == self._options and all(i.alive for i in self._instances):
            return
        for inst in self._instances:
            inst.stop()
        assert self.redis_url is not None
        try:
            self._instances = [_Instance(k, self.redis_url, self.secret, options, self._logdir)
                               for k in range(self.n)]
        except RuntimeError:
            self.keep_logs = True
            raise
        self._options = options

    def close(self) -> None:
        """Stop every instance, the client loop and the embedded Redis; nothing is left running."""
        for inst in self._instances:
            inst.stop()
        self._instances = []
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        if self._redis_proc is not None or self._redis_cluster is not None:
            for proc in (self._redis_proc, self._redis_cluster):
                if proc is not None:
                    proc.stop()
            self._redis_proc = self._redis_cluster = None
            self.redis_url = None
        if not self.keep_logs:
            shutil.rmtree(self._logdir, ignore_errors=True)

    @property
    def logdir(self) -> Path:
        """Where the instances write their logs (``instance-N.log``); gone after close() unless ``keep_logs``."""
        return self._logdir

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def urls(self) -> list[str]:
        return [i.url for i in self._instances]

    def restart(self) -> None:
        """Stop and start every instance (after a failure study killed some)."""
        options, self._options = self._options or {}, None
        self._configure({k: v for k, v in options.items() if k not in self.server_options})

    def kill_instance(self, index: int) -> None:
        """SIGKILL one instance: its clients see the socket drop, its presence entries expire by timeout."""
        self._instances[index].stop(signal.SIGKILL)

    def stop_instance(self, index: int) -> None:
        """SIGTERM one instance: graceful, close 1001 and ``presence.left`` (disconnect) for its clients."""
        self._instances[index].stop(signal.SIGTERM)

    def start_instance(self, index: int) -> None:
        """Start a killed or stopped instance again, on the same port (clients keep their list of URLs)."""
        old = self._instances[index]
        if old.alive:
            return
        assert self.redis_url is not None
        self._instances[index] = _Instance(index, self.redis_url, self.secret, self._options or {}, self._logdir,
                                           port=old.port)

    def restart_redis(self, down: float = 0.0) -> None:
        """SIGKILL the embedded Redis, wait ``down`` seconds, start it again on the same port. With
        ``redis_persist`` its data (tasks, versions, history, epoch) survives; without, it comes back empty."""
        if self._redis_proc is None:
            raise RuntimeError("restart_redis needs the embedded Redis (Cluster(redis=None))")
        self._redis_proc.crash()
        time.sleep(down)
        self._redis_proc.start()

    async def freeze(self, pid: int | None, seconds: float) -> None:
        """SIGSTOP ``pid`` for ``seconds`` (wall), then SIGCONT, also when cancelled: a process is never left
        stopped."""
        if pid is None:
            raise RuntimeError("nothing to freeze: the process is not running")
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    @property
    def pids(self) -> dict[str, int | None]:
        """Process ids of the instances (``i0``, ``i1``...; None while down) and of the embedded Redis."""
        out: dict[str, int | None] = {f"i{i.index}": i.proc.pid if i.alive else None for i in self._instances}
        out["redis"] = self._redis_proc.pid if self._redis_proc is not None else None
        return out

    # --- running scenarios --------------------------------------------------------------------------------------
    def run(self, scenario: Scenario, failures: Sequence[Failure] = (), progress: bool = True) -> Results:
        """Run ``scenario`` (blocking; the servers and clients keep running if the caller's thread blocks)."""
        if self._loop is None:
            self.start(scenario)
        self._configure(scenario.server_options())
        assert self._loop is not None
        progress_step(f"{scenario.clients} clients, {scenario.duration:g} design s")
        bar = tqdm(total=round(scenario.duration), unit="s", desc=f"{scenario.clients} clients",
                   disable=not progress, leave=False)
        try:
            return self._loop.run(self._run(scenario, failures, bar))
        finally:
            bar.close()

    async def run_async(self, scenario: Scenario, failures: Sequence[Failure] = ()) -> Results:
        """The awaitable twin of :meth:`run` (the work still happens on the lab's own loop thread)."""
        # Started from the caller's thread on purpose (it blocks about a second): child processes are tied to
        # the thread that spawned them (die_with_parent), and a worker thread may go away.
        if self._loop is None:
            self.start(scenario)
        self._configure(scenario.server_options())
        assert self._loop is not None
        return await asyncio.wrap_future(self._loop.submit(self._run(scenario, failures, None)))

    async def _run(self, sc: Scenario, failures: Sequence[Failure], bar: Any) -> Results:
        assert self.redis_url is not None
        check_failures(failures, self.redis_shards, self.replicas)
        flush(self.redis_url)
        self.failovers = []
        plans = plan_clients(sc, self.n)
        n_editors = sum(p.editor for p in plans)
        tokens = {p.user: issue_token(self.secret, p.user, [p.workspace], ttl=86400) for p in plans}
        tasks = [f"t{i}" for i in range(sc.tasks)]
        rate = sc.update_rate / n_editors
        side_jobs: list[asyncio.Task[None]] = []
        failing = Injector(self, self._redis_cluster)
        t0_wall = 0.0
        meter = CpuMeter({})

        def on_start(t0: float) -> None:  # the clock starts once everyone is connected
            nonlocal t0_wall, meter
            t0_wall = self.started_at = time.time() + (t0 - time.monotonic())
            meter = CpuMeter(self._process_groups())
            side_jobs.append(asyncio.ensure_future(_meter(meter, t0, t0 + sc.wall(sc.duration))))
            failing.start(failures, t0, sc)
            if bar is not None:
                side_jobs.append(asyncio.ensure_future(_tick(bar, t0, sc)))

        workers = self.workers if self.workers is not None else (
            min(4, max(2, os.cpu_count() or 2)) if sc.clients >= WORKER_THRESHOLD else 0)
        try:
            if workers:
                shards = [Shard(sc, plans[k::workers], tokens, self.urls, tasks, rate) for k in range(workers)]
                rec, bad = await run_sharded(shards, lambda: self._truth(sc), on_start)
            else:
                rec = Recorder()
                clients = build(Shard(sc, plans, tokens, self.urls, tasks, rate), rec)
                await connect_all(clients)
                t0 = time.monotonic() + 0.2
                on_start(t0)
                await play(clients, sc, t0)
                bad = check(clients, await asyncio.to_thread(self._truth, sc), rec)
                await finish(clients)
        finally:
            for job in side_jobs:
                job.cancel()
            await failing.settle()
        results = Results.from_records(sc, rec, t0_wall, bad, meta={"instances": self.n, "workers": workers,
                                                                    "cpu": meter.result})
        if self.failovers:  # what the killed masters' failovers lost, from the history on the masters now
            ws = [f"w{w}" for w in range(sc.workspaces)]
            lost = await asyncio.to_thread(acked_missing, self.redis_url, results.acks, ws)
            results.meta["failovers"] = [{**f.as_dict(), "acked_missing": lost} for f in self.failovers]
        results.calibration_ms = self.calibration_ms
        return results

    def _process_groups(self) -> dict[str, list[int]]:
        """The run's processes by role: the server instances, the embedded Redis, and the simulated clients
        (this process, whose lab thread runs them, and its other children: the client workers)."""
        servers = [i.proc.pid for i in self._instances if i.alive]
        nodes = [self._redis_proc] if self._redis_proc is not None else (
            self._redis_cluster.nodes if self._redis_cluster is not None else [])
        redis_pid = [node.pid for node in nodes if node.pid]
        others = set(servers) | set(redis_pid)
        for pid in list(others):
            others.update(descendants(pid))
        return {"servers": servers, "redis": redis_pid,
                "clients": [os.getpid(), *(p for p in descendants(os.getpid()) if p not in others)]}

    def calibrate(self, frames: int = 300) -> float:
        """Measure the simulator's own overhead: the median one-way time of a frame through the client stack
        and a bare websockets echo server on this machine (no Redis, no rtlib); stored in results."""
        assert self._loop is not None, "start the cluster first"
        self.calibration_ms = self._loop.run(_calibrate(frames))
        return self.calibration_ms

    def _truth(self, sc: Scenario) -> dict[str, dict[str, tuple[int, dict[str, Any]]]]:
        """The authoritative state of every task, read straight from Redis."""
        assert self.redis_url is not None
        out: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {}
        with redis_client(self.redis_url) as r:
            for w in range(sc.workspaces):
                ws = f"w{w}"
                out[ws] = {}
                for t in range(sc.tasks):
                    ver_key, fields_key = keyspace.task_keys(ws, f"t{t}")
                    version = int(r.get(ver_key) or 0)
                    fields = {k.decode(): json.loads(v) for k, v in r.hgetall(fields_key).items()}
                    out[ws][f"t{t}"] = (version, fields)
        return out


async def _meter(meter: CpuMeter, start: float, end: float) -> None:
    """Read ``meter`` over the load window, ``start`` to ``end`` (monotonic): design second 0 to the end of the
    scenario, without the connection phase and the drain."""
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    meter.start()
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    meter.stop()


async def _tick(bar: Any, t0: float, sc: Scenario) -> None:
    while True:
        await asyncio.sleep(0.2)
        done = min(sc.duration, max(0.0, (time.monotonic() - t0) / sc.time_scale))
        bar.n = round(done)
        bar.refresh()
        if done >= sc.duration:
            return


async def _calibrate(frames: int) -> float:
    import statistics

    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    samples = []
    async with serve(echo, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
            frame = b'{"type":"task.updated","workspaceId":"w0","payload":{"taskId":"t0","version":1,"changes":{}}}'
            for _ in range(frames):
                t = time.monotonic_ns()
                await ws.send(frame, text=True)
                json.loads(await ws.recv())
                samples.append((time.monotonic_ns() - t) / 2e6)
    return round(statistics.median(samples), 4)
