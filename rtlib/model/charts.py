"""Charts of model sweeps (matplotlib, the lab extra): heatmaps over (heartbeat, timeout), the cost curve, the
Pareto front and model-vs-live validation. Each returns its Figure."""

from __future__ import annotations

from typing import Any

__all__ = ["alternatives", "cost_curve", "heatmaps", "pareto_front", "validation"]


def heatmaps(results: Any, value: str, *, label: str, log: bool = False, fmt: str = "{:.2g}",
             title: str | None = None, vmax: float | None = None) -> Any:
    """One heatmap of ``value`` over (heartbeat interval, timeout) per client model (``model`` column)."""
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from matplotlib.colors import LogNorm, Normalize  # noqa: PLC0415

    models = list(dict.fromkeys(results["label"] if "label" in results else results["model"]))
    key = "label" if "label" in results else "model"
    cols = min(4, len(models))
    rows = -(-len(models) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols + 0.8, 2.7 * rows + 0.6), squeeze=False,
                             constrained_layout=True)
    data = results[value].replace([np.inf], np.nan)
    top = vmax if vmax is not None else float(np.nanmax(data)) if data.notna().any() else 1.0
    if log:
        positive = data[data > 0]
        norm = LogNorm(vmin=float(positive.min()) if len(positive) else 1e-3, vmax=max(top, 1e-3))
    else:
        norm = Normalize(vmin=float(np.nanmin(data)) if data.notna().any() else 0.0, vmax=top)
    image = None
    for ax, m in zip(axes.flat, models, strict=False):
        sub = results[results[key] == m].pivot_table(index="timeout", columns="heartbeat_interval", values=value)
        shown = sub.to_numpy(dtype=float)
        masked = np.ma.masked_invalid(np.where(shown <= 0, np.nan, shown) if log else shown)
        image = ax.imshow(masked, origin="lower", aspect="auto", cmap="viridis_r", norm=norm)
        ax.set_facecolor("#e8f5e9" if log else "white")  # log scale: zero is drawn as the pale background
        ax.set_xticks(range(len(sub.columns)), [f"{c:g}" for c in sub.columns], fontsize=7)
        ax.set_yticks(range(len(sub.index)), [f"{i:g}" for i in sub.index], fontsize=7)
        for (i, j), v in np.ndenumerate(shown):
            if np.isfinite(v):
                ax.text(j, i, "0" if log and v == 0 else fmt.format(v), ha="center", va="center", fontsize=5.5,
                        color="black" if (log and v == 0) else "white")
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("heartbeat interval (s)", fontsize=8)
        ax.set_ylabel("timeout (s)", fontsize=8)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label=label)
    fig.suptitle(title or label, fontsize=11)
    return fig


def cost_curve(results: Any, *, title: str = "Cost per 10,000 viewers vs heartbeat interval") -> Any:
    """Presence frames/s, Redis commands/s and bytes/s per 10,000 present viewers, by heartbeat interval."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    g = results.groupby("heartbeat_interval")[["frames_per_s", "redis_cmds_per_s", "bytes_per_s"]].median()
    fig, ax = plt.subplots(figsize=(6.5, 3.6), constrained_layout=True)
    ax.plot(g.index, g["frames_per_s"], "o-", label="heartbeat frames/s in")
    ax.plot(g.index, g["redis_cmds_per_s"], "s--", label="Redis commands/s")
    ax.set_xlabel("heartbeat interval (s)")
    ax.set_ylabel("per second, per 10,000 viewers")
    ax2 = ax.twinx()
    ax2.plot(g.index, g["bytes_per_s"] / 1024, "^:", color="grey", label="KiB/s (frames + fanned-out events)")
    ax2.set_ylabel("KiB/s")
    lines = ax.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8)
    ax.set_title(title)
    return fig


def pareto_front(table: Any, front: Any, *, max_detection_p99: float, max_mistakes_per_hour: float,
                 title: str = "Every configuration: cost vs detection time (Pareto front ringed)") -> Any:
    """Configurations as points (x: Redis commands/s, y: T_D p99), coloured by whether they meet the
    requirement, the front ringed and labelled."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    ok = (table["td_p99"] <= max_detection_p99) & (table["mistakes_per_hour"] <= max_mistakes_per_hour)
    ax.scatter(table.loc[~ok, "redis_cmds_per_s"], table.loc[~ok, "td_p99"], s=14, c="#bbbbbb",
               label="misses the requirement")
    ax.scatter(table.loc[ok, "redis_cmds_per_s"], table.loc[ok, "td_p99"], s=18, c="#2ca02c", label="meets it")
    ax.scatter(front["redis_cmds_per_s"], front["td_p99"], s=90, facecolors="none", edgecolors="black",
               label="recommended (Pareto front)")
    for _, r in front.iterrows():
        ax.annotate(f"{r['heartbeat_interval']:g}/{r['timeout']:g}", (r["redis_cmds_per_s"], r["td_p99"]),
                    fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.axhline(max_detection_p99, color="#d62728", ls=":", lw=1, label=f"T_D p99 = {max_detection_p99:g} s")
    ax.set_xscale("log")
    ax.set_xlabel("Redis commands/s per 10,000 viewers (log)")
    ax.set_ylabel("T_D p99 (s), worst client model")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    return fig


def validation(rows: Any, *, title: str = "Model vs live: detection time and mistakes") -> Any:
    """Left: T_D quantiles, live vs model, per case. Right: mistakes, the live count's 95 % interval and the
    model's count."""
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    x = np.arange(len(rows))
    for k, (q, marker) in enumerate((("td_p50", "o"), ("td_p90", "s"), ("td_p99", "^"))):
        a.scatter(x - 0.15 + 0.15 * k, rows[f"live_{q}"], marker=marker, facecolors="none", edgecolors="C0",
                  label=f"live {q[3:]}")
        a.scatter(x - 0.15 + 0.15 * k, rows[f"model_{q}"], marker=marker, s=12, c="C1", label=f"model {q[3:]}")
    a.set_xticks(x, rows["case"], rotation=15, fontsize=8)
    a.set_ylabel("T_D (design s)")
    a.legend(fontsize=7, ncol=2)
    a.set_title("detection time quantiles (5 % band = criterion)", fontsize=9)
    low = rows["live_mistakes"] - rows["live_mistakes_low95"]
    high = rows["live_mistakes_high95"] - rows["live_mistakes"]
    b.errorbar(x - 0.08, rows["live_mistakes"], yerr=[low, high], fmt="o", color="C0", capsize=4,
               label="live (95 % Poisson interval)")
    b.scatter(x + 0.08, rows["model_mistakes"], color="C1", label="model", zorder=3)
    b.set_xticks(x, rows["case"], rotation=15, fontsize=8)
    b.set_ylabel("mistakes (false departures) in the run")
    b.legend(fontsize=7)
    b.set_title("mistakes", fontsize=9)
    fig.suptitle(title, fontsize=11)
    return fig


def alternatives(table: Any, *, title: str = "Presence alternatives side by side") -> Any:
    """Per client model (x) and alternative (bars): λ_M (left, symlog; 0 = no mistake in the run) and T_D p99
    (right). ``table``: one row per (``alternative``, ``label``) with ``mistakes_per_hour`` and ``td_p99``."""
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    alts = list(dict.fromkeys(table["alternative"]))
    models = list(dict.fromkeys(table["label"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    width = 0.8 / max(1, len(alts))
    x = np.arange(len(models))
    for ax, value, label in ((axes[0], "mistakes_per_hour", "false departures per viewer-hour (λ_M)"),
                             (axes[1], "td_p99", "T_D p99 (s)")):
        for k, alt in enumerate(alts):
            sub = table[table["alternative"] == alt].set_index("label").reindex(models)
            ax.bar(x - 0.4 + width * (k + 0.5), sub[value].to_numpy(dtype=float), width, label=alt)
        ax.set_xticks(x, models, rotation=10, fontsize=8)
        ax.set_ylabel(label)
        if value == "mistakes_per_hour":
            ax.set_yscale("symlog", linthresh=0.01)
            ax.axhline(0.01, color="#d62728", ls=":", lw=1)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return fig
