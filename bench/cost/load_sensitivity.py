"""Does another job on the machine change a server's CPU per delivery? S2 with and without a CPU hog, per target.

Why it exists: two harnesses ordered rtlib and Node ``ws`` differently at S2 (issue 19 item 6). Both run the same
load driver (:func:`bench.harness.case.run_case`); what differed was the machine's load during their runs. A
server that falls behind can write the events that queued up meanwhile in one ``write`` per socket (rtlib's
fan-out flushes once per read from Redis), so its CPU per delivery *falls* under load, while a server that writes
every message on its own (Node ``ws``: one ``socket.write`` per ``ws.send``) keeps paying one syscall each.

Each case runs S2 (200 receivers, 1 workspace, 100 updates/s, 10 sender connections) twice per round: once as
the machine is, once beside a busy-looping process (the hog: one core's worth of other work). Besides the
harness's numbers it counts the server's ``write``/``writev`` system calls (``syscw`` of ``/proc/<pid>/io``)
per delivery: about 1.05 when every event is written on its own (200 receivers, the sender's ack or echo), less
when events were coalesced. Servers on asyncio's own loop write with ``send()``, which ``syscw`` does not count:
their column reads 0.

Run: ``python -m bench.cost.load_sensitivity [--targets rtlib,ws-node,floor-redis] [--rounds 2] [--duration 5]``
Writes ``bench/results/load_sensitivity.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import case
from bench.harness.case import Options, Scenario, background_load, machine_info, raise_fd_limit, run_case
from bench.harness.targets import BENCH_DIR, TARGETS

__all__ = ["main", "write_syscalls"]

S2 = Scenario("S2", 200, 1, 100.0, "1 workspace x 200 receivers, 100 updates/s")
RESULTS = BENCH_DIR / "results" / "load_sensitivity"


def write_syscalls(pid: int) -> float:
    """``write``-family system calls made so far by ``pid`` (all its threads), from ``/proc/<pid>/io``; 0 if gone."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("syscw:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


@contextlib.contextmanager
def counting_writes() -> Iterator[None]:
    """While active, every case also samples the server's write syscalls with its CPU probes (they land in the
    result's ``cpu_pct['server_writes']`` as 100 x calls per second of the send phase; :func:`row` converts)."""
    plain = case.cpu_probes

    def probes(server: Any, redis: Any, receivers: Any, sender: Any) -> dict[str, Any]:
        return {**plain(server, redis, receivers, sender), "server_writes": lambda: write_syscalls(server.pid)}

    case.cpu_probes = probes
    try:
        yield
    finally:
        case.cpu_probes = plain


@contextlib.contextmanager
def hog(on: bool) -> Iterator[None]:
    """One busy-looping process (one core's worth of someone else's job) while the case runs, if ``on``."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def row(r: dict[str, Any], load: str, round_no: int) -> dict[str, Any]:
    if "error" in r:
        return {"target": r["target"], "load": load, "round": round_no, "error": r["error"]}
    writes = r["cpu_pct"].pop("server_writes", 0.0) * r["send_phase_s"] / 100
    return {"target": r["target"], "load": load, "round": round_no, "cpu_us": r["cpu_us_per_delivery"]["total"],
            "server_us": r["cpu_us_per_delivery"]["server"], "redis_us": r["cpu_us_per_delivery"]["redis"],
            "writes_per_delivery": round(writes / max(1, r["received"]), 3), "p50_ms": r["latency_ms"]["p50"],
            "p99_ms": r["latency_ms"]["p99"], "other_pct": r["cpu_pct"]["other"], "lost": r["lost"]}


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    ok = [r for r in rows if "error" not in r]
    lines = ["# CPU per delivery with and without other work on the machine (S2)", "",
             f"{meta['date']} · {meta['nproc']} cores ({meta['cpu_model']}) · {meta['parameters']['rounds']} "
             f"alternating rounds, {meta['parameters']['duration']} s send phase · background load before the run "
             f"{meta['background_load_pct']:.0f}% of a core. `hog`: one busy-looping process beside the case.", "",
             "| target | load | CPU µs/delivery (runs) | median | writes/delivery (runs) | p50 ms (median) | "
             "other % (median) |", "|---|---|---|---|---|---|---|"]
    for target in dict.fromkeys(r["target"] for r in ok):
        for load in ("as is", "hog"):
            rs = [r for r in ok if r["target"] == target and r["load"] == load]
            if rs:
                cpu = " / ".join(format(r["cpu_us"], ".1f") for r in rs)
                writes = " / ".join(format(r["writes_per_delivery"], ".2f") for r in rs)
                lines.append(
                    f"| {target} | {load} | {cpu} | **{statistics.median(r['cpu_us'] for r in rs):.1f}** | {writes} | "
                    f"{statistics.median(r['p50_ms'] for r in rs):.1f} | "
                    f"{statistics.median(r['other_pct'] for r in rs):.0f} |")
    failed = [f"{r['target']} ({r['load']}): {r['error'][:120]}" for r in rows if "error" in r]
    return "\n".join([*lines, "", *(f"- failed: {f}" for f in failed), ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="rtlib,ws-node,floor-redis")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0, help="send phase, s (notebook 06's was 3-5)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output path without suffix")
    args = parser.parse_args(argv)
    raise_fd_limit()
    meta = {**machine_info(), "background_load_pct": background_load(),
            "parameters": {"targets": args.targets.split(","), "rounds": args.rounds, "duration": args.duration}}
    opts = Options(duration=args.duration, warmup_min=1.0, warmup_timeout=30.0, drain_timeout=5.0,
                   receiver_procs=1, quick=False)
    rows = []
    with counting_writes():
        for round_no in range(args.rounds):
            for load in ("as is", "hog"):
                for name in args.targets.split(","):  # alternating, so a drift of the machine favours none
                    with hog(load == "hog"):
                        try:
                            r = run_case(TARGETS[name](), S2, opts)
                        except Exception as exc:  # one broken target must not hide the others' numbers
                            r = {"target": name, "error": f"{type(exc).__name__}: {exc}"}
                    rows.append(row(r, load, round_no))
                    print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_name(args.out.name + ".json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    args.out.with_name(args.out.name + ".md").write_text(markdown(meta, rows))
    print(markdown(meta, rows))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
