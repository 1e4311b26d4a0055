"""Charts of incidents and recovery: recovered vs resynced reconnects, the time to catch up, and a soak timeline.

Same style and conventions as :mod:`rtlib.lab.plots` (figures built without pyplot; incidents drawn as dotted
vertical lines). :func:`recovery_chart` takes a lab :class:`~rtlib.lab.results.Results`; :func:`soak_timeline`
takes the JSON that ``bench/resilience/soak.py`` writes, so a notebook can redraw it without re-running the soak;
:func:`connection_timeline` and :func:`presence_entries_over_time` show an instance kill.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rtlib.lab.plots import BAND, EVENT, _cdf, _events, _figure, _log, _single, _styled
from rtlib.lab.results import Results

__all__ = ["KIND_COLORS", "connection_timeline", "presence_entries_over_time", "recovery_chart", "soak_timeline"]

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


def _connected_counts(conns: pd.DataFrame) -> pd.DataFrame:
    """Connected users per instance after each connection event (a user counts once, on its latest instance;
    connects before the clock started count at t = 0)."""
    where: dict[str, int | None] = {}
    rows = []
    ordered = conns.sort_values("t", kind="stable")[["user", "instance", "event", "t"]]
    for user, instance, event, t in ordered.itertuples(index=False):
        if event not in ("connected", "lost", "closed", "crashed"):
            continue
        where[user] = int(instance) if event == "connected" else None
        counts = pd.Series([w for w in where.values() if w is not None], dtype=int).value_counts()
        rows.append({"t": max(float(t), 0.0), **{int(k): int(v) for k, v in counts.items()}})
    return pd.DataFrame(rows).fillna(0).drop_duplicates("t", keep="last").set_index("t")


@_styled
def connection_timeline(results: Results, *, events: Mapping[str, float] | None = None,
                        title: str = "Connected clients per instance") -> Figure:
    """Step chart of how many clients each instance holds over the run, with ``events`` (name -> design s)."""
    counts = _connected_counts(results.connections)
    end = results.scenario.duration
    fig, ax = _single()
    for col in sorted(c for c in counts.columns if isinstance(c, int)):
        ax.step(list(counts.index) + [end], list(counts[col]) + [counts[col].iloc[-1]], where="post",
                color=f"C{col}", label=f"instance i{col}")
    _events(ax, events)
    ax.set(title=title, xlabel="time (design s)", ylabel="connected clients", xlim=(0, end))
    ax.legend(loc="center right")
    return fig


@_styled
def presence_entries_over_time(df: pd.DataFrame, *, kill_at: float, heartbeat_interval: float, timeout: float,
                               sweep_interval: float, title: str = "Presence entries in Redis per instance") -> Figure:
    """``df`` (columns ``t`` design s, ``instance``, ``entries``): how long a dead instance's presence entries
    outlive it. They must expire within [kill + timeout − heartbeat, kill + timeout + sweep] (shaded)."""
    fig, ax = _single()
    for inst, g in df.groupby("instance"):
        ax.step(g["t"], g["entries"], where="post", label=f"entries of instance {inst}")
    ax.axvline(kill_at, color=EVENT, ls=":", lw=1.5, label=f"instance killed at {kill_at:g} s")
    ax.axvspan(kill_at + timeout - heartbeat_interval, kill_at + timeout + sweep_interval, color=BAND, alpha=0.4,
               lw=0, label="expiry window: kill + timeout − heartbeat … + sweep")
    ax.axvline(kill_at + timeout, color="#d62728", ls="--", label=f"kill + timeout ({timeout:g} s)")
    ax.set(title=title, xlabel="time (design s)", ylabel="presence entries (viewer connections)")
    ax.legend(loc="center right")
    return fig
