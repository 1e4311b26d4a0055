"""Sweep presence configurations over a scenario; recommend the cheapest ones that meet a requirement."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping
from typing import Any

from rtlib.model.engine import run_engine
from rtlib.model.fast import run_fast
from rtlib.model.metrics import metrics
from rtlib.model.scenario import ModelScenario, PresenceConfig
from rtlib.model.timelines import Timelines, beats_end, generate

__all__ = ["CONFIG_COLUMNS", "DEFAULT_GRID", "GRACES", "grid", "pareto", "recommend", "report", "simulate", "sweep",
           "worst_case"]

#: The grid ``rtlib tune`` searches: heartbeat interval x timeout (sweep 5 s, the server's default; no leave
#: grace: a grace is a longer timeout for the observers, see :data:`GRACES` for the grid that varies it).
DEFAULT_GRID: dict[str, list[float]] = {
    "heartbeat_interval": [5, 10, 15, 20, 25, 30, 45, 60],
    "timeout": [15, 20, 30, 40, 45, 50, 60, 70, 75, 90, 100, 120, 150, 180],
    "sweep_interval": [5],
}
#: Leave graces to compare (Pusher holds a lost member about 3 s, Ably about 15 s).
GRACES: list[float] = [0, 5, 15, 30]


def simulate(config: PresenceConfig, scenario: ModelScenario, *, engine: str = "fast",
             timelines: Timelines | None = None) -> dict[str, Any]:
    """One configuration on one scenario: the metrics of :mod:`rtlib.model.metrics`, plus ``seconds`` of CPU.
    ``timelines``: reuse these (drawn by :func:`generate` for the same scenario and heartbeat interval)."""
    started = time.process_time()
    tl = timelines if timelines is not None else generate(scenario, config)
    run = {"fast": run_fast, "engine": run_engine}[engine]
    out = run(tl, config, scenario)
    row = metrics(out, tl, scenario)
    row["seconds"] = time.process_time() - started
    return row


def grid(heartbeat_interval: Iterable[float] = (30,), timeout: Iterable[float] = (60,),
         sweep_interval: Iterable[float] = (5,), leave_grace: Iterable[float] = (0,), *,
         min_ratio: float = 1.0) -> list[PresenceConfig]:
    """Every combination with ``timeout >= min_ratio * heartbeat_interval`` (a timeout below the interval
    expires every entry between two beats: not a configuration anyone runs)."""
    return [PresenceConfig(h, t, s, g) for h, t, s, g in
            itertools.product(heartbeat_interval, timeout, sweep_interval, leave_grace) if t >= min_ratio * h]


def sweep(configs: Iterable[PresenceConfig] | Mapping[str, Iterable[float]], scenario: ModelScenario, *,
          progress: bool = True, engine: str = "fast") -> Any:
    """A DataFrame, one row per configuration: the configuration, the client model and every metric."""
    import pandas as pd  # noqa: PLC0415 - the lab extra
    from tqdm.auto import tqdm  # noqa: PLC0415

    if isinstance(configs, Mapping):
        configs = grid(**configs)
    configs = sorted(configs, key=lambda c: (c.heartbeat_interval, c.timeout, c.sweep_interval, c.leave_grace))
    rows = []
    # One client model's draws serve every timeout, sweep and grace of one interval.
    cache: dict[tuple[str, float, float], Timelines] = {}
    for cfg in tqdm(configs, disable=not progress, desc=scenario.client.split(":")[0], leave=False):
        spec = scenario.client_spec(cfg.heartbeat_interval)
        key = (spec, cfg.heartbeat_interval, beats_end(scenario, cfg))  # probes follow the interval, not the spec
        if key not in cache:
            cache.clear()
            cache[key] = generate(scenario, cfg)
        row = {"heartbeat_interval": cfg.heartbeat_interval, "timeout": cfg.timeout,
               "sweep_interval": cfg.sweep_interval, "leave_grace": cfg.leave_grace, "model": scenario.client,
               "client": spec, "alternative": scenario.alternative}
        row.update(simulate(cfg, scenario, engine=engine, timelines=cache[key]))
        rows.append(row)
    return pd.DataFrame(rows)


def pareto(df: Any, objectives: tuple[str, ...] = ("redis_cmds_per_s", "td_p99", "mistakes_per_hour")) -> Any:
    """The rows no other row beats on every objective (lower is better), sorted by the first."""
    values = df[list(objectives)].to_numpy()
    keep = [not ((values <= v).all(axis=1) & (values < v).any(axis=1)).any() for v in values]
    return df[keep].sort_values(list(objectives))


def recommend(results: Any = None, *, max_detection_p99: float, max_mistakes_per_hour: float,
              scenario: ModelScenario | None = None, configs: Any = None, cost: str = "redis_cmds_per_s",
              conservative: bool = False, progress: bool = False) -> Any:
    """The configurations meeting both requirements that are on the Pareto front of (cost, T_D p99, λ_M),
    cheapest first. ``results``: a :func:`sweep` DataFrame (or ``None``: sweep ``configs``, default
    :data:`DEFAULT_GRID`, over ``scenario``). ``conservative``: judge λ_M by its 95 % upper bound, not the
    point estimate (a run with no mistake only shows λ_M < 3 / viewer-hours)."""
    if results is None:
        results = sweep(configs or DEFAULT_GRID, scenario or ModelScenario(), progress=progress)
    rate = "mistakes_upper95" if conservative else "mistakes_per_hour"
    ok = results[(results["td_p99"] <= max_detection_p99) & (results[rate] <= max_mistakes_per_hour)]
    return pareto(ok, (cost, "td_p99", rate)) if len(ok) else ok


CONFIG_COLUMNS = ["heartbeat_interval", "timeout", "sweep_interval", "leave_grace"]


def worst_case(results: Any) -> Any:
    """One row per configuration over several client models: the worst of each metric (the requirement must
    hold for every model), the highest cost, and which model was worst for mistakes."""
    higher = ["td_p50", "td_p90", "td_p99", "td_max", "mistakes_per_hour", "mistakes_upper95", "tm_mean",
              "frames_per_s", "redis_cmds_per_s", "events_per_s", "bytes_per_s"]
    results = results.reset_index(drop=True)
    if "leave_grace" not in results:
        results = results.assign(leave_grace=0.0)
    higher += [c for c in ("frames_out_per_s", "bytes_in_per_s", "bytes_out_per_s") if c in results]
    g = results.groupby(CONFIG_COLUMNS, sort=True)
    out = g[higher].max().join(g["p_a"].min())
    worst = results.loc[g["mistakes_per_hour"].idxmax(), CONFIG_COLUMNS + ["model"]].set_index(CONFIG_COLUMNS)
    return out.join(worst.rename(columns={"model": "worst_model"})).reset_index()


def report(results: Any, *, max_detection_p99: float, max_mistakes_per_hour: float, conservative: bool = False,
           reference: tuple[float, float, float] = (30.0, 60.0, 5.0), top: int = 8) -> tuple[str, bool]:
    """The text ``rtlib tune`` prints: the recommendation first, then the numbers behind it and the
    reference configuration (TaskFlow's 30 s / 60 s / 5 s). Returns (text, found)."""
    table = worst_case(results) if results["model"].nunique() > 1 else results
    rec = recommend(table, max_detection_p99=max_detection_p99, max_mistakes_per_hour=max_mistakes_per_hour,
                    conservative=conservative)
    cols = {"heartbeat_interval": "heartbeat s", "timeout": "timeout s", "sweep_interval": "sweep s",
            "leave_grace": "grace s",
            "td_p50": "T_D p50 s", "td_p99": "T_D p99 s", "mistakes_per_hour": "mistakes/viewer-h",
            "mistakes_upper95": "(95% upper)", "tm_mean": "T_M mean s", "p_a": "P_A",
            "frames_per_s": "frames/s", "redis_cmds_per_s": "Redis cmds/s", "bytes_per_s": "bytes/s"}

    def fmt(df: Any) -> str:
        shown = df[[c for c in cols if c in df]].rename(columns=cols)
        return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")

    rate = "the 95 % upper bound of " if conservative else ""
    lines = [f"requirement: T_D p99 <= {max_detection_p99:g} s and {rate}mistakes <= {max_mistakes_per_hour:g} "
             f"per viewer-hour, for every client model: {', '.join(sorted(results['model'].unique()))}"]
    if len(rec):
        best = rec.iloc[0]
        grace = f", leave grace {best['leave_grace']:g} s" if best.get("leave_grace", 0) else ""
        lines.append(f"recommended: heartbeat {best['heartbeat_interval']:g} s, timeout {best['timeout']:g} s, "
                     f"sweep {best['sweep_interval']:g} s{grace} (cheapest that meets it; "
                     f"{best['redis_cmds_per_s']:.0f} Redis commands/s per 10,000 viewers)")
        lines += ["", "configurations that meet it, on the Pareto front of cost, T_D p99 and mistakes "
                  "(cost per 10,000 present viewers):", fmt(rec.head(top))]
    else:
        lines.append("no configuration in the grid meets it; the closest by T_D p99 among the fewest mistakes:")
        lines.append(fmt(table.sort_values(["mistakes_per_hour", "td_p99"]).head(top)))
    h, t, s = reference
    ref = table[(table["heartbeat_interval"] == h) & (table["timeout"] == t) & (table["sweep_interval"] == s)
              & (table["leave_grace"] == 0 if "leave_grace" in table else True)]
    if len(ref):
        lines += ["", f"for reference, {h:g} s / {t:g} s / sweep {s:g} s:", fmt(ref)]
    return "\n".join(lines), bool(len(rec))
