"""The tables of :mod:`bench.cost.scenarios`: one row per target (measured rtlib and toy, pass/fail, gap), then
the details of every case. Works on the suite's JSON-able result dict only."""

from __future__ import annotations

import math
from typing import Any

from bench.cost import idle_memory
from bench.cost.server_cost import markdown_table

P99 = "p99 latency, ms"
#: The issue's targets.
S2_CPU_TARGET_US = 15.0
S3_RATIO_TARGET = 1.5
S4_KIB_TARGET = 16.0
LABELS = {
    "S0": "S0 floor: 1 sender + 1 receiver, 20 updates/s",
    "S1": "S1: 1,000 receivers / 50 workspaces, 100 updates/s",
    "S2": "S2: 200 receivers / 1 workspace, 100 updates/s",
    "S3": "S3: max deliveries/s with p99 ≤ 50 ms (200 receivers / 1 workspace)",
    "S4": "S4: idle connections, server RSS per connection",
}


def background_pct(result: dict[str, Any]) -> float:
    """Background load during a case, % of a core: the per-process estimate, or the machine-wide one less
    interrupt time (at 100,000+ deliveries/s the case's own loopback softirq work is 20-30% of a core)."""
    if "error" in result:
        return math.inf
    pct = result["cpu_pct"]
    return max(pct["other_procs"], pct["other"] - pct["irq"])


def _runs(data: dict[str, Any], scenario: str, target: str) -> list[dict[str, Any]]:
    return [c for c in data["latency_cases"] if c["scenario"] == scenario and c["target"] == target
            and "error" not in c]


def _median_run(runs: list[dict[str, Any]], key: Any) -> dict[str, Any] | None:
    """The run with the median ``key`` (the lower of the middle two for an even count)."""
    return sorted(runs, key=key)[(len(runs) - 1) // 2] if runs else None


def _case(data: dict[str, Any], scenario: str, target: str) -> dict[str, Any] | None:
    """The run with the median p99 of (scenario, target)."""
    return _median_run(_runs(data, scenario, target), lambda c: c["latency_ms"]["p99"])


def _row(scenario: str, metric: str, target: str, rtlib: Any, toy: Any, ok: bool | None, gap: str) -> dict[str, Any]:
    return {"scenario": scenario, "metric": metric, "target": target, "rtlib": rtlib, "toy": toy, "pass": ok,
            "gap": gap}


def _missing(scenario: str, metric: str, target: str) -> dict[str, Any]:
    return _row(scenario, metric, target, None, None, None, "not measured (see the details)")


def _latency_rows(data: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    rt, toy = _case(data, scenario, "rtlib"), _case(data, scenario, "toy")
    if rt is None or toy is None:
        return [_missing(scenario, P99, "≤ toy p99")]
    r, t = rt["latency_ms"], toy["latency_ms"]
    quantiles = "{p50:.2f} / {p90:.2f} / {p99:.2f} / {max:.2f}".format
    gap = f"{r['p99'] - t['p99']:+.2f} ms ({r['p99'] / t['p99'] - 1:+.0%})" if t["p99"] else "n/a"
    every = lambda name: ", ".join(f"{c['latency_ms']['p99']:.2f}" for c in _runs(data, scenario, name))  # noqa: E731
    rows = [
        _row(scenario, P99 + (" (median run)" if len(_runs(data, scenario, "rtlib")) > 1 else ""), "≤ toy p99",
             r["p99"], t["p99"], r["p99"] <= t["p99"], gap),
        _row(scenario, "p50 / p90 / p99 / max, ms (that run)", "(info)", quantiles(**r), quantiles(**t), None, ""),
    ]
    if len(_runs(data, scenario, "rtlib")) > 1:
        rows.append(_row(scenario, "p99 of every run, ms", "(info)", every("rtlib"), every("toy"), None, ""))
    return rows


def _s2_cpu_row(data: dict[str, Any]) -> dict[str, Any]:
    metric, target = "CPU µs/delivery, server + redis", f"≤ {S2_CPU_TARGET_US:g}"
    # The run with the median CPU cost (not necessarily the median-p99 run).
    rt, toy = (_median_run(_runs(data, "S2", name), lambda c: c["cpu_us_per_delivery"]["total"])
               for name in ("rtlib", "toy"))
    if rt is None or toy is None:
        return _missing("S2", metric, target)
    fmt = lambda c: "{total:.1f} (server {server:.1f} + redis {redis:.1f})".format(**c["cpu_us_per_delivery"])  # noqa: E731
    value = rt["cpu_us_per_delivery"]["total"]
    return _row("S2", metric, target, fmt(rt), fmt(toy), value <= S2_CPU_TARGET_US,
                f"{value - S2_CPU_TARGET_US:+.1f} µs")


def _s3_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    metric, target = "deliveries/s at the knee", f"≥ {S3_RATIO_TARGET:g} × toy"
    knees = data["s3"]["knees"]
    rt, toy = knees["rtlib"]["knee"], knees["toy"]["knee"]
    if rt is None or toy is None:
        cell = lambda k: f"{k['deliveries_per_s']:,.0f} ({k['rate']:g} upd/s)" if k else "failed the lowest rate"  # noqa: E731
        return [_row("S3", metric, target, cell(rt), cell(toy), None, "no knee for both: see the S3 steps")]
    r, t = rt["deliveries_per_s"], toy["deliveries_per_s"]
    bound = lambda name: "≥ " if knees[name]["capped"] else ""  # noqa: E731 (passed every rate tried)
    share = lambda c: c["cpu_pct"]["receivers"] + c["cpu_pct"]["sender"]  # noqa: E731
    loadgen = lambda c: f"{share(c):.0f}% of a core ({share(c) / data['nproc']:.0f}% of the machine)"  # noqa: E731
    return [
        _row("S3", metric, target, f"{bound('rtlib')}{r:,.0f} ({rt['rate']:g} upd/s)",
             f"{bound('toy')}{t:,.0f} ({toy['rate']:g} upd/s)", r >= S3_RATIO_TARGET * t,
             f"{r / t:.2f} × toy; {r - S3_RATIO_TARGET * t:+,.0f}/s vs {S3_RATIO_TARGET:g} × toy"),
        _row("S3", "load generator CPU at the knee", "(info)", loadgen(rt), loadgen(toy), None, ""),
    ]


def _s4_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    metric, target = "KiB RSS per idle connection", f"≤ {S4_KIB_TARGET:g}"
    cases = {c["target"]: c for c in data["s4"]["cases"] if "error" not in c}
    if "rtlib" not in cases or "toy" not in cases:
        return [_missing("S4", metric, target)]
    rt, toy = cases["rtlib"], cases["toy"]
    v = rt["kib_per_connection"]
    return [
        _row("S4", metric + f" ({rt['connections']:,} connections)", target, f"{v:.2f}",
             f"{toy['kib_per_connection']:.2f}", v <= S4_KIB_TARGET, f"{v - S4_KIB_TARGET:+.2f} KiB"),
        _row("S4", "marginal KiB per connection (N/2 → N)", "(info)", f"{rt['marginal_kib_per_connection']:.2f}",
             f"{toy['marginal_kib_per_connection']:.2f}", None, ""),
    ]


def target_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for scenario in ("S0", "S1", "S2"):
        if any(c["scenario"] == scenario for c in data["latency_cases"]):
            rows += _latency_rows(data, scenario)
    if any(c["scenario"] == "S2" for c in data["latency_cases"]):
        rows.append(_s2_cpu_row(data))
    if data.get("s3"):
        rows += _s3_rows(data)
    if data.get("s4"):
        rows += _s4_rows(data)
    return rows


def errors(data: dict[str, Any]) -> list[str]:
    found = [c["error"] for c in data["latency_cases"] if "error" in c]
    if data.get("s3"):
        found += [s["error"] for steps in data["s3"]["steps"].values() for s in steps if "error" in s]
    if data.get("s4"):
        found += [c["error"] for c in data["s4"]["cases"] if "error" in c]
        if data["s4"]["tracemalloc"] and "error" in data["s4"]["tracemalloc"]:
            found.append(data["s4"]["tracemalloc"]["error"])
    return found


def targets_table(rows: list[dict[str, Any]]) -> str:
    out = ["| scenario | metric | target | rtlib | toy | result | gap to target |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        result = {True: "**PASS**", False: "**FAIL**", None: ""}[r["pass"]]
        value = lambda v: "–" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))  # noqa: E731
        out.append(f"| {r['scenario']} | {r['metric']} | {r['target']} | {value(r['rtlib'])} | {value(r['toy'])} | "
                   f"{result} | {r['gap']} |")
    return "\n".join(out)


def _s3_table(s3: dict[str, Any]) -> list[str]:
    out = ["| target | updates/s | offered del/s | achieved del/s | lost | p50 ms | p99 ms | max ms | CPU µs/del | "
           "server % | redis % | loadgen % | irq % | other % | bg % | result |", "|" + "---|" * 16]
    for target, steps in s3["steps"].items():
        for s in steps:
            if "error" in s:
                out.append(f"| {target} | {s['rate']:g} | failed: {s['error'].splitlines()[0][:150]} |")
                continue
            lat, pct = s["latency_ms"], s["cpu_pct"]
            out.append(
                f"| {target} | {s['rate']:g} | {s['offered_per_s']:,.0f} | {s['deliveries_per_s']:,.0f} | "
                f"{s['lost']:,} | {lat['p50']:.2f} | {lat['p99']:.2f} | {lat['max']:.2f} | "
                f"{s['cpu_us_per_delivery']['total']:.1f} | {pct['server']:.0f} | {pct['redis']:.0f} | "
                f"{pct['receivers'] + pct['sender']:.0f} | {pct['irq']:.0f} | {pct['other']:.0f} | "
                f"{background_pct(s):.0f} | "
                f"{'pass' if s['pass'] else 'FAIL: ' + s['why']} |")
    return out


def markdown(data: dict[str, Any]) -> str:
    p = data["parameters"]
    others = [background_pct(c) for c in data["latency_cases"] if "error" not in c]
    if data.get("s3"):
        others += [background_pct(s) for st in data["s3"]["steps"].values() for s in st if "error" not in s]
    lines = [
        f"# Scenario suite: rtlib vs the toy forwarder{' (quick smoke run)' if p['quick'] else ''}",
        "",
        f"{data['date']} · {data['nproc']} cores ({data['cpu_model']}) · Python {data['python']} · "
        f"{data['redis_server'].split(' sha=')[0]} · websockets {data['websockets']}",
        "",
        f"Background load: {data['background_load_pct']:.0f}% of a core before the run, "
        f"{data['background_load_pct_after']:.0f}% after; background load during the measured cases (other "
        "processes, or `other %` less interrupt time): median "
        f"{sorted(others)[len(others) // 2] if others else float('nan'):.0f}%, max {max(others, default=0):.0f}% "
        f"(a case above {p['noisy_pct']:g}% is rerun up to {p['retries']} times, the quietest attempt kept). "
        f"Suite wall time {data['suite_seconds']:.0f} s.",
        "",
        "## Targets",
        "",
        targets_table(data["targets"]),
        "",
        "Gap: measured − target (for `≤` targets, positive misses); S3: rtlib's knee as a multiple of the "
        "toy's, and its distance to 1.5 × the toy's knee.",
    ]
    if data["latency_cases"]:
        lines += ["", "## S0–S2: latency cases", "",
                  f"Send phase: S0 {p['s0_duration']:g} s, S1/S2 {p['duration']:g} s; "
                  f"{p.get('receiver_procs', 1)} receiver process(es); a fresh "
                  "redis-server and server per case; targets alternate within each scenario.", "",
                  markdown_table([{**c, "scenario": f"{c['scenario']} #{c.get('run', 1)}"}
                                  for c in data["latency_cases"]])]
    if data.get("s3"):
        lines += ["", "## S3: stepping the update rate", "",
                  f"1 workspace × 200 receivers ({p['s3_receiver_procs']} receiver processes) + 4 sender "
                  f"connections; {p['s3_step']:g} s per rate, fresh server per rate; rtlib started with "
                  "`--rate-limit 1000000 --rate-burst 1000000` (4 senders exceed 100 frames/s each). A rate passes "
                  "with p99 ≤ 50 ms, nothing lost and achieved ≥ 95% of offered deliveries/s; targets alternate "
                  "at each rate and stop at their first failure, then one bisection step between last pass and "
                  "first failure. Deliveries count the 200 receivers only (the senders' copies are uncounted).",
                  "", *_s3_table(data["s3"])]
    if data.get("s4"):
        s4 = data["s4"]
        trace = s4["tracemalloc"] if s4["tracemalloc"] and "error" not in s4["tracemalloc"] else None
        lines += ["", "## S4: idle connections", "",
                  "Server VmRSS (/proc/<pid>/status) after a warm-up (20 connections opened, welcomed and closed) "
                  "with 0, N/2 and N idle connections (connected, welcomed by rtlib, never sending; 2,500 per "
                  "load-generator process); KiB/conn = (RSS(N) − RSS(0)) / N; marginal = (RSS(N) − RSS(N/2)) / "
                  "(N/2).", "", *idle_memory.markdown(s4["cases"], trace)]
        if s4["tracemalloc"] and "error" in s4["tracemalloc"]:
            lines += ["", f"tracemalloc experiment failed: {s4['tracemalloc']['error'][:300]}"]
    lines += ["", "CPU µs/del = (server + redis-server CPU from the start of the send phase until the last delivery) "
              "/ deliveries received. Latency = receipt − *scheduled* send time (open loop). `%` columns: share of "
              "one core; loadgen = receiver + sender processes; irq = interrupt time (mostly the loopback traffic); "
              "other = every other process on the machine (its machine-wide estimate includes irq); bg = the "
              "background load that decides reruns: other processes only, or other less irq.", ""]
    return "\n".join(lines)
