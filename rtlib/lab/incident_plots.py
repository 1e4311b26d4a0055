"""Charts of incidents and recovery: recovered vs resynced reconnects, the time to catch up, and a soak timeline.

Same style and conventions as :mod:`rtlib.lab.plots` (figures built without pyplot; incidents drawn as dotted
vertical lines). :func:`recovery_chart` takes a lab :class:`~rtlib.lab.results.Results`; :func:`soak_timeline`
takes the JSON that ``bench/resilience/soak.py`` writes, so a notebook can redraw it without re-running the soak.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rtlib.lab.plots import _cdf, _events, _figure, _log, _styled
from rtlib.lab.results import Results

__all__ = ["KIND_COLORS", "recovery_chart", "soak_timeline"]

KIND_COLORS = {"recovered": "#2ca02c", "resynced": "#ff7f0e"}


@_styled
def recovery_chart(results: Results, *, events: Mapping[str, float] | None = None, bins: int = 40,
                   title: str = "Reconnects: recovered from history vs resynced") -> Figure:
    """Left: reconnects over the run (by the time of their ``session.welcome``), stacked by outcome, with the
    incidents. Right: time to recover, from the dropped socket to caught up (the replay reached the history
    head of the welcome, or every task was re-fetched), as a CDF in wall milliseconds."""
    rec, sc = results.recoveries, results.scenario
    fig, axes = _figure(ncols=2, figsize=(11, 4.2))
    left, right = axes[0]
    edges = np.linspace(0, sc.duration + sc.drain / sc.time_scale, bins + 1)
    stacks = [rec.loc[rec["kind"] == k, "t_welcome"].to_numpy() for k in KIND_COLORS]
    left.hist(stacks, bins=edges, stacked=True, color=list(KIND_COLORS.values()),
              label=[f"{k} ({len(s)})" for k, s in zip(KIND_COLORS, stacks, strict=True)])
    _events(left, events)
    left.set(title=title, xlabel="time (design s)", ylabel="reconnects per bin", xlim=(0, edges[-1]))
    left.legend(loc="upper left")
    wall_ms = (rec["t_caught_up"] - rec["t_dropped"]) * sc.time_scale * 1000
    for kind, color in KIND_COLORS.items():
        values = wall_ms[rec["kind"] == kind].dropna().to_numpy()  # NaN: dropped again before caught up
        if len(values):
            _cdf(right, np.maximum(values, 0.1), color=color,
                 label=f"{kind}: p50 {np.median(values):.0f} ms, p99 {np.percentile(values, 99):.0f} ms")
    _log(right, "x")
    right.set(title="Time to recover (socket dropped → caught up)", xlabel="wall ms (log scale)",
              ylabel="share of reconnects", ylim=(0, 1.02))
    right.legend(loc="lower right")
    return fig


@_styled
def soak_timeline(data: Mapping[str, Any], title: str = "Soak: memory, reconnects and incidents") -> Figure:
    """Three panels over the soak's minutes: RSS of each server process (and Redis), reconnects per bin by
    outcome, deliveries per second; every incident as a labelled dotted line. ``data`` is ``soak.json``."""
    fig, axes = _figure(nrows=3, figsize=(11, 8), sharex=True)
    mem, conn, load = axes[:, 0]
    rss = pd.DataFrame(data["rss"])
    if not rss.empty:
        for proc, g in rss.groupby("process"):
            mem.plot(g["t"] / 60, g["rss_mib"], label=str(proc), lw=1.2)
    if warm := data.get("warmupS"):
        mem.axvspan(0, warm / 60, color="#bbbbbb", alpha=0.3, lw=0, label="warm-up")
    mem.set(title=title, ylabel="RSS (MiB)")
    rec = pd.DataFrame(data["recoveries"], columns=["kind", "t"])
    end = data["durationS"] / 60
    edges = np.linspace(0, end, 61)
    conn.hist([rec.loc[rec["kind"] == k, "t"] / 60 for k in KIND_COLORS], bins=edges, stacked=True,
              color=list(KIND_COLORS.values()),
              label=[f"{k} ({int((rec['kind'] == k).sum())})" for k in KIND_COLORS])
    conn.set(ylabel="reconnects per bin")
    rate = pd.DataFrame(data["deliveryRate"], columns=["t", "per_s"])
    load.plot(rate["t"] / 60, rate["per_s"], color="#1f77b4", lw=1)
    load.set(xlabel="time (minutes)", ylabel="deliveries / s", xlim=(0, end))
    marks = {f"{i['what']} ({i['t']:.0f} s)": i["t"] / 60 for i in data["incidents"]}
    _events(mem, marks)
    for ax in (conn, load):  # the same lines, labelled once (a leading "_" keeps them out of the legend)
        _events(ax, {f"_{name}": t for name, t in marks.items()})
    mem.legend(loc="upper left", ncols=2)
    conn.legend(loc="upper left")
    return fig
