"""The hostile-client harness (issue 7): seeded hostile input against a real ``rtlib serve`` over real sockets.

    python -m bench.hostile.run --frames 10000 --seed 1        # full run -> bench/results/hostile.{json,md}
    python -m bench.hostile.run --ci                           # CI size (what tests/server/test_hostile.py runs)
    python -m bench.hostile.run --only load --load-seconds 60  # only the load part, e.g. under py-spy

Phases, in one run against one server: quiet (the neighbour alone), frames (every hostile frame of
``bench.hostile.frames`` judged against ``bench.hostile.classes.CLASSES``), load (floods, big broadcasts, slow readers,
half-open sockets, a connection storm, the per-user cap, a token expiring), handshakes (abusive upgrades).
Throughout, a listener in another workspace counts canary strings (cross-workspace deliveries, must be 0) and
the neighbour (``bench.hostile.neighbour``) times its updates. At the end: tracebacks in the server log (must be 0),
server RSS before/after, and the summary. Exit status 1 on any mismatch, traceback or cross-workspace delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.hostile.classes import CLASSES
from bench.hostile.frames import generate
from bench.hostile.handshake import run_handshakes
from bench.hostile.load import LoadPlan, run_load
from bench.hostile.neighbour import Neighbour, quantiles_ms
from bench.hostile.probe import run_frames
from bench.hostile.server import ServerUnderTest
from bench.hostile.wire import OP_TEXT, RawWs, open_ws

__all__ = ["Options", "main", "run"]

RESULTS = Path(__file__).resolve().parents[1] / "results"
PHASES = ("frames", "load", "handshakes")


@dataclass
class Options:
    """One run. ``Options.ci()`` is the CI size."""

    frames: int = 10_000
    seed: int = 1
    probers: int = 20
    handshakes: int = 500
    quiet_seconds: float = 5.0
    neighbour_rate: float = 50.0
    # The attacking harness runs at this niceness once the server and the neighbour have started: in
    # production an attacker's CPU is on their own machine, not on the server's 2 cores; here the attacker's
    # frame generation and 60 KB reads would otherwise be charged to the neighbour's latency.
    attacker_nice: int = 10
    only: tuple[str, ...] = PHASES
    load: LoadPlan = field(default_factory=LoadPlan)
    load_seconds: float = 0.0  # repeat the load phase until this many seconds passed (profiling)
    # Extra `rtlib serve` options. A 1 MiB write buffer (default 8 MiB) closes the slow readers within the few MiB
    # the paced broadcasters send.
    server: dict[str, Any] = field(default_factory=lambda: {"max_write_buffer": 1024 * 1024})

    @classmethod
    def ci(cls, seed: int = 1) -> Options:
        return cls(frames=1200, seed=seed, probers=10, handshakes=120, quiet_seconds=1.5, load=LoadPlan.ci(),
                   # A 4 MiB/s fan-out budget keeps the CI run short; pacing itself has its own test.
                   server={"max_write_buffer": 1024 * 1024, "fanout_rate": 4 * 1024 * 1024})


def category(cls: str) -> str:
    """The report's grouping of a class, from its outcome."""
    outcome = CLASSES[cls][0]
    if cls.startswith("hs-"):
        return "handshake"
    if cls in ("frame-flood", "byte-flood", "big-broadcast-paced", "slow-reader", "connection-storm",
               "connections-over-user-cap", "half-open", "token-expires-while-open"):
        return "load"
    if outcome.startswith("close"):
        return "frames: connection ends"
    if outcome.startswith("error"):
        return f"frames: {outcome.split()[1]}"
    return "frames: accepted"


class _Listener:
    """A member of another workspace: no frame carrying a canary of the attacked workspace may reach it."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.ws: RawWs | None = None
        self.controls = 0  # the positive control: an update of its own workspace must reach it

    def on_text(self, ws: RawWs, payload: bytes, now: int) -> None:
        if b"CANARY" in payload:
            self.hits.append(payload[:300].decode("utf-8", "replace"))
        elif b"CONTROL-ws-b" in payload:
            self.controls += 1

    async def control(self, srv: ServerUnderTest) -> None:
        """A member of ws-b updates a task: the listener must see it (else "0 canaries" would prove nothing)."""
        editor = await open_ws(srv.url("editor-b", "ws-b"))
        await editor.send(OP_TEXT, json.dumps({"type": "task.update", "workspaceId": "ws-b", "payload": {
            "taskId": "control", "changes": {"c": "CONTROL-ws-b"}}}).encode())
        await asyncio.sleep(0.5)
        await editor.close(1.0)

    async def start(self, srv: ServerUnderTest) -> None:
        self.ws = await open_ws(srv.url("listener", "ws-b"), on_text=self.on_text)
        self.ws.keep = False


def _windows(samples: list[tuple[int, int]], marks: dict[str, list[tuple[int, int]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spans in marks.items():
        out[name] = quantiles_ms([lat for sent, lat in samples if any(a <= sent < b for a, b in spans)])
    attack = [lat for sent, lat in samples
              if any(a <= sent < b for n in ("frames", "load") for a, b in marks.get(n, []))]
    out["attack"] = quantiles_ms(attack)
    # Where the tail is: the 25 slowest updates, by phase and seconds into it (a stall shows as one cluster).
    worst = []
    for sent, lat in sorted(samples, key=lambda s: -s[1])[:25]:
        phase, start = next(((n, a) for n, spans in marks.items() for a, b in spans if a <= sent < b), ("-", sent))
        worst.append({"phase": phase, "at_s": round((sent - start) / 1e9, 3), "ms": round(lat / 1e6, 2)})
    out["slowest"] = worst
    quiet_p99 = out.get("quiet", {}).get("p99", 0.0)
    out["target_p99_ms"] = round(2 * quiet_p99 + 5, 3)
    out["within_target"] = bool(attack) and out["attack"]["p99"] <= out["target_p99_ms"]
    return out


async def _run(opts: Options, srv: ServerUnderTest, log: Any) -> dict[str, Any]:
    marks: dict[str, list[tuple[int, int]]] = {}
    result: dict[str, Any] = {"loadavg_before": os.getloadavg()}
    cpu: dict[str, dict[str, float]] = {}
    last = [srv.cpu_seconds(), srv.cpu_seconds(redis=True), time.process_time()]

    def mark(name: str, t0: int) -> None:
        """Close a phase window; CPU of the server and of this (attacking) process, to read latencies by."""
        marks.setdefault(name, []).append((t0, time.monotonic_ns()))
        now = [srv.cpu_seconds(), srv.cpu_seconds(redis=True), time.process_time()]
        c = cpu.setdefault(name, {"wall": 0.0, "server": 0.0, "redis": 0.0, "harness": 0.0})
        c["wall"] += (time.monotonic_ns() - t0) / 1e9
        c["server"] += now[0] - last[0]
        c["redis"] += now[1] - last[1]
        c["harness"] += now[2] - last[2]
        last[:] = now

    listener = _Listener()
    await listener.start(srv)
    neighbour = Neighbour(srv.url("nbr-a"), srv.url("nbr-b"), opts.neighbour_rate)
    await asyncio.to_thread(neighbour.start)
    if opts.attacker_nice:
        os.nice(opts.attacker_nice)
    result["attacker_nice"] = opts.attacker_nice
    t0 = time.monotonic_ns()
    await asyncio.sleep(opts.quiet_seconds)
    mark("quiet", t0)
    result["rss_kib_before"] = srv.rss_kib()

    if "frames" in opts.only:
        probes = generate(opts.seed, opts.frames)
        log(f"frames: {len(probes)} seeded frames (seed {opts.seed}) over {opts.probers} connections")
        t0 = time.monotonic_ns()
        fr = await run_frames(srv.url, probes, opts.probers)
        mark("frames", t0)
        result["frames"] = {"sent": dict(fr.sent), "mismatched": dict(fr.mismatched), "seconds": round(fr.seconds, 2),
                            "reconnects": fr.reconnects, "server_invalid_utf8_frames": fr.bad_utf8,
                            "mismatches": fr.mismatches[:300], "mismatch_count": len(fr.mismatches)}
    if "load" in opts.only:
        rows: list[tuple[str, bool, str]] = []
        t_end = time.monotonic() + opts.load_seconds
        rounds = 0
        while True:
            rounds += 1
            log(f"load: round {rounds}")
            t0 = time.monotonic_ns()
            rows += await run_load(srv, opts.load)
            mark("load", t0)
            if time.monotonic() >= t_end:
                break
        result["load"] = [{"class": c, "ok": ok, "observed": o} for c, ok, o in rows]
        result["load_rounds"] = rounds
    if "handshakes" in opts.only:
        log(f"handshakes: {opts.handshakes} seeded abusive upgrades")
        t0 = time.monotonic_ns()
        counts, misses = await run_handshakes(srv, opts.seed, opts.handshakes)
        mark("handshakes", t0)
        result["handshakes"] = {"sent": counts, "mismatches": misses}
    t0 = time.monotonic_ns()
    await asyncio.sleep(min(2.0, opts.quiet_seconds))
    mark("after", t0)
    await listener.control(srv)
    nb = await asyncio.to_thread(neighbour.stop)
    await asyncio.sleep(0.5)
    result["rss_kib_after"] = srv.rss_kib()
    result["cpu_seconds"] = {k: {n: round(v, 2) for n, v in c.items()} for k, c in cpu.items()}
    result["loadavg_after"] = os.getloadavg()
    assert listener.ws is not None
    result["listener"] = {"open": not listener.ws.closed.is_set(), "close_code": listener.ws.close_code,
                          "bad_utf8": listener.ws.bad_utf8, "control_deliveries": listener.controls}
    await listener.ws.close(1.0)
    result["cross_workspace_deliveries"] = len(listener.hits)
    result["cross_workspace_examples"] = listener.hits[:5]
    result["neighbour"] = {**_windows(nb.get("samples", []), marks), "lost": nb.get("lost"),
                           "closed": nb.get("closed"), "error": nb.get("error"), "bad_utf8": nb.get("bad_utf8")}
    return result


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Totals the verdict is made of, by category and in all."""
    by_cat: dict[str, Counter[str]] = {}
    for cls, n in result.get("frames", {}).get("sent", {}).items():
        by_cat.setdefault(category(cls), Counter())["sent"] += n
    for cls, n in result.get("frames", {}).get("mismatched", {}).items():
        by_cat.setdefault(category(cls), Counter())["mismatches"] += n
    for row in result.get("load", []):
        by_cat.setdefault("load", Counter())["sent"] += 1
        by_cat["load"]["mismatches"] += not row["ok"]
    for n in result.get("handshakes", {}).get("sent", {}).values():
        by_cat.setdefault("handshake", Counter())["sent"] += n
    by_cat.setdefault("handshake", Counter())["mismatches"] += len(result.get("handshakes", {}).get("mismatches", []))
    extra = result.get("frames", {}).get("mismatch_count", 0) - sum(result.get("frames", {}).get("mismatched", {})
                                                                   .values())
    mismatches = sum(c["mismatches"] for c in by_cat.values()) + max(0, extra)
    bad_utf8 = (result.get("frames", {}).get("server_invalid_utf8_frames", 0) + result["listener"]["bad_utf8"]
                + (result["neighbour"].get("bad_utf8") or 0))
    nb = result["neighbour"]
    return {"by_category": {k: dict(v) for k, v in sorted(by_cat.items())}, "mismatches": mismatches,
            "tracebacks": result["tracebacks"], "cross_workspace_deliveries": result["cross_workspace_deliveries"],
            "server_invalid_utf8_frames": bad_utf8, "listener_open": result["listener"]["open"],
            "listener_saw_control": result["listener"]["control_deliveries"] > 0,
            "neighbour_closed": nb.get("closed") or [], "neighbour_lost": nb.get("lost"),
            "passed": mismatches == 0 and result["tracebacks"] == 0 and result["cross_workspace_deliveries"] == 0
            and bad_utf8 == 0 and result["listener"]["open"] and result["listener"]["control_deliveries"] > 0
            and not nb.get("closed") and not nb.get("error")}


def run(opts: Options, log: Any = print) -> dict[str, Any]:
    """One whole run against a fresh server; returns the result dict (``result["summary"]["passed"]``)."""
    with ServerUnderTest(**opts.server) as srv:
        log(f"server pid {srv.pid} on port {srv.port} (profile: py-spy record -o hostile.svg --pid {srv.pid})")
        started = time.monotonic()
        result = asyncio.run(_run(opts, srv, log))
        result["seconds"] = round(time.monotonic() - started, 1)
        result["tracebacks"] = srv.tracebacks()
        result["server_alive"] = srv.alive
        tail = [ln for ln in srv.log_text().splitlines() if "Traceback" in ln or "Error" in ln]
        result["server_log_errors"] = tail[:20]
    result["options"] = {**asdict(opts), "only": list(opts.only)}
    result["summary"] = summarize(result)
    return result


def markdown(result: dict[str, Any]) -> str:
    s, nb, o = result["summary"], result["neighbour"], result["options"]
    lines = [f"# Hostile-input harness (seed {o['seed']}, {o['frames']} frames)", "",
             f"Verdict: **{'PASS' if s['passed'] else 'FAIL'}**: {s['mismatches']} mismatches, "
             f"{s['tracebacks']} tracebacks, {s['cross_workspace_deliveries']} cross-workspace deliveries, "
             f"{s['server_invalid_utf8_frames']} invalid-UTF-8 frames from the server; run {result['seconds']} s.",
             "", "| category | inputs | mismatches |", "|---|---|---|"]
    lines += [f"| {k} | {v.get('sent', 0)} | {v.get('mismatches', 0)} |" for k, v in s["by_category"].items()]
    lines += ["", "| neighbour (update -> delivery, ms) | n | p50 | p99 | max | wall s | CPU s: server "
              "| redis | attacker |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name in ("quiet", "frames", "load", "handshakes", "attack", "after"):
        if isinstance(nb.get(name), dict) and nb[name].get("n"):
            q, c = nb[name], result.get("cpu_seconds", {}).get(name, {})
            lines.append(f"| {name} | {q['n']} | {q['p50']} | {q['p99']} | {q['max']} | {c.get('wall', '')} | "
                         f"{c.get('server', '')} | {c.get('redis', '')} | {c.get('harness', '')} |")
    lines += ["", f"Target p99 under attack <= 2 x quiet p99 + 5 ms = {nb['target_p99_ms']} ms: "
              f"**{'met' if nb['within_target'] else 'missed'}**. Neighbour lost {nb.get('lost')}, closed "
              f"{nb.get('closed')}. Server RSS {result['rss_kib_before']} KiB before, {result['rss_kib_after']} KiB "
              "after. The listener in another workspace saw "
              f"{result['listener']['control_deliveries']} control update(s) of its own workspace and "
              f"{result['cross_workspace_deliveries']} canaries of the attacked one. Machine load average "
              f"{result['loadavg_before'][0]:.2f} before, {result['loadavg_after'][0]:.2f} after (2 cores shared "
              "with other work: latencies are noisy). The attacking harness ran at nice "
              f"{result.get('attacker_nice', 0)} (its CPU would be on its own machine in production); the server, "
              "Redis and the neighbour at normal priority.", ""]
    slow = ", ".join(f"{w['ms']} ms ({w['phase']} +{w['at_s']} s)" for w in nb.get("slowest", [])[:5])
    lines += [f"Slowest neighbour updates: {slow}.", ""]
    if result.get("load"):
        lines += ["| load / connection class | ok | observed |", "|---|---|---|"]
        lines += [f"| {r['class']} | {'yes' if r['ok'] else '**no**'} | {r['observed']} |" for r in result["load"]]
        lines.append("")
    misses = result.get("frames", {}).get("mismatches", []) + result.get("handshakes", {}).get("mismatches", [])
    if misses:
        lines += [f"## Mismatches (first {min(40, len(misses))})", "", "| class | expected | observed | detail |",
                  "|---|---|---|---|"]
        for m in misses[:40]:
            detail = (m.get("detail") or m.get("request", "")).replace("|", "\\|").replace("\n", " ")[:120]
            lines.append(f"| {m['class']} | {m['expected']} | {m['observed'].replace('|', '/')} | {detail} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--probers", type=int, default=20)
    p.add_argument("--handshakes", type=int, default=500)
    p.add_argument("--quiet-seconds", type=float, default=5.0)
    p.add_argument("--ci", action="store_true", help="CI size (1,200 frames, small floods and storms)")
    p.add_argument("--only", default=",".join(PHASES), help="comma list of frames,load,handshakes")
    p.add_argument("--load-seconds", type=float, default=0.0, help="repeat the load phase this long (profiling)")
    p.add_argument("--load", default="", metavar="K=V,...",
                   help="load plan overrides (0 turns a part off), e.g. storm=0,broadcasters=20; fields: "
                   + ", ".join(LoadPlan.__dataclass_fields__))
    p.add_argument("--serve", default="", metavar="K=V,...",
                   help="extra `rtlib serve` options, e.g. fanout_rate=1048576,max_write_buffer=1048576")
    p.add_argument("--server-src", metavar="DIR", help="run the rtlib of another checkout (e.g. `git archive HEAD`)")
    p.add_argument("--out", type=Path, default=RESULTS / "hostile", help="writes OUT.json and OUT.md")
    p.add_argument("--attacker-nice", type=int, default=10,
                   help="niceness of this (attacking) process once server and neighbour run (0: same priority)")
    a = p.parse_args(argv)
    opts = Options.ci(a.seed) if a.ci else Options(frames=a.frames, seed=a.seed, probers=a.probers,
                                                    handshakes=a.handshakes, quiet_seconds=a.quiet_seconds)
    opts.only = tuple(x for x in a.only.split(",") if x)
    opts.load_seconds = a.load_seconds
    opts.attacker_nice = a.attacker_nice
    if a.server_src:
        opts.server = {**opts.server, "src": a.server_src}
    if a.serve:
        opts.server = {**opts.server, **dict(kv.split("=", 1) for kv in a.serve.split(","))}
    if a.load:
        fields = {k: v if isinstance(getattr(opts.load, k), str) else type(getattr(opts.load, k))(float(v))
                  for k, v in (kv.split("=") for kv in a.load.split(","))}
        opts.load = replace(opts.load, **fields)
    result = run(opts)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    text = markdown(result)
    a.out.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {a.out.with_suffix('.json')} and {a.out.with_suffix('.md')}")
    return 0 if result["summary"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
