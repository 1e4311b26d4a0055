"""One case of a server benchmark: a target under a scenario, measured from a fresh redis-server and server.

Receiver and sender worker processes (:mod:`bench.harness.loadgen`) connect, warm up, then the sender sends
``task.update`` frames open-loop for the send phase. Over that phase the CPU time of the server (and its
descendants) and of redis-server is read from /proc, and the receivers time every delivery against its
scheduled send time. :func:`run_case` returns the numbers of one case: CPU µs per delivery (server + redis, and
each), deliveries/s, lost deliveries, latency p50/p90/p99/max, and the CPU use of everything else on the machine
(is the load generator in the way?). Used by :mod:`bench.cost.server_cost`, :mod:`bench.cost.scenarios` and
:mod:`bench.peers.compare`.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import procstat
from bench.harness.loadgen import WorkerHandle
from bench.harness.targets import ServerProcess, Target
from rtlib.lab.saturation import delivery_intervals
from rtlib.server.redis_process import RedisProcess, find_redis_server, free_port

#: Sends per second per sender connection, at most. rtlib rate-limits each connection (100 frames/s, burst
#: 200) and paces one whose updates make it write more than 1 MiB/s (--fanout-rate); staying far below both
#: keeps them from ever shaping the benchmark, so a busy workspace gets several sender connections. 10/s x
#: ~250 B x 200 recipients is 0.5 MB/s. (Results before 2026-11-26 12:00 UTC used 25/s: 4 senders in S2, not 10.)
SENDER_RATE_CAP = 10.0
#: Quiet time between warm-up and the send phase, so warm-up traffic has drained when CPU is first read.
QUIET_S = 0.5
#: The processes of a case, as named in cpu_probes(); everything else on the machine is "other".
OURS = ("server", "redis", "receivers", "sender", "harness")


@dataclass(frozen=True)
class Scenario:
    name: str
    receivers: int
    workspaces: int
    rate: float  # updates/s in total, round-robin over the workspaces
    description: str

    @property
    def per_workspace(self) -> int:
        return self.receivers // self.workspaces

    @property
    def senders_per_workspace(self) -> int:
        return max(1, math.ceil(self.rate / self.workspaces / SENDER_RATE_CAP))


@dataclass(frozen=True)
class Options:
    duration: float
    warmup_min: float  # seconds of warm-up traffic at least
    warmup_timeout: float  # give up if not every receiver has had a delivery by then
    drain_timeout: float  # after the send phase, wait at most this long for the last deliveries
    receiver_procs: int
    quick: bool
    idle: float = 0.0  # seconds of idle CPU measured before the send phase (0: none)
    latency_resamples: int = 0  # > 0: also ``latency_ci_ms``, bootstrapped over the deliveries (notebook 06)


# --- one case: a target under a scenario ----------------------------------------------------------------
def workspace_names(scenario: Scenario) -> list[str]:
    return [f"w{i:03d}" for i in range(scenario.workspaces)]


def receiver_urls(target: Target, port: int, scenario: Scenario) -> list[str]:
    """One URL per receiving connection, each its own user, ``per_workspace`` of them in every workspace."""
    return [
        target.url(port, ws, f"r{i}-{ws}")
        for ws in workspace_names(scenario)
        for i in range(scenario.per_workspace)
    ]


def sender_urls(target: Target, port: int, scenario: Scenario) -> dict[str, list[str]]:
    return {
        ws: [target.url(port, ws, f"s{i}-{ws}") for i in range(scenario.senders_per_workspace)]
        for ws in workspace_names(scenario)
    }


def start_workers(stack: ExitStack, target: Target, port: int, scenario: Scenario,
                  opts: Options) -> tuple[list[WorkerHandle], WorkerHandle]:
    """Start the receiver processes (connections dealt round-robin) and the sender process."""
    urls = receiver_urls(target, port, scenario)
    procs = max(1, min(opts.receiver_procs, len(urls)))
    receivers = [
        stack.enter_context(WorkerHandle(f"receiver-{i}", "receiver", (urls[i::procs], target.delivery_type)))
        for i in range(procs)
    ]
    sender_args = (sender_urls(target, port, scenario), target.protocol)
    sender = stack.enter_context(WorkerHandle("sender", "sender", sender_args))
    return receivers, sender


def connect_all(receivers: list[WorkerHandle], sender: WorkerHandle, scenario: Scenario) -> None:
    """Open every connection (receivers in parallel processes), failing loudly if any could not."""
    for worker in (*receivers, sender):
        worker.submit("connect")
    replies = [worker.result(timeout=120) for worker in (*receivers, sender)]
    failed = [r for r in replies if r["failed"]]
    if failed:
        total = sum(r["failed"] for r in failed)
        raise RuntimeError(f"{total} connection(s) failed, e.g. {failed[0]['errors']}")
    connected = sum(r["connected"] for r in replies[:-1])
    if connected != scenario.receivers:
        raise RuntimeError(f"{connected}/{scenario.receivers} receivers connected")


def receiver_status(receivers: list[WorkerHandle]) -> dict[str, Any]:
    """Summed status of all receiver processes."""
    statuses = [w.call("status") for w in receivers]
    return {key: sum(s[key] for s in statuses) for key in ("open", "ready", "total", "in_window")}


def warm_up(receivers: list[WorkerHandle], sender: WorkerHandle, server: ServerProcess,
            scenario: Scenario, opts: Options) -> float:
    """Send at the scenario's rate, one second at a time, until every receiver has had a delivery.

    That proves every subscription is live (and warms the server's code paths) before anything is measured.
    Returns the warm-up duration.
    """
    started = time.monotonic()
    while True:
        sender.call("send", time.monotonic_ns() + 20_000_000, scenario.rate, int(scenario.rate), timeout=30)
        server.check_alive()
        status = receiver_status(receivers)
        elapsed = time.monotonic() - started
        if status["ready"] == scenario.receivers and elapsed >= opts.warmup_min:
            break
        if elapsed > opts.warmup_timeout:
            raise RuntimeError(
                f"warm-up: only {status['ready']}/{scenario.receivers} receivers had a delivery after "
                f"{elapsed:.0f}s ({status['open']} open)"
            )
    time.sleep(QUIET_S)
    return time.monotonic() - started


def cpu_probes(server: ServerProcess, redis: RedisProcess, receivers: list[WorkerHandle],
               sender: WorkerHandle) -> dict[str, Any]:
    assert redis.pid is not None
    redis_pid = redis.pid
    return {
        "server": lambda: procstat.tree_cpu_seconds(server.pid),
        "redis": lambda: procstat.process_cpu_seconds(redis_pid),
        "receivers": procstat.summed(w.pid for w in receivers),
        "sender": procstat.summed([sender.pid]),
        "harness": procstat.summed([os.getpid()]),
        "machine": lambda: procstat.machine_cpu_seconds()[0],
        "irq": procstat.machine_irq_seconds,
    }


def measure_idle(probes: dict[str, Any], seconds: float) -> dict[str, Any]:
    """CPU ms per second of the server and redis-server with every connection open and no traffic: what the
    connections cost by themselves (keepalive pings, timers, Redis's cron), which S1's low rate spreads over
    few deliveries. Empty when ``seconds`` is 0."""
    if seconds <= 0:
        return {}
    start = procstat.snapshot(probes)
    time.sleep(seconds)
    spent = procstat.snapshot(probes).minus(start)
    return {"idle_cpu_ms_per_s": {name: round(1e3 * spent[name] / seconds, 2) for name in ("server", "redis")}}


def wait_for_drain(receivers: list[WorkerHandle], expected: int, timeout: float) -> int:
    """Poll until the receivers hold ``expected`` in-window deliveries or ``timeout`` passes; return the count."""
    deadline = time.monotonic() + timeout
    while True:
        got = receiver_status(receivers)["in_window"]
        if got >= expected or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def profiler(server: ServerProcess, redis: RedisProcess, duration: float) -> subprocess.Popen[bytes] | None:
    """With ``$RTLIB_BENCH_PYSPY=PREFIX``: py-spy samples the server through the send phase (its CPU then counts
    in other %, not the server's) and writes collapsed stacks to ``PREFIX-<pid>.txt`` (summarised by
    ``python -m bench.cost.hot_path_report --profile FILE``).
    With ``$RTLIB_BENCH_PERF=PREFIX``: ``perf record -g`` of the server and redis-server (kernel stacks included)
    through the send phase, to ``PREFIX-<pid>.data`` (see :mod:`bench.cost.perf_top`)."""
    if prefix := os.environ.get("RTLIB_BENCH_PERF"):
        return subprocess.Popen(["perf", "record", "-g", "-F", "1999", "-p", f"{server.pid},{redis.pid}", "-o",
                                 f"{prefix}-{server.pid}.data", "--", "sleep", str(duration)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if trace := os.environ.get("RTLIB_BENCH_STRACE"):  # syscall counts instead (strace -c), for 5 s
        return subprocess.Popen(["timeout", "-s", "INT", "5", "strace", "-c", "-f", "-p", str(server.pid), "-o",
                                 f"{trace}-{server.pid}.txt"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prefix = os.environ.get("RTLIB_BENCH_PYSPY")
    if not prefix:
        return None
    spy = Path(sys.executable).with_name("py-spy")
    rate = os.environ.get("RTLIB_BENCH_PYSPY_HZ", "250")  # samples per second
    return subprocess.Popen([str(spy), "record", "--pid", str(server.pid), "--duration", str(max(1, int(duration))),
                             "--rate", rate, "--format", "raw", "-o", f"{prefix}-{server.pid}.txt"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(receivers: list[WorkerHandle], sender: WorkerHandle, server: ServerProcess, redis: RedisProcess,
            scenario: Scenario, opts: Options) -> dict[str, Any]:
    """The send phase: CPU snapshots around it, deliveries and latencies inside its window."""
    probes = cpu_probes(server, redis, receivers, sender)
    idle = measure_idle(probes, opts.idle)
    count = max(1, round(scenario.rate * opts.duration))
    interval_ns = round(1e9 / scenario.rate)
    start_ns = time.monotonic_ns() + 300_000_000  # time for the commands below to arrive
    end_ns = start_ns + count * interval_ns
    for worker in receivers:
        worker.call("window", start_ns, end_ns)

    sender.submit("send", start_ns, scenario.rate, count)
    time.sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9))
    spy = profiler(server, redis, opts.duration)
    before = procstat.snapshot(probes)
    sent = sender.result(timeout=opts.duration + 60)
    if spy is not None:
        spy.wait()
    at_send_end = procstat.snapshot(probes)
    # Every workspace has the same number of receivers, so each update is owed that many deliveries.
    expected = sent["sent"] * scenario.per_workspace
    received = wait_for_drain(receivers, expected, opts.drain_timeout)
    drained = procstat.snapshot(probes)

    finals = [w.call("finish") for w in receivers]
    sender_final = sender.call("finish")
    server_alive = server.proc is not None and server.proc.poll() is None
    latencies_ns = np.frombuffer(b"".join(f["latencies"] for f in finals), dtype=np.int64)
    return summarise(
        scenario, opts, sent, expected, received, latencies_ns, before, at_send_end, drained,
        extra={
            "server_alive_at_end": server_alive,
            "other_frames": sum(f["other_frames"] for f in finals),
            "undecodable_frames": sum(f["undecodable"] for f in finals),
            # How the receivers' epoll loop batched during the window (more reads per wakeup: cheaper).
            "receiver_reads_per_wakeup": round(
                sum(f["reads"] for f in finals) / max(1, sum(f["wakeups"] for f in finals)), 2),
            "receiver_close_codes": merge_counts(f["close_codes"] for f in finals),
            "sender_close_codes": sender_final["close_codes"],
            **idle,
        },
    )


def merge_counts(counts: Any) -> dict[str, int]:
    merged: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            merged[key] = merged.get(key, 0) + value
    return merged


def summarise(scenario: Scenario, opts: Options, sent: dict[str, Any], expected: int, received: int,
              latencies_ns: np.ndarray, before: procstat.CpuSnapshot, at_send_end: procstat.CpuSnapshot,
              drained: procstat.CpuSnapshot, extra: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one case.

    µs/delivery uses CPU from the start of the send phase until the last delivery arrived (or the drain
    timed out): that is all the work done for the deliveries counted, even the few in flight at the end of
    the schedule, and the server is otherwise idle. CPU % figures are over the send phase proper.
    """
    send_phase = at_send_end.wall - before.wall
    cost = drained.minus(before)
    busy = at_send_end.minus(before)
    per_delivery = (lambda s: s / received * 1e6) if received else (lambda s: float("nan"))
    lat_ms = latencies_ns / 1e6
    pcts = np.percentile(lat_ms, [50, 90, 99]) if len(lat_ms) else [float("nan")] * 3
    nproc = len(os.sched_getaffinity(0))
    return {
        "scenario": scenario.name,
        "receivers": scenario.receivers,
        "workspaces": scenario.workspaces,
        "senders": scenario.senders_per_workspace * scenario.workspaces,
        "rate": scenario.rate,
        "send_phase_s": round(send_phase, 3),
        "drain_s": round(drained.wall - at_send_end.wall, 3),
        "updates_sent": sent["sent"],
        "updates_dropped": sent["dropped"],
        "sender_late_mean_ms": round(sent["late_mean_ms"], 3),
        "sender_late_max_ms": round(sent["late_max_ms"], 3),
        "expected": expected,
        "received": received,
        "lost": expected - received,
        "deliveries_per_s": round(received / send_phase, 1),
        "cpu_us_per_delivery": {
            "total": round(per_delivery(cost["server"] + cost["redis"]), 2),
            "server": round(per_delivery(cost["server"]), 2),
            "redis": round(per_delivery(cost["redis"]), 2),
        },
        "cpu_us_per_delivery_send_phase_only": round(per_delivery(busy["server"] + busy["redis"]), 2),
        # % of one core, except "machine": % of all cores. "irq": time in interrupts (much of loopback
        # networking), which the kernel charges partly to the process it interrupted.
        "cpu_pct": {
            **{name: round(100 * busy[name] / send_phase / (nproc if name == "machine" else 1), 1)
               for name in busy},
            "other": other_load_pct(before, at_send_end),
            # The per-process estimate alone: unlike "other", it excludes interrupt time, most of which, under
            # heavy loopback traffic, is the case's own networking.
            "other_procs": other_load_pct(before, at_send_end, machine_wide=False),
        },
        "latency_ms": {**{q: round(float(v), 3) for q, v in zip(("p50", "p90", "p99"), pcts, strict=True)},
                       "max": round(float(lat_ms.max()), 3) if len(lat_ms) else float("nan")},
        **({"latency_ci_ms": delivery_intervals(lat_ms, opts.latency_resamples)}
           if opts.latency_resamples and len(lat_ms) else {}),
        **extra,
    }


def other_load_pct(before: procstat.CpuSnapshot, after: procstat.CpuSnapshot, machine_wide: bool = True) -> float:
    """% of one core used by everything on the machine but this case's processes: another job running
    during the benchmark makes its numbers (latency most) suspect.

    Two estimates, and the larger is kept: the per-process sum misses processes that exited in between (a
    test run's short-lived children), the machine-wide tick-sampled figure misses short bursts of work.
    ``machine_wide=False``: the per-process estimate only.
    """
    wall = after.wall - before.wall
    ours = sum(after.seconds[k] - before.seconds[k] for k in OURS)
    by_pid = procstat.cpu_spent(before.by_pid, after.by_pid) - ours
    machine = after.seconds["machine"] - before.seconds["machine"] - ours
    return round(max(0.0, 100 * (max(by_pid, machine) if machine_wide else by_pid) / wall), 1)


def run_case(target: Target, scenario: Scenario, opts: Options) -> dict[str, Any]:
    """Fresh Redis and server, connect, warm up, measure; every child process is stopped on the way out."""
    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        redis = stack.enter_context(RedisProcess())
        port = free_port()
        server = stack.enter_context(ServerProcess(target.command(port, redis.url), port))
        receivers, sender = start_workers(stack, target, port, scenario, opts)
        t = time.monotonic()
        connect_all(receivers, sender, scenario)
        connect_s = time.monotonic() - t
        warmup_s = warm_up(receivers, sender, server, scenario, opts)
        result = measure(receivers, sender, server, redis, scenario, opts)
        result.update(connect_s=round(connect_s, 2), warmup_s=round(warmup_s, 2))
        if not result["server_alive_at_end"]:
            result["server_log_tail"] = server.log_tail()
        return {"target": target.name, **result, "loadavg_1min_before": round(load_before, 2)}


# --- the machine ------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    def version_of(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "unknown"

    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import websockets

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis_server": version_of([str(find_redis_server()), "--version"]),
        "websockets": websockets.__version__,
    }


def background_load(seconds: float = 1.0) -> float:
    """% of one core that the machine is busy while this harness idles (others' jobs): the larger of the
    per-process and the machine-wide estimates (see :func:`other_load_pct`)."""
    pids, (machine, _) = procstat.cpu_by_pid(), procstat.machine_cpu_seconds()
    time.sleep(seconds)
    by_pid = procstat.cpu_spent(pids, procstat.cpu_by_pid())
    by_machine = procstat.machine_cpu_seconds()[0] - machine
    return round(100 * max(by_pid, by_machine) / seconds, 1)


def raise_fd_limit() -> None:
    """1,000+ sockets per process: lift the soft open-files limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 8192:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 8192, hard))
