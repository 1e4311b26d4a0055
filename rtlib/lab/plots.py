"""Charts of simulation results: each function takes :class:`~rtlib.lab.results.Results` or DataFrames and returns a
:class:`matplotlib.figure.Figure` (built without pyplot: nothing is shown or kept in global state).

One style throughout (:data:`STYLE`, fixed colours per ordering strategy and per ``left`` reason). Times are
design seconds, latency is real milliseconds. Charts mark what a reader needs to judge them: the 45 ms average
delivery the design review quoted (:data:`REVIEW_AVG_MS`), the simulator's own measured overhead as a band, and
heartbeat / timeout / sweep on presence charts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogFormatter, MultipleLocator

from rtlib.lab.results import Results

__all__ = ["REVIEW_AVG_MS", "STRATEGY_COLORS", "STYLE", "detection_delays",
           "false_departures_by_model", "latency_by_instance", "latency_cdf", "latency_histogram", "latency_over_time",
           "latency_vs_clients", "ordering_comparison", "presence_timeline"]

#: The average delivery latency quoted in the architecture review ("45ms average delivery").
REVIEW_AVG_MS = 45.0
STYLE: dict[str, Any] = {
    "figure.figsize": (8, 4.5), "figure.dpi": 100, "savefig.dpi": 120, "font.size": 9, "axes.titlesize": 11,
    "axes.titleweight": "bold", "axes.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8,
    "legend.frameon": False, "axes.spines.top": False, "axes.spines.right": False, "lines.linewidth": 1.6,
    "axes.prop_cycle": mpl.cycler(color=["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]),
}
STRATEGY_COLORS = {"naive": "#d62728", "version_gate": "#ff7f0e", "gap_resync": "#2ca02c"}
REASON_COLORS = {"leave": "#2ca02c", "disconnect": "#1f77b4", "timeout": "#d62728"}
REF, BAND, EVENT, SEEN = "#555555", "#bbbbbb", "#9467bd", "#1f77b4"
LATENCY_LABEL = "delivery latency (ms, real; log scale)"
Data = Results | pd.DataFrame
F = TypeVar("F", bound=Callable[..., Figure])


def _styled(fn: F) -> F:
    """Build the figure inside :data:`STYLE` (rcParams are read while artists are created)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with mpl.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def _figure(ncols: int = 1, nrows: int = 1, figsize: tuple[float, float] | None = None, **kw: Any
            ) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _single(figsize: tuple[float, float] | None = None) -> tuple[Figure, Axes]:
    fig, axes = _figure(figsize=figsize)
    return fig, axes[0, 0]


def _latencies(data: Data) -> pd.DataFrame:
    """Delivered (not impairment-dropped) rows with a latency."""
    d = data.deliveries if isinstance(data, Results) else data
    if "dropped" in d:
        d = d[~d["dropped"].astype(bool)]
    return d[d["latency_ms"].notna()]


def _calibration(data: Any, calibration_ms: float | None) -> float | None:
    value = calibration_ms if calibration_ms is not None else getattr(data, "calibration_ms", None)
    return float(value) if value is not None and np.isfinite(value) and value > 0 else None


def _log(ax: Axes, axis: str) -> None:
    """Log scale with plain numbers as tick labels (1, 10, 100 ms, not 10^0)."""
    getattr(ax, f"set_{axis}scale")("log")
    getattr(ax, f"{axis}axis").set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    getattr(ax, f"{axis}axis").set_minor_formatter(LogFormatter(minor_thresholds=(1.2, 0.6)))


def _references(ax: Axes, axis: str, reference_ms: float | None, calibration_ms: float | None,
                floor: float = 0.0) -> None:
    """The review's 45 ms line and the simulator-overhead band (from ``floor``) on the latency axis."""
    line, span = (ax.axvline, ax.axvspan) if axis == "x" else (ax.axhline, ax.axhspan)
    if reference_ms:
        line(reference_ms, color=REF, ls="--", lw=1.2, label=f"review: {reference_ms:g} ms average")
    if calibration_ms:
        floor = min(floor, calibration_ms / 2) if floor else 0.0
        span(floor, calibration_ms, color=BAND, alpha=0.5, lw=0, label=f"simulator overhead {calibration_ms:.3g} ms")
        if floor:
            (ax.set_xlim if axis == "x" else ax.set_ylim)(floor, None)


def _events(ax: Axes, events: Mapping[str, float] | None) -> None:
    for name, t in (events or {}).items():
        ax.axvline(t, color=EVENT, ls=":", lw=1.5, label=name)


def _cdf(ax: Axes, lat: np.ndarray, **kw: Any) -> None:
    lat = np.sort(lat)
    if len(lat):
        ax.step(lat, np.arange(1, len(lat) + 1) / len(lat), where="post", **kw)


@_styled
def latency_cdf(data: Data | Mapping[str, Data], *, calibration_ms: float | None = None,
                reference_ms: float | None = REVIEW_AVG_MS, title: str = "Delivery latency CDF") -> Figure:
    """Cumulative distribution of delivery latency (log x): one line per labelled run if ``data`` is a mapping,
    else one run with its p50/p90/p99 marked."""
    runs = dict(data) if isinstance(data, Mapping) else {"all deliveries": data}
    fig, ax = _single()
    lows = []
    for label, run in runs.items():
        lat = _latencies(run)["latency_ms"].to_numpy(dtype=float)
        _cdf(ax, lat, label=f"{label} (n={len(lat):,})")
        lows += [lat.min()] if len(lat) else []
    if len(runs) == 1 and len(lat):
        for p in (50, 90, 99):
            v = float(np.percentile(lat, p))
            ax.plot([v], [p / 100], "o", color="black", ms=4)
            ax.annotate(f"p{p} {v:.3g} ms", (v, p / 100), xytext=(6, -10), textcoords="offset points")
    _log(ax, "x")
    _references(ax, "x", reference_ms, _calibration(next(iter(runs.values())), calibration_ms), min(lows or [1]))
    ax.set(ylim=(0, 1.02), title=title, xlabel=LATENCY_LABEL, ylabel="share of deliveries ≤ x")
    ax.legend(loc="lower right")
    return fig


@_styled
def latency_histogram(data: Data, *, bins: int = 60, calibration_ms: float | None = None,
                      reference_ms: float | None = REVIEW_AVG_MS, title: str = "Delivery latency histogram") -> Figure:
    """Histogram of delivery latency on log-spaced bins, with the mean marked."""
    fig, ax = _single()
    lat = _latencies(data)["latency_ms"].to_numpy(dtype=float)
    lat = lat[lat > 0]
    if len(lat):
        edges = np.geomspace(lat.min(), lat.max() * 1.001, bins + 1) if lat.max() > lat.min() else bins
        ax.hist(lat, bins=edges, color=SEEN, alpha=0.8, label=f"deliveries (n={len(lat):,})")
        ax.axvline(lat.mean(), color="black", lw=1.2, label=f"mean {lat.mean():.3g} ms")
    _log(ax, "x")
    _references(ax, "x", reference_ms, _calibration(data, calibration_ms), lat.min() if len(lat) else 1.0)
    ax.set(title=title, xlabel=LATENCY_LABEL, ylabel="deliveries")
    ax.legend(loc="upper right")
    return fig


@_styled
def latency_vs_clients(runs: Sequence[tuple[int, Results]] | pd.DataFrame, *, calibration_ms: float | None = None,
                       reference_ms: float | None = REVIEW_AVG_MS,
                       title: str = "Delivery latency vs number of clients") -> Figure:
    """p50/p90/p99 latency against client count; ``runs`` is ``[(clients, Results), ...]`` or a DataFrame with
    columns ``clients, p50, p90, p99`` (and optionally ``calibration_ms``)."""
    if not isinstance(runs, pd.DataFrame):
        runs = pd.DataFrame([{"clients": n, **r.summary()["latency_ms"], "calibration_ms": r.calibration_ms}
                             for n, r in runs])
    df = runs.sort_values("clients")
    fig, ax = _single()
    for p, marker in (("p50", "o"), ("p90", "s"), ("p99", "^")):
        ax.plot(df["clients"], df[p], marker=marker, label=p)
    if calibration_ms is None and "calibration_ms" in df:
        calibration_ms = float(df["calibration_ms"].max())
    _log(ax, "y")
    _references(ax, "y", reference_ms, _calibration(None, calibration_ms), float(df["p50"].min()))
    ax.set(title=title, xlabel="simulated clients", ylabel=LATENCY_LABEL)
    ax.legend(loc="best")
    return fig


@_styled
def latency_by_instance(data: Data, *, calibration_ms: float | None = None, reference_ms: float | None = REVIEW_AVG_MS,
                        title: str = "Delivery latency: same instance vs cross-instance") -> Figure:
    """Left: CDF of deliveries whose sender and receiver share an instance vs not (every update goes through
    Redis pub/sub either way). Right: p50/p99 per receiving instance, split the same way."""
    d = _latencies(data)
    cross = d["cross_instance"].astype(bool)
    fig, axes = _figure(ncols=2, figsize=(11, 4.5))
    ax, bx = axes[0]
    for label, g, color in (("same instance", d[~cross], "#1f77b4"), ("cross-instance", d[cross], "#ff7f0e")):
        lat = g["latency_ms"].to_numpy(dtype=float)
        _cdf(ax, lat, color=color, label=f"{label}: p50 {np.median(lat) if len(lat) else np.nan:.3g} ms "
                                         f"(n={len(lat):,})")
    _log(ax, "x")
    _references(ax, "x", reference_ms, _calibration(data, calibration_ms), d["latency_ms"].min())
    ax.set(ylim=(0, 1.02), title="CDF", xlabel=LATENCY_LABEL, ylabel="share of deliveries ≤ x")
    ax.legend(loc="lower right")
    stats = d.groupby([d["receiver_instance"].astype(str), cross])["latency_ms"]
    table = pd.DataFrame({"p50": stats.median(), "p99": stats.quantile(0.99)}).reset_index()
    x = np.arange(len(table))
    bx.bar(x - 0.2, table["p50"], 0.4, label="p50", color="#1f77b4")
    bx.bar(x + 0.2, table["p99"], 0.4, label="p99", color="#d62728")
    bx.set_xticks(x, [f"i{r}\n{'cross' if c else 'same'}" for r, c in table.iloc[:, :2].itertuples(index=False)])
    _references(bx, "y", reference_ms, None)
    bx.set(title="per receiving instance", xlabel="receiving instance / sender on the same or another instance",
           ylabel="latency (ms, real)", ylim=(0, 1.3 * max([reference_ms or 0, *table["p99"]])))
    bx.legend(loc="upper center", ncols=3)
    fig.suptitle(title, fontweight="bold")
    return fig


@_styled
def latency_over_time(data: Data, *, bin_s: float | None = None, events: Mapping[str, float] | None = None,
                      reference_ms: float | None = REVIEW_AVG_MS, title: str = "Delivery latency over time") -> Figure:
    """p50/p99 latency per time bin (of the scheduled send time) above the deliveries per bin; ``events``
    (name -> design second) are marked, e.g. ``{"instance 1 killed": 40}``."""
    d = _latencies(data)
    if not bin_s:
        bin_s = max(float(d["t_sent"].max()) / 40, 1e-9) if len(d) else 1.0
    stats = d.groupby((d["t_sent"] // bin_s) * bin_s)["latency_ms"].agg(
        p50="median", p99=lambda s: s.quantile(0.99), n="size")
    fig, axes = _figure(nrows=2, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    ax, bx = axes[:, 0]
    ax.plot(stats.index + bin_s / 2, stats["p50"], marker=".", label="p50")
    ax.plot(stats.index + bin_s / 2, stats["p99"], marker=".", label="p99")
    _log(ax, "y")
    _references(ax, "y", reference_ms, None)
    for a in (ax, bx):
        _events(a, events)
    ax.set(title=title, ylabel="latency (ms, real; log scale)")
    ax.legend(loc="upper right")
    bx.bar(stats.index, stats["n"], width=bin_s * 0.9, align="edge", color="#7f7f7f")
    bx.set(xlabel=f"time the update was sent (design s; bins of {bin_s:.3g} s)", ylabel="deliveries")
    return fig


@_styled
def ordering_comparison(summaries: pd.DataFrame, by: str, *, metrics: Sequence[str] = (
        "out_of_order", "stale_dropped", "gap_buffered", "resynced", "diverged_clients"),
        title: str | None = None) -> Figure:
    """One panel per metric, grouped bars per ordering strategy for each value of ``by`` (a column of
    ``summaries``, e.g. ``jitter_ms`` or ``publish_mode``); the divergence panel marks each run converged (✓)
    or not (✗)."""
    strategies = [s for s in STRATEGY_COLORS if s in set(summaries["ordering"])]
    values = list(dict.fromkeys(summaries[by]))
    fig, axes = _figure(ncols=len(metrics), figsize=(2.9 * len(metrics) + 1, 4))
    width, x = 0.8 / max(1, len(strategies)), np.arange(len(values))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for k, strategy in enumerate(strategies):
            rows = summaries[summaries["ordering"] == strategy].set_index(by).reindex(values)
            pos = x + (k - (len(strategies) - 1) / 2) * width
            heights = rows[metric].fillna(0)
            ax.bar(pos, heights, width, color=STRATEGY_COLORS[strategy], label=strategy)
            if metric == "diverged_clients" and "converged" in rows:
                for p, ok, h in zip(pos, rows["converged"], heights, strict=True):
                    if pd.notna(ok):
                        ax.annotate("✓" if ok else "✗", (p, h), ha="center", va="bottom", fontsize=11,
                                    color="#2ca02c" if ok else "#d62728", fontweight="bold")
        ax.set_xticks(x, [str(v).replace(" ", "\n", 1) for v in values])  # "jitter\n5 ms": no overlap
        ax.set(title=metric.replace("_", " "), xlabel=by.replace("_", " "), ylabel="count")
        ax.margins(y=0.15)
    axes[0, 0].legend(loc="upper left")
    fig.suptitle(title or f"Ordering strategies vs {by.replace('_', ' ')}", fontweight="bold")
    return fig


@_styled
def detection_delays(delays: Results | pd.Series | pd.DataFrame, *, heartbeat_interval: float | None = None,
                     timeout: float | None = None, sweep_interval: float | None = None, by: str | None = None,
                     bins: int = 40, title: str = "Departure detection delay") -> Figure:
    """Histogram of design seconds from each real departure to the first ``presence.left`` anyone saw, with the
    window a silent departure must fall in (timeout − heartbeat … timeout + sweep) marked. ``delays``: Results
    (timing taken from its scenario), a Series, or a DataFrame with a ``detection_delay`` column and a ``by``
    column to stack (e.g. how the user left)."""
    if isinstance(delays, Results):
        sc = delays.scenario
        heartbeat_interval = heartbeat_interval or sc.heartbeat_interval
        timeout, sweep_interval = timeout or sc.presence_timeout, sweep_interval or sc.sweep_interval
        delays = delays.detection_delays()
    frame = delays.to_frame("detection_delay") if isinstance(delays, pd.Series) else delays
    groups = {str(k): g["detection_delay"].dropna().to_numpy(dtype=float) for k, g in frame.groupby(by)} if by \
        else {"departures": frame["detection_delay"].dropna().to_numpy(dtype=float)}
    fig, ax = _single()
    hi = max([(timeout or 0) + (sweep_interval or 0) + 5] + [float(v.max()) for v in groups.values() if len(v)])
    ax.hist(list(groups.values()), bins=np.linspace(0, hi, bins + 1), stacked=True,
            label=[f"{k} (n={len(v)})" for k, v in groups.items()])
    if heartbeat_interval and timeout and sweep_interval:
        ax.axvspan(max(0.0, timeout - heartbeat_interval), timeout + sweep_interval, color=BAND, alpha=0.35, lw=0,
                   label="window for a silent departure")
        ax.axvline(timeout - heartbeat_interval, color="#1f77b4", ls=":",
                   label=f"timeout − heartbeat = {timeout - heartbeat_interval:g} s")
        ax.axvline(timeout, color="#d62728", ls="--", label=f"timeout {timeout:g} s")
        ax.axvline(timeout + sweep_interval, color="#d62728", ls=":",
                   label=f"timeout + sweep = {timeout + sweep_interval:g} s")
    ax.set(title=title, xlabel="detection delay (design s)", ylabel="departures")
    ax.legend(loc="upper left")
    return fig


@_styled
def false_departures_by_model(df: pd.DataFrame, *, model: str = "model", value: str = "false_departures",
                              hue: str | None = None, ylabel: str | None = None, note: str | None = None,
                              title: str = "False departures (flapping) per heartbeat model") -> Figure:
    """Bars of ``value`` per heartbeat ``model``, grouped by ``hue`` (e.g. timeout, or live vs analytic);
    ``note`` (e.g. ``"heartbeat 30 s, timeout 60 s, sweep 5 s"``) is written in the corner."""
    models = list(dict.fromkeys(df[model]))
    hues = list(dict.fromkeys(df[hue])) if hue else [None]
    fig, ax = _single(figsize=(max(7.0, 1.6 * len(models) + 2), 4.5))
    width, x = 0.8 / len(hues), np.arange(len(models))
    for k, h in enumerate(hues):
        rows = (df[df[hue] == h] if hue else df).groupby(model, sort=False)[value].sum().reindex(models).fillna(0)
        bars = ax.bar(x + (k - (len(hues) - 1) / 2) * width, rows, width, label=None if hue is None else f"{hue}: {h}")
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)
    ax.set_xticks(x, models, rotation=15, ha="right")
    ax.set(title=title, xlabel="heartbeat model", ylabel=ylabel or value.replace("_", " "))
    if note:
        ax.text(0.99, 0.97, note, transform=ax.transAxes, ha="right", va="top", color=REF)
    if hue:
        ax.legend(loc="upper left")
    ax.margins(y=0.15)
    return fig


@_styled
def presence_timeline(results: Results, subjects: Sequence[str] | None = None, n: int = 6,
                      title: str = "Presence timeline (as seen by one observer)") -> Figure:
    """For a few users, when one observer saw them viewing their task (joined → left), how each ``left`` came
    (leave / disconnect / timeout) and their real departure (black ×) followed by a shaded timeout; minor grid
    lines every heartbeat interval. By default the users with false departures come first, then real ones."""
    p, sc = results.presence, results.scenario
    if subjects is None:
        left = p[p["kind"] == "left"]
        false = (left["t_actual"].isna() & (left["reason"] == "timeout")).groupby(left["subject"]).sum()
        score = (false * 10).add(left.groupby("subject")["t_actual"].count(), fill_value=0)
        subjects = list(score.sort_values(ascending=False, kind="stable").index[:n])
    fig, ax = _single(figsize=(9, 0.45 * len(subjects) + 2))
    bar = {"color": SEEN, "lw": 5, "alpha": 0.7, "solid_capstyle": "butt"}
    for row, subject in enumerate(subjects):
        rows = p[p["subject"] == subject]
        if rows.empty:
            continue
        seen = rows[rows["observer"] == rows["observer"].value_counts().index[0]].sort_values("t_observed")
        start = None
        for kind, t, reason in seen[["kind", "t_observed", "reason"]].itertuples(index=False):
            if kind == "joined":
                start = t if start is None else start
            else:
                ax.plot([0.0 if start is None else start, t], [row, row], **bar)
                ax.plot([t], [row], "|", ms=14, mew=2.5, color=REASON_COLORS.get(str(reason), "black"))
                start = None
        if start is not None:
            ax.plot([start, sc.duration], [row, row], **bar)
        for t in rows["t_actual"].dropna().unique():
            ax.fill_between([t, t + sc.presence_timeout], row - 0.3, row + 0.3, color=BAND, alpha=0.5, lw=0)
            ax.plot([t], [row], "x", color="black", ms=8, mew=2)
    handles = [Line2D([], [], label="seen viewing", **bar),
               Line2D([], [], color="black", marker="x", ls="", label="real departure"),
               Patch(color=BAND, alpha=0.5, label=f"timeout ({sc.presence_timeout:g} s) after it")]
    handles += [Line2D([], [], color=c, marker="|", ms=10, mew=2.5, ls="", label=f"left: {r}")
                for r, c in REASON_COLORS.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_yticks(range(len(subjects)), list(subjects))
    ax.xaxis.set_minor_locator(MultipleLocator(sc.heartbeat_interval))
    ax.grid(True, which="minor", axis="x", alpha=0.15)
    ax.set(title=title, xlim=(0, sc.duration * 1.02), ylim=(-0.7, len(subjects) - 0.3), ylabel="user",
           xlabel=f"time (design s; minor grid every heartbeat interval, {sc.heartbeat_interval:g} s)")
    return fig
