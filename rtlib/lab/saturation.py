"""Latency against load, with each load point's CPU: which points measured the design, which the machine.

Notebook 01 (and any live notebook that charts latency against load) builds one row per run with
:func:`load_points`: the delivery rate (with its count and 95 % interval), the same per server core, the CPU of
the server instances, Redis and the simulated clients over the load window (:mod:`rtlib.lab.cpu`, recorded by
:class:`rtlib.lab.cluster.Cluster` in ``Results.meta["cpu"]``), latency with 95 % intervals, and whether the
point is saturated (:func:`rtlib.lab.cpu.saturation`). :func:`answer_below_saturation` picks the answer a
reviewer can use: the highest delivery rate per server core, among the unsaturated points, at which p99 stays
under the budget (its interval's upper end under it), and the first saturated point. :func:`latency_vs_load`
charts it with the saturated points drawn apart.

Intervals: the deliveries of one update are not independent (one publish fans out to every client of the
workspace and they queue together), so latency intervals come from a bootstrap over **updates** (each update
with all its deliveries, seeded); the rate's interval is the exact Poisson interval of the number of updates
(the editors' open-loop Poisson process), times the deliveries per update.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from rtlib.lab.cpu import saturation
from rtlib.lab.results import Results
from rtlib.model.metrics import poisson_interval

__all__ = ["LATE_SHARE", "answer_below_saturation", "bootstrap_latency", "delivery_intervals", "describe",
           "latency_intervals",
           "latency_vs_load", "load_points"]

#: The share of the latency budget the simulated clients' p99 wake lateness may reach before a point counts as
#: saturated (the load generator is queueing, and the latency it measures includes that queue).
LATE_SHARE = 0.2


def latency_intervals(results: Results, seed: int = 0, resamples: int = 400) -> dict[str, Any]:
    """Mean, p50 and p99 latency (ms) with 95 % intervals from a bootstrap over updates; ``n`` deliveries and
    ``updates``."""
    d = results.deliveries[~results.deliveries["dropped"].astype(bool)].dropna(subset=["latency_ms"])
    out: dict[str, Any] = {"n": len(d), "updates": 0}
    if d.empty:
        return out
    codes = d.groupby(["sender", "ref"], sort=False).ngroup().to_numpy()
    return {**out, **bootstrap_latency(d["latency_ms"].to_numpy(dtype=float), codes, seed, resamples)}


def bootstrap_latency(lat: np.ndarray, codes: np.ndarray | None = None, seed: int = 0,
                      resamples: int = 400) -> dict[str, Any]:
    """Mean, p50 and p99 of ``lat`` (ms) with 95 % intervals from a bootstrap over the groups ``codes`` (0..k-1,
    one per value: each group is drawn whole, with all its values); ``codes`` None: over the values themselves.
    ``n`` values and ``updates`` groups."""
    lat = np.asarray(lat, dtype=float)
    out: dict[str, Any] = {"n": len(lat), "updates": 0}
    if not len(lat):
        return out
    codes = np.arange(len(lat)) if codes is None else np.asarray(codes)
    order = np.argsort(lat, kind="stable")
    lat_sorted, code_sorted = lat[order], codes[order]
    n_groups = int(codes.max()) + 1
    out["updates"] = n_groups
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(resamples):  # resample groups: each value weighs as often as its group was drawn
        weight = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)[code_sorted]
        cum = np.cumsum(weight)
        total = cum[-1]
        p50, p99 = (lat_sorted[np.searchsorted(cum, q * total)] for q in (0.5, 0.99))
        stats.append((float(weight @ lat_sorted) / total, p50, p99))
    low, high = np.percentile(np.array(stats), [2.5, 97.5], axis=0)
    for k, (name, value) in enumerate((("mean", lat.mean()), ("p50", np.percentile(lat, 50)),
                                       ("p99", np.percentile(lat, 99)))):
        out[name], out[f"{name}_low"], out[f"{name}_high"] = float(value), float(low[k]), float(high[k])
    return out


def delivery_intervals(lat_ms: np.ndarray, resamples: int = 400) -> dict[str, Any]:
    """:func:`bootstrap_latency` over single deliveries (no update groups known: the bench harness), rounded to
    the µs: ``n``, mean, p50 and p99 with their 95 % bounds."""
    ci = bootstrap_latency(lat_ms, resamples=resamples)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in ci.items() if k != "updates"}


def _rate(results: Results, window_s: float) -> dict[str, float]:
    """Deliveries per second over the load window, and its 95 % interval from the updates' Poisson count."""
    s = results.summary()
    updates, deliveries = s["updates_sent"], s["deliveries"]
    per_update = deliveries / updates if updates else 0.0
    low, high = poisson_interval(updates)
    return {"updates": updates, "deliveries": deliveries, "per_s": deliveries / window_s,
            "per_s_low": low * per_update / window_s, "per_s_high": high * per_update / window_s}


def load_points(runs: Mapping[Any, Results], server_cores: int, seed: int = 0,
                budget_ms: float | None = None) -> pd.DataFrame:
    """One row per run: load, CPU per process group, latency with intervals, saturated and why.
    ``server_cores``: the cores the servers have by design (one per instance: each is one event loop).
    ``budget_ms``: the latency budget; a point whose simulated clients' p99 wake lateness (real ms) reaches
    :data:`LATE_SHARE` of it is saturated too: latency runs from the scheduled send, so the load generator's own
    queue is in every number it measures."""
    rows = []
    for key, r in runs.items():
        sc = r.scenario
        rate = _rate(r, sc.wall(sc.duration))
        cpu = r.meta.get("cpu") or {}
        realtime = r.realtime()
        why = saturation(cpu, realtime) if cpu else ["CPU not measured"]
        late_ms = realtime.get("late_p99_s", 0.0) * sc.time_scale * 1000
        if budget_ms is not None and late_ms >= LATE_SHARE * budget_ms:
            why.append(f"clients late {late_ms:.0f} ms at p99 (>= {LATE_SHARE:.0%} of {budget_ms:g} ms)")
        row: dict[str, Any] = {"run": key, "clients": sc.clients, **rate,
                               "per_core": rate["per_s"] / server_cores,
                               "per_core_low": rate["per_s_low"] / server_cores,
                               "per_core_high": rate["per_s_high"] / server_cores}
        for group in ("servers", "redis", "clients"):
            g = cpu.get(group, {})
            row[f"{group}_cores"] = g.get("cores_used", np.nan)
            row[f"{group}_busiest"] = g.get("busiest_process_cores", np.nan)
        servers_cpu = cpu.get("servers", {}).get("cpu_s", np.nan)
        row["server_us_per_delivery"] = 1e6 * servers_cpu / rate["deliveries"] if rate["deliveries"] else np.nan
        row["lab_share"] = cpu.get("lab_share", np.nan)
        row["machine_share"] = cpu.get("machine_share", np.nan)
        row["client_late_p99_ms"] = late_ms
        row.update({f"lat_{k}": v for k, v in latency_intervals(r, seed).items()})
        row["saturated"] = bool(why)
        row["why"] = "; ".join(why)
        rows.append(row)
    return pd.DataFrame(rows)


def answer_below_saturation(points: pd.DataFrame, budget_ms: float) -> dict[str, Any]:
    """``best``: the unsaturated row with the highest delivery rate whose p99 interval lies under ``budget_ms``
    (None if none); ``saturated_from``: where saturation sets in for good, the lowest-rate saturated row above
    which every row is saturated (None when the highest load is not); ``disturbed``: saturated rows below it (a
    shared machine's passing load, not the onset); ``unsaturated_over``: unsaturated rows whose p99 is not under
    the budget (the design's own misses)."""
    ordered = points.sort_values("per_s")
    clean = ordered[~ordered["saturated"]]
    under = clean[clean["lat_p99_high"] < budget_ms]
    tail = 0
    for saturated in reversed(ordered["saturated"].tolist()):
        if not saturated:
            break
        tail += 1
    onset = ordered.iloc[len(ordered) - tail] if tail else None
    below_onset = ordered.iloc[:len(ordered) - tail]
    return {"best": None if under.empty else under.loc[under["per_s"].idxmax()], "saturated_from": onset,
            "disturbed": below_onset[below_onset["saturated"]],
            "unsaturated_over": clean[clean["lat_p99_high"] >= budget_ms]}


def latency_vs_load(points: pd.DataFrame, *, budget_ms: float, title: str = "Latency vs load per server core",
                    x: str = "per_core", xlabel: str = "deliveries/s per server core (95 % interval)") -> Any:
    """p50 and p99 (95 % intervals) against the delivery rate; saturated points hollow and labelled with why."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    for q, marker, color in (("p50", "o", "C0"), ("p99", "^", "C3")):
        for saturated, part in points.groupby("saturated"):
            yerr = [part[f"lat_{q}"] - part[f"lat_{q}_low"], part[f"lat_{q}_high"] - part[f"lat_{q}"]]
            xerr = [part[x] - part[f"{x}_low"], part[f"{x}_high"] - part[x]]
            ax.errorbar(part[x], part[f"lat_{q}"], yerr=yerr, xerr=xerr, fmt=marker, ms=7, capsize=3,
                        color=color, mfc="white" if saturated else color, alpha=0.6 if saturated else 1.0,
                        label=f"{q}{' (saturated)' if saturated else ''}")
    ordered = points.sort_values(x)
    for q, color in (("p50", "C0"), ("p99", "C3")):
        ax.plot(ordered[x], ordered[f"lat_{q}"], color=color, lw=0.8, alpha=0.5)
    for _, row in points[points["saturated"]].iterrows():
        ax.annotate("saturated:\n" + str(row["why"]).split(";")[0].split(",")[0], (row[x], row["lat_p99"]),
                    fontsize=7, xytext=(-10, 8), textcoords="offset points", color="#a00", ha="right")
    ax.axhline(budget_ms, color="#d62728", ls="--", lw=1, label=f"the review's {budget_ms:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("delivery latency (ms, 95 % interval)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def describe(row: pd.Series, budget_ms: float) -> str:
    """One line for a load point: rate per server core with n and interval, latency with intervals, CPU."""
    return (f"{row['per_core']:,.0f} deliveries/s per server core (n = {row['deliveries']:,} deliveries of "
            f"{row['updates']:,} updates; 95 % interval {row['per_core_low']:,.0f}–{row['per_core_high']:,.0f}): "
            f"p99 {row['lat_p99']:.1f} ms (95 % interval {row['lat_p99_low']:.1f}–{row['lat_p99_high']:.1f}), "
            f"mean {row['lat_mean']:.1f} ms ({row['lat_mean_low']:.1f}–{row['lat_mean_high']:.1f}); servers "
            f"{row['servers_cores']:.2f} cores, clients {row['clients_cores']:.2f}, machine {row['machine_share']:.0%} "
            f"busy")

