"""What ``rtlib tune`` prints: the recommendation, the evidence behind it, and the same for each design.

The search itself is :mod:`rtlib.model.search` (re-exported here: ``from rtlib.model.tune import sweep`` keeps
working); populations of browser behaviours are :mod:`rtlib.model.population`. Every mistake rate printed
carries its count of mistakes, its exposure in viewer-hours and its exact 95 % interval, because the rate a run
measures is a sample: 0 mistakes in 10,000 viewer-hours only says λ_M < 0.0003 per hour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rtlib.model.search import (
    CONFIG_COLUMNS,
    DEFAULT_GRID,
    GRACES,
    grid,
    pareto,
    recommend,
    simulate,
    sweep,
    sweep_many,
    worst_case,
)

__all__ = ["CONFIG_COLUMNS", "DEFAULT_GRID", "GRACES", "design_label", "grid", "pareto", "recommend", "report",
           "simulate", "sweep", "sweep_many", "worst_case"]


def design_label(row: Any) -> str:
    """``timer``, ``timer+visibility`` or ``probe``: the design of a results row."""
    return str(row.get("presence_mode", "timer")) + ("+visibility" if bool(row.get("visibility_beat")) else "")


def _rate(v: float) -> str:
    return "nan" if v != v else "0" if v == 0 else f"{v:.3g}"  # noqa: PLR0124 - nan check


def _n(v: float) -> str:
    return f"{v:,.0f}"


def _evidence(row: Any) -> str:
    """A rate with its sample: count, exposure, interval and the one-sided bound."""
    return (f"{_n(row['mistakes'])} mistakes in {_n(row['viewer_hours'])} viewer-hours = "
            f"{_rate(row['mistakes_per_hour'])}/viewer-h (95 % CI {_rate(row['mistakes_low95'])}-"
            f"{_rate(row['mistakes_high95'])}; one-sided 95 % upper bound {_rate(row['mistakes_upper95'])})")


def _setting(row: Any) -> str:
    grace = f"leave grace {row['leave_grace']:g} s" if row.get("leave_grace", 0) else "no leave grace"
    return (f"presence mode {design_label(row)}, heartbeat {row['heartbeat_interval']:g} s, timeout "
            f"{row['timeout']:g} s, sweep {row['sweep_interval']:g} s, {grace}")


_COLUMNS = {"design": "design", "heartbeat_interval": "hb s", "timeout": "timeout s", "sweep_interval": "sweep s",
            "leave_grace": "grace s", "td_p50": "T_D p50 s", "td_p99": "T_D p99 s", "td_n": "n T_D",
            "mistakes": "mistakes", "viewer_hours": "viewer-h", "mistakes_per_hour": "per viewer-h",
            "ci": "95% CI", "mistakes_upper95": "95% upper", "p_a": "P_A", "redis_cmds_per_s": "Redis cmds/s",
            "frames_per_s": "frames/s in"}


def _table(df: Any, first: Sequence[str] = ()) -> str:
    """Rows as text: the setting, T_D with its n, mistakes with their n, viewer-hours and intervals, cost."""
    shown = df.assign(design=[design_label(r) for _, r in df.iterrows()],
                      ci=[f"{_rate(a)}-{_rate(b)}" for a, b in zip(df["mistakes_low95"], df["mistakes_high95"],
                                                                    strict=True)])
    if "td_n" not in shown and "detected" in shown:
        shown = shown.assign(td_n=shown["detected"])
    cols = [*first, *[c for c in _COLUMNS if c in shown and c not in first]]
    if "sweep_interval" in shown and shown["sweep_interval"].nunique() == 1:
        cols.remove("sweep_interval")
    shown = shown[cols].rename(columns={**_COLUMNS, "part": "part", "share": "share"})
    fmt = {_COLUMNS[c]: _n for c in ("mistakes", "viewer_hours", "td_n", "redis_cmds_per_s", "frames_per_s")}
    fmt.update({_COLUMNS[c]: _rate for c in ("mistakes_per_hour", "mistakes_upper95")})
    if "share" in shown:
        fmt["share"] = lambda v: f"{v:.1%}"
    return shown.to_string(index=False, formatters=fmt, float_format=lambda v: f"{v:.4g}")


def _at(df: Any, row: Any) -> Any:
    sel = df
    for c in CONFIG_COLUMNS:
        if c in sel and c in row:
            sel = sel[sel[c] == row[c]]
    return sel


def report(results: Any, *, max_detection_p99: float, max_mistakes_per_hour: float, conservative: bool = False,
           reference: tuple[float, float, float] = (30.0, 60.0, 5.0), top: int = 8, parts: Any = None,
           preamble: Sequence[str] = ()) -> tuple[str, bool]:
    """The text ``rtlib tune`` prints: the requirement, the recommendation with its evidence, the best of each
    design, the Pareto front and the reference configuration (TaskFlow's 30 s / 60 s / 5 s, timer mode).
    ``results``: rows of one population (:func:`rtlib.model.population.combine`, with its ``parts`` for a
    breakdown per part) or of several client models (then the worst model per configuration counts).
    ``conservative``: judge λ_M by its one-sided 95 % upper bound. Returns (text, found)."""
    for col, default in (("leave_grace", 0.0), ("presence_mode", "timer"), ("visibility_beat", False)):
        if col not in results:
            results = results.assign(**{col: default})
    rate = "mistakes_upper95" if conservative else "mistakes_per_hour"
    several = parts is None and results["model"].nunique() > 1
    table = worst_case(results, by=rate) if several else results
    if "mistakes_low95" not in table:  # rows from before intervals were kept: none to print
        table = table.assign(mistakes_low95=math.nan, mistakes_high95=math.nan)
    rec = recommend(table, max_detection_p99=max_detection_p99, max_mistakes_per_hour=max_mistakes_per_hour,
                    conservative=conservative)
    judged = "the one-sided 95 % upper bound of the mistake rate" if conservative else \
        "the measured mistake rate (the point estimate, not its 95 % upper bound)"
    whom = "for the population above" if parts is not None else \
        f"for every client model: {', '.join(sorted(results['model'].unique()))}"
    lines = [*preamble, f"requirement: T_D p99 <= {max_detection_p99:g} s and {judged} <= "
             f"{max_mistakes_per_hour:g} per viewer-hour, {whom}"]
    if len(rec):
        best = rec.iloc[0]
        lines += [f"recommended: {_setting(best)}",
                  f"  (the cheapest that meets it: {best['redis_cmds_per_s']:,.0f} Redis commands/s per 10,000 "
                  f"present viewers)",
                  f"  mistakes: {_evidence(best)}",
                  f"  detection: T_D p50 {best['td_p50']:.1f} s, p99 {best['td_p99']:.1f} s, of "
                  f"{_n(best.get('td_n', best.get('detected', math.nan)))} detected silent departures"]
        if parts is not None:
            lines += ["  by part:", _indent(_table(_at(parts, best), ("part", "share")))]
    else:
        lines.append("no configuration in the grid meets it.")
    lines += ["", "best of each design (cheapest that meets it; else the fewest mistakes within the T_D p99 "
              "limit, else the fewest mistakes):"]
    designs = table.assign(_design=[design_label(r) for _, r in table.iterrows()])
    for name, sub in designs.groupby("_design", sort=True):
        meets = recommend(sub, max_detection_p99=max_detection_p99, max_mistakes_per_hour=max_mistakes_per_hour,
                          conservative=conservative)
        if len(meets):
            row, verdict = meets.iloc[0], "meets it"
        else:
            fast_enough = sub[sub["td_p99"] <= max_detection_p99]
            pool = fast_enough if len(fast_enough) else sub
            row = pool.sort_values([rate, "td_p99", "redis_cmds_per_s"]).iloc[0]
            verdict = "does NOT meet it; closest" + ("" if len(fast_enough) else " (none within the T_D limit)")
        grace = f" + grace {row['leave_grace']:g} s" if row.get("leave_grace") else ""
        lines.append(f"  {name:<17} {verdict}: {row['heartbeat_interval']:g} s / {row['timeout']:g} s{grace}: "
                     f"T_D p99 {row['td_p99']:.1f} s; {_evidence(row)}")
    if len(rec):
        lines += ["", "configurations that meet it, on the Pareto front of cost, T_D p99 and mistakes "
                  "(cost per 10,000 present viewers):", _table(rec.head(top))]
    else:
        fast_enough = table[table["td_p99"] <= max_detection_p99]
        pool = fast_enough if len(fast_enough) else table
        lines += ["", "the fewest mistakes" + (" within the T_D p99 limit" if len(fast_enough) else "") + ":",
                  _table(pool.sort_values([rate, "td_p99"]).head(top))]
    h, t, s = reference
    ref = table[(table["heartbeat_interval"] == h) & (table["timeout"] == t) & (table["sweep_interval"] == s)
                & (table["leave_grace"] == 0) & (table["presence_mode"] == "timer") & ~table["visibility_beat"]]
    if len(ref):
        lines += ["", f"for reference, {h:g} s / {t:g} s / sweep {s:g} s, timer mode:", _table(ref)]
        if parts is not None:
            lines += ["  by part:", _indent(_table(_at(parts, ref.iloc[0]), ("part", "share")))]
    notes = ["mistakes: false presence.left per present viewer-hour; 95% CI: exact (Garwood) Poisson interval of "
             "the count over the viewer-hours; n T_D: detected silent departures behind the T_D quantiles",
             "Redis cmds/s and frames/s: per 10,000 present viewers, counted over every frame of the run (not a "
             "rare-event estimate: no interval)"]
    if table["leave_grace"].nunique() > 1:
        notes.append("a leave grace g acts here as a timeout longer by g (the model's departures are silent; a "
                     "grace differs only for unclean disconnects), so grace rows repeat a timeout's numbers")
    lines += ["", *("note: " + n for n in notes)]
    return "\n".join(lines), bool(len(rec))


def _indent(text: str, by: str = "    ") -> str:
    return "\n".join(by + line for line in text.splitlines())
