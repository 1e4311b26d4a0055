"""Tables, the headline chart and the answer of notebook 06, from the dict of :func:`bench.peers.compare.run` (or
its recorded JSON). Nothing here measures; every number comes from that dict."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.peers import compare_load
from bench.peers.compare_load import LABELS, TARGET_ORDER, cpu_resolution_us

__all__ = ["LABELS", "REFERENCE", "REVIEW_BUNDLE_BYTES", "TARGET_ORDER", "answer", "bundle_table", "chart", "claims",
           "cpu_resolution_us", "idle_table", "knee_table", "latency_table", "loadgen_overhead_us", "ratios",
           "reference_table"]

#: Measured elsewhere on this machine with an independent driver (issue 13), S2: CPU µs per delivery and p99 ms.
#: Quoted to compare rankings, not results of this workbench.
REFERENCE = {"cpu_us": {"rtlib": 14.0, "socketio-node": 31.0, "ws-node": 22.0, "python-socketio": 68.0},
             "p99_ms": {"rtlib": 32.0, "socketio-node": 80.0}}


#: The review's "Socket.IO adds 30KB to the client bundle".
REVIEW_BUNDLE_BYTES = 30_000


def claims(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The findings the notebook's text states that one run can establish at any size, each with whether this
    run's data bears it out and the numbers behind it. Orderings count only beyond the measurement's resolution
    (:func:`cpu_resolution_us`); latency orderings and the S3 knee are left out: at CI size (1 s of load on 2 shared
    cores, one S3 rate) they measure the machine's neighbours, not the servers."""
    cases = [c for c in data["latency_cases"] if c["scenario"] in ("S1", "S2")]
    failed = [f"{c['scenario']} {c['target']}: {c['error'].splitlines()[0][:80]}" for c in cases if "error" in c]
    failed += [f"idle {c['target']}: {c['error'].splitlines()[0][:80]}" for c in data["idle"] if "error" in c]
    ran = [f"{c['scenario']} {c['target']}" for c in cases if "error" not in c]
    lost = {f"{c['scenario']} {c['target']}": c["lost"] for c in cases if "error" not in c and c["lost"]}
    out = [{"claim": "every target ran S1, S2 and idle memory", "holds": not failed and not data["skipped"]
            and len(ran) == 2 * len(data["plan"]["targets"]),
            "evidence": f"{len(ran)} cases ran; failed {failed or 'none'}; skipped {data['skipped'] or 'none'}"},
           {"claim": "nothing lost (S1, S2: every target)", "holds": not lost and bool(ran),
            "evidence": f"lost {lost or 0} over {sum(c['received'] for c in cases if 'error' not in c):,} deliveries"}]
    s2 = _ok(data, "S2")

    def cheaper(a: str, b: str, strict: bool) -> dict[str, Any]:
        """``a`` cheaper than ``b`` by more than the resolution (``strict``), or not dearer by more than it."""
        claim = f"S2: {a} {'cheaper per delivery than' if strict else 'not measurably dearer per delivery than'} {b}"
        ca, cb = s2.get(a), s2.get(b)
        if not ca or not cb:
            return {"claim": claim, "holds": False, "evidence": "not measured"}
        xa, xb = ca["cpu_us_per_delivery"]["total"], cb["cpu_us_per_delivery"]["total"]
        res = cpu_resolution_us(ca) + cpu_resolution_us(cb)
        return {"claim": claim, "holds": xb - xa > res if strict else xa - xb <= res,
                "evidence": f"{xa:g} vs {xb:g} µs (gap {xb - xa:.1f}, resolution {res:.1f})"}

    # rtlib vs Socket.IO/Node: 12-32 µs apart at CI size on this machine, against a 16 µs resolution, and the
    # neighbours' load moves both: only "not dearer" is robust there. python-socketio is 3-4x rtlib's cost.
    out += [cheaper("rtlib", "socketio-node", strict=False), cheaper("rtlib", "python-socketio", strict=True)]
    # "python-socketio is the slowest of all": no other target measurably dearer (beyond the resolution).
    py = s2.get("python-socketio")
    if py:
        dearer = [n for n, c in s2.items() if n != "python-socketio" and c["cpu_us_per_delivery"]["total"]
                  - py["cpu_us_per_delivery"]["total"] > cpu_resolution_us(c) + cpu_resolution_us(py)]
        out.append({"claim": "S2: no target measurably dearer per delivery than python-socketio",
                    "holds": not dearer, "evidence": f"dearer: {dearer or 'none'}"})
    full = {r["file"]: r for r in data["bundle"]}.get("socket.io-client/dist/socket.io.min.js")
    out.append({"claim": "socket.io-client gzipped is below the review's 30 KB, minified above it",
                "holds": bool(full) and full["gzip_bytes"] < REVIEW_BUNDLE_BYTES < full["min_bytes"],
                "evidence": f"{full['gzip_bytes']:,} B gz, {full['min_bytes']:,} B min" if full else "not measured"})
    return out


def reference_table(data: dict[str, Any]) -> tuple[pd.DataFrame, bool, bool]:
    """S2 here next to the reference numbers; and whether the CPU and the p99 rankings are the same."""
    s2 = _ok(data, "S2")
    rows = [{"target": LABELS[n], "CPU µs/delivery here": s2[n]["cpu_us_per_delivery"]["total"] if n in s2 else None,
             "reference µs": ref, "p99 ms here": s2[n]["latency_ms"]["p99"] if n in s2 else None,
             "reference p99 ms": REFERENCE["p99_ms"].get(n)}
            for n, ref in REFERENCE["cpu_us"].items()]

    def same_order(metric: str, here: dict[str, float]) -> bool:
        names = [n for n in REFERENCE[metric] if n in here]
        return len(names) == len(REFERENCE[metric]) and (
            sorted(names, key=here.get) == sorted(names, key=REFERENCE[metric].get))

    cpu_same = same_order("cpu_us", {n: c["cpu_us_per_delivery"]["total"] for n, c in s2.items()})
    p99_same = same_order("p99_ms", {n: c["latency_ms"]["p99"] for n, c in s2.items()})
    return pd.DataFrame(rows), cpu_same, p99_same


def _ok(data: dict[str, Any], scenario: str) -> dict[str, dict[str, Any]]:
    return {c["target"]: c for c in data["latency_cases"] if c["scenario"] == scenario and "error" not in c}


def _order(names: Any) -> list[str]:
    return [t for t in TARGET_ORDER if t in names]


def latency_table(data: dict[str, Any]) -> pd.DataFrame:
    """One row per (scenario, target): latency, CPU per delivery, losses, background load."""
    rows = []
    for c in data["latency_cases"]:
        row = {"scenario": c["scenario"], "target": LABELS.get(c["target"], c["target"])}
        if "error" in c:
            rows.append({**row, "error": c["error"].splitlines()[0][:120]})
            continue
        cpu = c["cpu_us_per_delivery"]
        rows.append({**row, "deliveries/s": round(c["deliveries_per_s"]), "lost": c["lost"],
                     "p50 ms": c["latency_ms"]["p50"], "p99 ms": c["latency_ms"]["p99"],
                     "CPU µs/delivery": cpu["total"], "server µs": cpu["server"], "redis µs": cpu["redis"],
                     "other load %": c["cpu_pct"]["other"]})
    return pd.DataFrame(rows)


def knee_table(data: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for name in _order(data["s3"]):
        s3 = data["s3"][name]
        fail = next((s for s in s3["steps"] if not s["pass"]), None)
        rows.append({"target": LABELS[name], "knee updates/s": s3["knee_rate"],
                     "knee deliveries/s": round(s3["knee_deliveries_per_s"]),
                     "first failure": f"{fail['rate']:g}/s: {fail['why']}" if fail else "none (capped)",
                     "rates tried": ", ".join(f"{s['rate']:g}" for s in s3["steps"])})
    return pd.DataFrame(rows)


def idle_table(data: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for c in sorted(data["idle"], key=lambda c: TARGET_ORDER.index(c["target"])):
        if "error" in c:
            rows.append({"target": LABELS[c["target"]], "error": c["error"][:120]})
        else:
            rows.append({"target": LABELS[c["target"]], "connections": c["connections"],
                         "RSS idle MiB": round(c["rss_kib"]["zero"] / 1024, 1),
                         "RSS full MiB": round(c["rss_kib"]["full"] / 1024, 1),
                         "KiB/connection": c["kib_per_connection"],
                         "marginal KiB/connection": c["marginal_kib_per_connection"]})
    return pd.DataFrame(rows)


def bundle_table(data: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([{**r, "min KB": round(r["min_bytes"] / 1000, 1), "gzip KB": round(r["gzip_bytes"] / 1000, 1)}
                         for r in data["bundle"]])


def ratios(data: dict[str, Any]) -> pd.DataFrame:
    """Each peer's number divided by rtlib's (> 1: rtlib is better, for every row)."""
    s1, s2 = _ok(data, "S1"), _ok(data, "S2")
    idle = {c["target"]: c for c in data["idle"] if "error" not in c}
    rt = "rtlib"

    def div(a: float | None, b: float | None) -> float:
        return round(a / b, 2) if a and b else math.nan

    def p99(cases: dict[str, dict[str, Any]], name: str) -> float | None:
        return cases.get(name, {}).get("latency_ms", {}).get("p99")

    rows = []
    for name in _order(set(s1) | set(s2) | set(data["s3"])):
        if name == rt:
            continue
        rows.append({
            "peer": LABELS[name],
            "S1 CPU/delivery": div(s1.get(name, {}).get("cpu_us_per_delivery", {}).get("total"),
                                   s1.get(rt, {}).get("cpu_us_per_delivery", {}).get("total")),
            "S2 CPU/delivery": div(s2.get(name, {}).get("cpu_us_per_delivery", {}).get("total"),
                                   s2.get(rt, {}).get("cpu_us_per_delivery", {}).get("total")),
            "S1 p99": div(p99(s1, name), p99(s1, rt)),
            "S2 p99": div(p99(s2, name), p99(s2, rt)),
            # inverted, so that > 1 still means rtlib is better
            "S3 knee (rtlib / peer)": div(data["s3"].get(rt, {}).get("knee_deliveries_per_s"),
                                          data["s3"].get(name, {}).get("knee_deliveries_per_s")),
            "idle KiB/conn": div(idle.get(name, {}).get("kib_per_connection"),
                                 idle.get(rt, {}).get("kib_per_connection")),
        })
    return pd.DataFrame(rows)


def loadgen_overhead_us(data: dict[str, Any]) -> float:
    """The load driver's own CPU per delivery in S2 (receivers + sender), median over targets, µs."""
    values = sorted((c["cpu_pct"]["receivers"] + c["cpu_pct"]["sender"]) / 100 / c["deliveries_per_s"] * 1e6
                    for c in _ok(data, "S2").values() if c["deliveries_per_s"])
    return round(values[len(values) // 2], 1) if values else math.nan


def chart(data: dict[str, Any]) -> Any:
    """The headline figure: S2 CPU per delivery, S2 p50/p99, and the S3 knee, per target."""
    import matplotlib.pyplot as plt

    s2 = _ok(data, "S2")
    names = _order(set(s2) | set(data["s3"]))
    labels = [LABELS[n].replace(" + ", "\n+ ").replace(", ", "\n") for n in names]
    colors = ["#1f77b4" if n == "rtlib" else "#ff7f0e" if "socketio" in n else "#999999" for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    cpu = [s2[n]["cpu_us_per_delivery"]["total"] if n in s2 else 0 for n in names]
    axes[0].barh(labels, cpu, color=colors)
    axes[0].set_title("S2: server + Redis CPU per delivery (µs)")
    p50 = [s2[n]["latency_ms"]["p50"] if n in s2 else 0 for n in names]
    p99 = [s2[n]["latency_ms"]["p99"] if n in s2 else 0 for n in names]
    axes[1].barh(labels, p99, color=colors, alpha=0.45, label="p99")
    axes[1].barh(labels, p50, color=colors, label="p50")
    axes[1].set_title("S2: delivery latency p50 (dark) / p99 (ms)")
    knee = [data["s3"].get(n, {}).get("knee_deliveries_per_s", 0) / 1000 for n in names]
    axes[2].barh(labels, knee, color=colors)
    axes[2].set_title("S3 knee: deliveries/s (thousands), p99 ≤ 50 ms")
    for ax in axes:
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.suptitle("rtlib vs Socket.IO: same open-loop load, same machine, same run", fontsize=12)
    fig.tight_layout()
    return fig


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def answer(data: dict[str, Any]) -> tuple[str, str, tuple[str, str]]:
    """(answer markdown, one-line headline, (verdict, reason)) on the decision "ws library, not Socket.IO"."""
    s1, s2 = _ok(data, "S1"), _ok(data, "S2")
    rt2, io2 = s2.get("rtlib"), s2.get("socketio-node")
    bundle = {r["file"]: r for r in data["bundle"]}
    full = bundle.get("socket.io-client/dist/socket.io.min.js")
    knee = {n: data["s3"].get(n, {}).get("knee_deliveries_per_s") for n in data["s3"]}
    cpu = {n: c["cpu_us_per_delivery"]["total"] for n, c in s2.items()}
    ranking = " < ".join(f"{LABELS[n].split(' (')[0]} {cpu[n]:.1f}" for n in sorted(cpu, key=cpu.get))
    plan = data["plan"]
    s1_what = "{:,} clients in {} workspaces, {:g} updates/s".format(*plan["s1"])
    s2_what = "{:,} clients in {} workspace, {:g} updates/s".format(*plan["s2"])
    lines = []
    if rt2 and io2:
        lines.append(
            f"- **Cost (S2, {s2_what}):** rtlib spends "
            f"**{cpu['rtlib']:.1f} µs** of server + Redis CPU per delivery, Socket.IO on Node "
            f"**{cpu['socketio-node']:.1f} µs** ({cpu['socketio-node'] / cpu['rtlib']:.1f}×). Ranking, µs/delivery: "
            f"{ranking}.")
        lines.append(
            f"- **Latency (S2):** p50 / p99 rtlib {rt2['latency_ms']['p50']:.1f} / {rt2['latency_ms']['p99']:.1f} ms, "
            f"Socket.IO {io2['latency_ms']['p50']:.1f} / {io2['latency_ms']['p99']:.1f} ms.")
    if s1.get("rtlib") and s1.get("socketio-node"):
        a, b = s1["rtlib"], s1["socketio-node"]
        lines.append(
            f"- **S1 ({s1_what}):** rtlib {a['cpu_us_per_delivery']['total']:.1f} µs/delivery, "
            f"p99 {a['latency_ms']['p99']:.1f} ms; Socket.IO {b['cpu_us_per_delivery']['total']:.1f} µs, "
            f"p99 {b['latency_ms']['p99']:.1f} ms.")
    if knee.get("rtlib") and knee.get("socketio-node"):
        capped = [LABELS[n].split(" (")[0] for n in ("rtlib", "socketio-node") if data["s3"][n]["capped"]]
        saturated = [LABELS[n].split(" (")[0] for n in ("rtlib", "socketio-node") if compare_load.reasons(
            next(s for s in data["s3"][n]["steps"] if s["rate"] == data["s3"][n]["knee_rate"]), data["nproc"])]
        lines.append(f"- **Capacity (S3 knee, p99 ≤ 50 ms):** rtlib {knee['rtlib']:,.0f} deliveries/s, Socket.IO "
                     f"{knee['socketio-node']:,.0f} ({knee['rtlib'] / knee['socketio-node']:.1f}×)"
                     + (f"; {' and '.join(capped)} passed every rate tried, so the knee is higher" if capped else "")
                     + (f"; the knee step of {' and '.join(saturated)} was saturated (the machine's limit, not the "
                        f"design's): read the line below" if saturated else "") + ".")
    idle = {c["target"]: c["kib_per_connection"] for c in data["idle"] if "error" not in c}
    if "rtlib" in idle and "socketio-node" in idle:
        lines.append(f"- **Memory per idle connection:** rtlib {idle['rtlib']:.1f} KiB, Socket.IO "
                     f"{idle['socketio-node']:.1f} KiB, python-socketio {_fmt(idle.get('python-socketio'))} KiB.")
    if full:
        kb_min, kb_gz = full["min_bytes"] / 1000, full["gzip_bytes"] / 1000
        claim = ("between the two" if kb_gz < 30 < kb_min else "above both" if 30 > kb_min
                 else "below both")
        lines.append(f"- **Client bundle:** `socket.io-client` {kb_min:.1f} KB minified, **{kb_gz:.1f} KB "
                     f"gzipped** (what a browser downloads): the review's \"30KB\" is {claim}; a plain WebSocket "
                     f"client ships no library at all.")
    _, cpu_same, p99_same = reference_table(data)
    if rt2 and io2:
        ref = " < ".join(f"{LABELS[n].split(' (')[0]} {v:g}" for n, v in sorted(REFERENCE["cpu_us"].items(),
                                                                                   key=lambda kv: kv[1]))
        ref_p99 = " < ".join(f"{LABELS[n].split(' (')[0]} {v:g}" for n, v in sorted(REFERENCE["p99_ms"].items(),
                                                                                    key=lambda kv: kv[1]))
        lines.append(f"- **Against the numbers measured elsewhere on this machine** (S2: {ref} µs; p99 {ref_p99} "
                     f"ms): the CPU ranking is "
                     f"{'reproduced' if cpu_same else 'NOT reproduced'}, the p99 ranking "
                     f"{'reproduced' if p99_same else 'NOT reproduced'}; absolute values differ (another driver "
                     f"and machine load)" + (
                         f". This run is too small to rank CPU costs: {rt2['received']:,} deliveries, and CPU time "
                         f"is counted in 10 ms ticks (±{1e4 / rt2['received']:.1f} µs per delivery)."
                         if 1e4 / max(1, rt2["received"]) > 0.05 * cpu["rtlib"] else "."))
    lines.append("- **Where Socket.IO is better:** arbitrary rooms, built-in client reconnection with buffering, "
                 "long-polling fallback, ack callbacks. rtlib is better on ordering, recovery, presence and schema "
                 "(the feature table of the report).")
    cheaper = bool(rt2 and io2 and cpu["rtlib"] < cpu["socketio-node"])
    verdict = ("confirmed" if cheaper else "not confirmed by cost",
               (f"Socket.IO/Node costs {cpu['socketio-node'] / cpu['rtlib']:.1f}× rtlib's CPU per delivery (S2); "
                f"its client is {full['gzip_bytes'] / 1000:.0f} KB gzipped, not 30"
                if rt2 and io2 and full else "not measured"))
    points = compare_load.load_points(data)
    lines.insert(-1, f"- **Below saturation (S3, p99 < {compare_load.BUDGET_MS:g} ms, no process group, load generator "
                     f"or machine at 90 %):**\n" + "\n".join("  " + line for line in
                                                            compare_load.below_text(points).splitlines()))
    headline = compare_load.headline(data, points)
    return "\n".join(lines), headline, verdict
