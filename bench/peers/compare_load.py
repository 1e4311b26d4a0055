"""Notebook 06's load points: each case's CPU per process group, whether it measured the design or the machine, the
answer below saturation, and the headline with its sample sizes and 95 % intervals.

The harness (:mod:`bench.harness.case`) reads from ``/proc`` the CPU of the server's process tree, of
redis-server, of the receiver workers and of the sender over the send phase (``cpu_pct``, % of one core; the
machine's in % of all cores), and the sender's lateness against its schedule (mean and max). :func:`case_cpu` puts
one case in the form of :func:`rtlib.lab.cpu.usage`, so that notebook 01's rule (:func:`rtlib.lab.cpu.saturation`)
marks it: a group at >= 90 % of the cores it can use, a process at >= 90 % of a core, the lab's processes or the
machine >= 90 % busy. The load generator's own lateness is the sender's (the receivers' is not measured: their CPU
share of a core stands for it, through the same rule); its *max* at >= :data:`rtlib.lab.saturation.LATE_SHARE` of
the budget marks the case too (an upper bound of its p99, so the rule errs towards "saturated").

Intervals. p99 latency: a bootstrap over deliveries (:func:`rtlib.lab.saturation.bootstrap_latency`, computed when
the case ran, by the harness when its ``Options.latency_resamples`` asks for it). The deliveries of one update
queue together, so this interval is narrower than one over updates would be. CPU per delivery: a t interval over
the alternating rounds (``Plan.rounds``); with one round there is no sampling interval and only the tick
resolution (:func:`cpu_resolution_us`) is shown as the bounds, labelled as such.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from rtlib.lab.cpu import saturation
from rtlib.lab.saturation import LATE_SHARE

__all__ = ["BUDGET_MS", "LABELS", "RECEIVER_PROCS", "TARGET_ORDER", "below_saturation", "below_text", "case_cpu",
           "cpu_interval", "cpu_resolution_us", "headline",
           "ladder_chart", "load_points", "reasons"]

#: The review's latency budget (notebook 01's), against which the answer below saturation is read.
BUDGET_MS = 45.0
#: Receiver worker processes per scenario, as :mod:`bench.peers.compare` runs them.
RECEIVER_PROCS = {"S1": 1, "S2": 1, "S3": 2}
#: Every target, in the order of the tables.
TARGET_ORDER = ("rtlib", "socketio-node", "python-socketio", "ws-node", "toy")
LABELS = {"rtlib": "rtlib (Python websockets)", "socketio-node": "Socket.IO 4 / Node + redis-adapter",
          "python-socketio": "python-socketio + AsyncRedisManager", "ws-node": "plain forwarder, Node ws",
          "toy": "plain forwarder, Python websockets"}
#: CPU time is read from /proc in clock ticks (10 ms); server and redis-server are each read before and after.
_TICK_S = 0.01


def cpu_resolution_us(case: dict[str, Any]) -> float:
    """How far a case's CPU per delivery can be off from tick rounding alone: one tick for the server and one
    for redis-server, spread over its deliveries, µs. Two targets are ordered only if their gap exceeds the sum of
    their resolutions: at CI size (2,500 deliveries in S2) that is 8 µs each, at full size 0.2 µs."""
    return 2 * _TICK_S / max(1, case["received"]) * 1e6


#: Two-sided 97.5 % quantiles of Student's t by degrees of freedom (1.96 beyond).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def case_cpu(case: dict[str, Any], nproc: int) -> dict[str, Any]:
    """One case's CPU in the form of :func:`rtlib.lab.cpu.usage`: groups ``servers`` (the server's process tree:
    one event loop), ``redis`` and ``clients`` (receiver workers + the sender). The harness sums the receivers,
    so the busiest client process is at least their mean (or the sender, if busier)."""
    pct = case["cpu_pct"]
    procs = RECEIVER_PROCS.get(case["scenario"], 1)

    def group(cores: float, processes: int, busiest: float) -> dict[str, Any]:
        available = max(1, min(processes, nproc))
        return {"cores_used": round(cores, 3), "cores_available": available, "processes": processes,
                "share": round(cores / available, 3), "busiest_process_cores": round(busiest, 3)}

    clients = (pct["receivers"] + pct["sender"]) / 100
    lab = sum(pct.get(k, 0.0) for k in ("server", "redis", "receivers", "sender", "harness")) / 100
    return {"cores": nproc, "servers": group(pct["server"] / 100, 1, pct["server"] / 100),
            "redis": group(pct["redis"] / 100, 1, pct["redis"] / 100),
            "clients": group(clients, procs + 1, max(pct["receivers"] / 100 / procs, pct["sender"] / 100)),
            "lab_share": round(lab / nproc, 3), "machine_share": round(pct["machine"] / 100, 3)}


def reasons(case: dict[str, Any], nproc: int, budget_ms: float = BUDGET_MS) -> list[str]:
    """Why a case measured the machine rather than the design (notebook 01's rule); empty: it did not."""
    why = saturation(case_cpu(case, nproc))
    if case["sender_late_max_ms"] >= LATE_SHARE * budget_ms:
        why.append(f"sender late {case['sender_late_max_ms']:.1f} ms at worst (>= {LATE_SHARE:.0%} of "
                   f"{budget_ms:g} ms)")
    return why


def load_points(data: dict[str, Any], budget_ms: float = BUDGET_MS) -> pd.DataFrame:
    """One row per measured case (S1, S2, every S3 step): load, latency (p99 with its interval and ``n``), CPU of
    the server tree, Redis and the load generator in cores, the sender's lateness, saturated and why."""
    cases = [c for c in data["latency_cases"] if "error" not in c]
    cases += [s for name in data["s3"] for s in data["s3"][name]["steps"] if "error" not in s]
    rows = []
    for c in cases:
        ci = c.get("latency_ci_ms", {})
        cpu = case_cpu(c, data["nproc"])
        why = reasons(c, data["nproc"], budget_ms)
        rows.append({"scenario": c["scenario"], "target": c["target"], "updates/s": c["rate"],
                     "deliveries/s": round(c["deliveries_per_s"]), "n": c["received"],
                     "p50 ms": c["latency_ms"]["p50"], "p99 ms": c["latency_ms"]["p99"],
                     "p99 low": ci.get("p99_low", math.nan), "p99 high": ci.get("p99_high", math.nan),
                     "server cores": cpu["servers"]["cores_used"], "redis cores": cpu["redis"]["cores_used"],
                     "loadgen cores": cpu["clients"]["cores_used"],
                     "loadgen core share": cpu["clients"]["share"],
                     "sender late max ms": c["sender_late_max_ms"], "machine %": c["cpu_pct"]["machine"],
                     "saturated": bool(why), "why": "; ".join(why)})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["order"] = frame["target"].map(TARGET_ORDER.index)
        frame = frame.sort_values(["scenario", "order", "updates/s"]).drop(columns="order").reset_index(drop=True)
    return frame


def _p99_upper(row: pd.Series) -> float:
    """The p99's 95 % upper bound, or the p99 itself when the case predates the intervals."""
    return row["p99 ms"] if math.isnan(row["p99 high"]) else row["p99 high"]


def below_saturation(points: pd.DataFrame, budget_ms: float = BUDGET_MS) -> dict[str, dict[str, Any]]:
    """Per target, over the S3 ladder: ``best``, the unsaturated step with the highest rate whose p99 (upper
    bound) is under ``budget_ms`` (None if none), and ``first_saturated``, the lowest saturated step (or None)."""
    out = {}
    s3 = points[points["scenario"] == "S3"]
    for name in [t for t in TARGET_ORDER if t in set(s3["target"])]:
        steps = s3[s3["target"] == name]
        ok = steps[~steps["saturated"] & (steps.apply(_p99_upper, axis=1) < budget_ms)]
        sat = steps[steps["saturated"]]
        out[name] = {"best": None if ok.empty else ok.loc[ok["updates/s"].idxmax()],
                     "first_saturated": None if sat.empty else sat.loc[sat["updates/s"].idxmin()]}
    return out


def _p99_text(row: pd.Series) -> str:
    interval = (f", 95 % interval {row['p99 low']:.1f}–{row['p99 high']:.1f}" if not math.isnan(row["p99 high"])
                else ", interval not recorded")
    return f"p99 {row['p99 ms']:.1f} ms (n = {row['n']:,} deliveries{interval})"


def below_text(points: pd.DataFrame, budget_ms: float = BUDGET_MS) -> str:
    """The S3 answer below saturation, one markdown line per target."""
    lines = []
    for name, found in below_saturation(points, budget_ms).items():
        best, sat = found["best"], found["first_saturated"]
        head = (f"up to **{best['deliveries/s']:,} deliveries/s** ({best['updates/s']:g} updates/s) unsaturated "
                f"with {_p99_text(best)}" if best is not None
                else f"no unsaturated step with p99 under {budget_ms:g} ms")
        tail = (f"; saturated from {sat['updates/s']:g} updates/s ({sat['why'].split(';')[0]})" if sat is not None
                else "; no step saturated (the ladder stopped first)")
        lines.append(f"- {LABELS[name].split(' (')[0]}: {head}{tail}.")
    return "\n".join(lines)


def cpu_interval(data: dict[str, Any], scenario: str, target: str) -> dict[str, Any]:
    """CPU µs per delivery of ``target`` in ``scenario``: the mean over its rounds with a 95 % t interval
    (``kind`` "rounds"), or with one round the tick-resolution bounds (``kind`` "resolution"); ``n`` rounds,
    ``deliveries`` over them."""
    runs = [r for r in data.get("latency_runs") or data["latency_cases"]
            if r["scenario"] == scenario and r["target"] == target and "error" not in r]
    if not runs:
        return {"n": 0}
    x = np.array([r["cpu_us_per_delivery"]["total"] for r in runs])
    out = {"n": len(runs), "deliveries": sum(r["received"] for r in runs), "mean": float(x.mean())}
    if len(runs) > 1:
        half = _T975.get(len(runs) - 1, 1.96) * x.std(ddof=1) / math.sqrt(len(runs))
        return {**out, "low": out["mean"] - half, "high": out["mean"] + half, "kind": "rounds"}
    res = cpu_resolution_us(runs[0])
    return {**out, "low": max(0.0, out["mean"] - res), "high": out["mean"] + res, "kind": "resolution"}


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float, float]:
    """a / b with bounds from the two intervals (conservative: the extremes of each)."""
    return a["mean"] / b["mean"], a["low"] / b["high"], a["high"] / b["low"] if b["low"] > 0 else math.inf


def headline(data: dict[str, Any], points: pd.DataFrame | None = None, budget_ms: float = BUDGET_MS) -> str:
    """The one-line headline: CPU per delivery ratio and S2 p99 of Socket.IO/Node and rtlib, each with ``n`` and
    its 95 % interval, the client bundle, and each one's highest unsaturated S3 rate under ``budget_ms``."""
    io, rt = cpu_interval(data, "S2", "socketio-node"), cpu_interval(data, "S2", "rtlib")
    full = {r["file"]: r for r in data["bundle"]}.get("socket.io-client/dist/socket.io.min.js")
    points = load_points(data, budget_ms) if points is None else points
    s2 = points[points["scenario"] == "S2"].set_index("target")
    if not io.get("n") or not rt.get("n") or not full or not {"rtlib", "socketio-node"} <= set(s2.index):
        return "incomplete: see the report"
    ratio, low, high = _ratio(io, rt)
    kind = f"n = {rt['n']} rounds" if rt["kind"] == "rounds" else "n = 1 run, bounds = CPU tick resolution"

    def p99(name: str) -> str:
        row = s2.loc[name]
        ci = "" if math.isnan(row["p99 high"]) else f" ({row['p99 low']:.1f}–{row['p99 high']:.1f})"
        return f"{row['p99 ms']:.1f}{ci}"

    below = below_saturation(points, budget_ms)
    knee = {n: below.get(n, {}).get("best") for n in ("socketio-node", "rtlib")}
    cap = ("" if any(v is None for v in knee.values()) else
           f"; below saturation, p99 < {budget_ms:g} ms up to {knee['socketio-node']['deliveries/s'] / 1000:.0f}k "
           f"vs {knee['rtlib']['deliveries/s'] / 1000:.0f}k deliveries/s (S3)")
    saturated = [LABELS[n].split(" ")[0] for n in ("socketio-node", "rtlib") if s2.loc[n, "saturated"]]
    s2_note = f"; {' and '.join(saturated)} saturated: the machine's latency" if saturated else ""
    return (f"Socket.IO/Node {ratio:.1f}× rtlib's CPU per delivery (95 % {low:.1f}–{high:.1f}, {kind}); p99 "
            f"{p99('socketio-node')} vs {p99('rtlib')} ms (S2, n = {s2.loc['rtlib', 'n']:,} deliveries each"
            f"{s2_note}); client "
            f"{full['gzip_bytes'] / 1000:.1f} KB gz{cap}")


def ladder_chart(points: pd.DataFrame, budget_ms: float = BUDGET_MS) -> Any:
    """p99 against deliveries/s over the S3 ladder, per target; saturated steps hollow (as notebook 01)."""
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    s3 = points[points["scenario"] == "S3"]
    for k, name in enumerate(t for t in TARGET_ORDER if t in set(s3["target"])):
        steps, color = s3[s3["target"] == name].sort_values("deliveries/s"), f"C{k}"
        ax.plot(steps["deliveries/s"], steps["p99 ms"], color=color, lw=0.8, alpha=0.5)
        for saturated, part in steps.groupby("saturated"):
            low = (part["p99 ms"] - part["p99 low"]).fillna(0).clip(lower=0)
            high = (part["p99 high"] - part["p99 ms"]).fillna(0).clip(lower=0)
            ax.errorbar(part["deliveries/s"], part["p99 ms"], yerr=[low, high], fmt="o", ms=7, capsize=3,
                        color=color, mfc="white" if saturated else color, alpha=0.6 if saturated else 1.0,
                        label=LABELS[name].split(" (")[0] + (" (saturated)" if saturated else ""))
    ax.axhline(budget_ms, color="#d62728", ls="--", lw=1, label=f"the review's {budget_ms:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis, fmt in ((ax.xaxis, "{:,.0f}"), (ax.yaxis, "{:g}")):  # plain numbers, not powers of ten
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _, fmt=fmt: fmt.format(v)))
        low, high = axis.get_view_interval()
        minor = ticker.FuncFormatter(lambda v, _, fmt=fmt: fmt.format(v)) if high < 10 * low else ticker.NullFormatter()
        axis.set_minor_formatter(minor)  # minor labels only within a decade, where there are no major ones
    ax.tick_params(which="minor", labelsize=7)
    ax.set_xlabel("deliveries/s (S3: one workspace)")
    ax.set_ylabel("p99 delivery latency (ms, 95 % interval)")
    ax.set_title("S3: p99 against load; hollow = saturated (a process group or the machine ≥ 90 %)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return fig
