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
from rtlib.model.timelines import generate

__all__ = ["DEFAULT_GRID", "grid", "pareto", "recommend", "simulate", "sweep"]

#: The grid ``rtlib tune`` searches: heartbeat interval x timeout (sweep 5 s, the server's default).
DEFAULT_GRID: dict[str, list[float]] = {
    "heartbeat_interval": [5, 10, 15, 20, 25, 30, 45, 60],
    "timeout": [15, 20, 30, 40, 45, 50, 60, 70, 75, 90, 100, 120, 150, 180],
    "sweep_interval": [5],
}


def simulate(config: PresenceConfig, scenario: ModelScenario, *, engine: str = "fast") -> dict[str, Any]:
    """One configuration on one scenario: the metrics of :mod:`rtlib.model.metrics`, plus ``seconds`` of CPU."""
    started = time.process_time()
    tl = generate(scenario, config)
    run = {"fast": run_fast, "engine": run_engine}[engine]
    out = run(tl, config, scenario)
    row = metrics(out, tl, scenario)
    row["seconds"] = time.process_time() - started
    return row


def grid(heartbeat_interval: Iterable[float] = (30,), timeout: Iterable[float] = (60,),
         sweep_interval: Iterable[float] = (5,), *, min_ratio: float = 1.0) -> list[PresenceConfig]:
    """Every combination with ``timeout >= min_ratio * heartbeat_interval`` (a timeout below the interval
    expires every entry between two beats: not a configuration anyone runs)."""
    return [PresenceConfig(h, t, s) for h, t, s in itertools.product(heartbeat_interval, timeout, sweep_interval)
            if t >= min_ratio * h]


def sweep(configs: Iterable[PresenceConfig] | Mapping[str, Iterable[float]], scenario: ModelScenario, *,
          progress: bool = True, engine: str = "fast") -> Any:
    """A DataFrame, one row per configuration: the configuration, the client model and every metric."""
    import pandas as pd  # noqa: PLC0415 - the lab extra
    from tqdm.auto import tqdm  # noqa: PLC0415

    if isinstance(configs, Mapping):
        configs = grid(**configs)
    configs = list(configs)
    rows = []
    for cfg in tqdm(configs, disable=not progress, desc=scenario.client_spec(0).split(":")[0], leave=False):
        row = {"heartbeat_interval": cfg.heartbeat_interval, "timeout": cfg.timeout,
               "sweep_interval": cfg.sweep_interval, "client": scenario.client_spec(cfg.heartbeat_interval)}
        row.update(simulate(cfg, scenario, engine=engine))
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
