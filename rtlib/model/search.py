"""Sweep presence designs and configurations over a scenario; recommend the cheapest ones that meet a requirement.

A configuration is a whole :class:`PresenceConfig`: the numbers (heartbeat, timeout, sweep, leave grace) *and*
the design (presence mode, visibility beat), because for real browsers the design decides more than the numbers
(issue 21: with hidden Chrome tabs no timer-mode setting meets 60 s / 0.01 per hour, probe mode does). Every
mistake rate carries its count, its exposure (viewer-hours) and its exact Poisson 95 % interval, and
:func:`recommend` can judge a rate by its one-sided 95 % upper bound: a run with no mistake only shows
λ_M < 3 / viewer-hours. The text ``rtlib tune`` prints is :mod:`rtlib.model.tune`'s; populations of
several browser behaviours are :mod:`rtlib.model.population`'s.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import multiprocessing as mp
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from rtlib.clientmodels.heartbeat import parse_model
from rtlib.model.alternatives import with_visibility
from rtlib.model.engine import run_engine
from rtlib.model.fast import run_fast
from rtlib.model.metrics import detection_times, metrics, poisson_interval
from rtlib.model.scenario import ModelScenario, PresenceConfig
from rtlib.model.timelines import Timelines, beats_end, generate

__all__ = ["CONFIG_COLUMNS", "DEFAULT_GRID", "GRACES", "design_scenario", "grid", "pareto", "recommend", "simulate",
           "sweep", "sweep_many", "worst_case"]

#: The grid ``rtlib tune`` searches by default: every design (timer, timer + visibility beat, probe; probe with a
#: visibility beat is the same run as probe in the model, so it is left out) x heartbeat x timeout x leave grace,
#: sweep 5 s (the server's default): 84 configurations. Trimmed so that the default population (three parts, each
#: its own run) takes about 20 s on two shared cores: 5 s heartbeats cost twice 10 s and 45-60 s ones leave no
#: room under a 60 s p99, and the timeouts are 15 s apart where a 15 s grace lands on another timeout (the
#: expiries 20, 30, 35, 45, 60, 75, 90 and 105 s). Widen with ``rtlib tune --heartbeats/--timeouts/--graces``.
DEFAULT_GRID: dict[str, list[Any]] = {
    "heartbeat_interval": [10, 20, 30],
    "timeout": [20, 30, 45, 60, 90],
    "sweep_interval": [5],
    "leave_grace": [0, 15],
    "presence_mode": ["timer", "probe"],
    "visibility_beat": [False, True],
}
#: Leave graces to compare (Pusher holds a lost member about 3 s, Ably about 15 s).
GRACES: list[float] = [0, 5, 15, 30]
#: What identifies a configuration in a results table (the numbers and the design).
CONFIG_COLUMNS = ["presence_mode", "visibility_beat", "heartbeat_interval", "timeout", "sweep_interval",
                  "leave_grace"]


def simulate(config: PresenceConfig, scenario: ModelScenario, *, engine: str = "fast",
             timelines: Timelines | None = None, samples: bool = False) -> dict[str, Any]:
    """One configuration on one scenario: the metrics of :mod:`rtlib.model.metrics`, the mistake rate's
    two-sided exact 95 % interval (``mistakes_low95``, ``mistakes_high95``), and ``seconds`` of CPU.
    ``timelines``: reuse these (drawn by :func:`generate` for the same scenario and heartbeat interval).
    ``samples``: also ``td_samples``, every detection time (what a population pools)."""
    started = time.process_time()
    scenario = design_scenario(config, scenario)
    tl = timelines if timelines is not None else generate(scenario, config)
    run = {"fast": run_fast, "engine": run_engine}[engine]
    # The design is in the timelines (probe answers are drawn there, rtlib.model.alternatives); the executors'
    # presence machines only sweep, so they get the numbers in timer mode (a probe-mode machine would also
    # schedule probes the timelines already hold).
    out = run(tl, dataclasses.replace(config, mode="timer", visibility_beat=False), scenario)
    row = metrics(out, tl, scenario)
    vh = row["viewer_hours"]
    low, high = poisson_interval(row["mistakes"])
    row["mistakes_low95"], row["mistakes_high95"] = (low / vh, high / vh) if vh else (math.nan, math.nan)
    if samples:
        row["td_samples"] = detection_times(out, tl, scenario.horizon)
    row["seconds"] = time.process_time() - started
    return row


def grid(heartbeat_interval: Iterable[float] = (30,), timeout: Iterable[float] = (60,),
         sweep_interval: Iterable[float] = (5,), leave_grace: Iterable[float] = (0,),
         presence_mode: Iterable[str] = ("timer",), visibility_beat: Iterable[bool] = (False,), *,
         min_ratio: float = 1.0) -> list[PresenceConfig]:
    """Every combination with ``timeout >= min_ratio * heartbeat_interval`` (a timeout below the interval
    expires every entry between two beats: not a configuration anyone runs). Probe mode with a visibility beat
    is left out: the server's probes drive the beats, the model's probe clients send no visibility beat, so it
    would repeat the probe run."""
    return [PresenceConfig(h, t, s, g, m, v) for m, v, h, t, s, g in
            itertools.product(presence_mode, visibility_beat, heartbeat_interval, timeout, sweep_interval,
                              leave_grace)
            if t >= min_ratio * h and not (m == "probe" and v)]


def design_scenario(config: PresenceConfig, scenario: ModelScenario) -> ModelScenario:
    """The scenario ``config`` runs on: ``scenario`` under ``config``'s design (presence mode, visibility beat).
    A configuration of the default design (timer, no visibility beat) runs the scenario's own, which is how
    callers chose probe mode before designs were in :class:`PresenceConfig`; two different designs, one in
    each, are refused rather than guessed."""
    if config.mode == "timer" and not config.visibility_beat:
        return scenario
    if scenario.alternative not in ("timer", scenario.with_design(config).alternative):
        raise ValueError(f"the design is set twice: the scenario runs {scenario.alternative!r} and the "
                         f"configuration {config.mode!r} (visibility beat {config.visibility_beat}); set it in one "
                         f"place")
    return scenario.with_design(config)


def _check_designs(configs: list[PresenceConfig], scenario: ModelScenario) -> None:
    """A grid that searches designs runs on a timer-mode scenario (else its timer rows would run another
    design under the timer's name)."""
    if scenario.alternative != "timer" and any(c.mode != "timer" or c.visibility_beat for c in configs):
        raise ValueError(f"the design is set twice: the scenario runs {scenario.alternative!r} and the grid has "
                         f"presence modes or visibility beats of its own; set it in one place")


def _has_visibility(spec: str) -> bool:
    """Does a visibility beat change this client's beats? Only models with hide/show episodes (``chrome:``)
    have one; for the others a timer+visibility run is the timer run, and :func:`sweep` reuses it."""
    model = parse_model(spec)
    return with_visibility(model) != model


@dataclasses.dataclass(frozen=True)
class _Chunk:
    """Runs that share one draw of timelines: :func:`generate` once for (``scenario``, ``config``), then each run
    simulated on it. :func:`sweep` cuts a grid into these exactly where its serial walk would draw anew, so a
    chunk gives the same numbers in whichever process runs it."""

    scenario: ModelScenario  # the scenario and configuration the timelines are drawn for
    config: PresenceConfig
    runs: tuple[tuple[PresenceConfig, ModelScenario], ...]  # each run's configuration and design scenario

    @property
    def cost(self) -> float:
        """A guess of the work (beats drawn x runs), to start the longest chunks first; it changes no result."""
        return len(self.runs) * self.scenario.viewers * self.scenario.hours / self.config.heartbeat_interval


def _run_chunk(chunk: _Chunk, engine: str, samples: bool) -> list[dict[str, Any]]:
    """Draw ``chunk``'s timelines and simulate its runs (in a worker process, or in this one)."""
    tl = generate(chunk.scenario, chunk.config)
    return [simulate(cfg, sc, engine=engine, timelines=tl, samples=samples) for cfg, sc in chunk.runs]


def _plan(configs: list[PresenceConfig], scenario: ModelScenario
          ) -> tuple[list[tuple[dict[str, Any], int, bool]], list[_Chunk]]:
    """The serial walk of a grid without running it: per configuration its row's own columns, the index of the
    run that gives its metrics and whether it is that run's first row (a shared run's other rows get 0 CPU
    seconds); and the chunks, in order, whose runs concatenated are those runs. Timelines are drawn once per
    (design, heartbeat interval): probe-mode and visibility-beat clients send other beats than timer ones, so
    they are shared across designs only where the beats are the same (a visibility beat changes nothing for a
    client without hide/show episodes). Configurations with the same expiry (timeout + leave grace) share one
    run: the model's viewers leave silently, and for a silent departure a grace is exactly a longer timeout
    (``PresenceConfig.expiry``); a grace differs only for unclean disconnects, which the model does not draw."""
    _check_designs(configs, scenario)
    configs = sorted(configs, key=lambda c: (c.mode, c.visibility_beat, c.heartbeat_interval, c.expiry, c.timeout,
                                             c.sweep_interval, c.leave_grace))
    rows: list[tuple[dict[str, Any], int, bool]] = []
    chunks: list[tuple[ModelScenario, PresenceConfig, list[tuple[PresenceConfig, ModelScenario]]]] = []
    drawn: tuple[Any, ...] | None = None  # the timelines in hand: a serial walk keeps one draw at a time
    run_of: dict[tuple[Any, ...], int] = {}  # (design, interval, sweep, expiry) -> its run's index
    visibility: dict[str, bool] = {}
    for cfg in configs:
        sc = design_scenario(cfg, scenario)
        spec = sc.client_spec(cfg.heartbeat_interval)
        if sc.visibility_beat and spec not in visibility:
            visibility[spec] = _has_visibility(spec)
        design = (sc.presence_mode, sc.visibility_beat and visibility[spec])
        run_key = (*design, cfg.heartbeat_interval, cfg.sweep_interval, cfg.expiry)
        first = run_key not in run_of
        if first:
            key = (*design, spec, cfg.heartbeat_interval, beats_end(sc, cfg))  # probes follow the interval
            if key != drawn:
                chunks.append((sc, cfg, []))
                drawn = key
            chunks[-1][2].append((cfg, sc))
            run_of[run_key] = len(run_of)
        rows.append(({"presence_mode": sc.presence_mode, "visibility_beat": sc.visibility_beat,
                      "heartbeat_interval": cfg.heartbeat_interval, "timeout": cfg.timeout,
                      "sweep_interval": cfg.sweep_interval, "leave_grace": cfg.leave_grace, "model": scenario.client,
                      "client": spec, "alternative": sc.alternative}, run_of[run_key], first))
    return rows, [_Chunk(sc, cfg, tuple(runs)) for sc, cfg, runs in chunks]


def _execute(chunks: list[_Chunk], *, engine: str, samples: bool, workers: int, progress: bool,
             desc: str) -> list[list[dict[str, Any]]]:
    """Each chunk's runs, in the order of ``chunks``. ``workers`` > 1: on that many spawned processes (a fresh
    interpreter each: forking a Jupyter kernel, which has threads, is unsafe), longest chunks first so the last
    one to finish is short; the numbers are the same as in one process, only ``seconds`` (CPU) is the worker's."""
    from tqdm.auto import tqdm  # noqa: PLC0415 - the lab extra

    bar = tqdm(total=len(chunks), disable=not progress, desc=desc, leave=False)
    try:
        if workers <= 1 or len(chunks) <= 1:
            done = []
            for chunk in chunks:
                done.append(_run_chunk(chunk, engine, samples))
                bar.update()
            return done
        out: list[list[dict[str, Any]] | None] = [None] * len(chunks)
        order = sorted(range(len(chunks)), key=lambda i: -chunks[i].cost)
        with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_run_chunk, chunks[i], engine, samples): i for i in order}
            for future in as_completed(futures):
                out[futures[future]] = future.result()
                bar.update()
        return [runs for runs in out if runs is not None]
    finally:
        bar.close()


def sweep_many(configs: Iterable[PresenceConfig] | Mapping[str, Iterable[Any]], scenarios: Sequence[ModelScenario],
               *, progress: bool = True, engine: str = "fast", samples: bool = False, workers: int = 1) -> list[Any]:
    """:func:`sweep` of the same configurations over several scenarios (client models, designs), one DataFrame
    each, with the runs of all of them spread over ``workers`` processes (1: in this process). Seeded: the
    numbers do not depend on ``workers`` (``tests/model/test_sweep_workers.py``), only the CPU ``seconds``."""
    import pandas as pd  # noqa: PLC0415 - the lab extra

    if isinstance(configs, Mapping):
        configs = grid(**configs)
    configs = list(configs)
    plans = [_plan(configs, sc) for sc in scenarios]
    chunks = [chunk for _, sc_chunks in plans for chunk in sc_chunks]
    desc = scenarios[0].client.split(":")[0] if len(scenarios) == 1 else f"{len(scenarios)} scenarios"
    results = iter(_execute(chunks, engine=engine, samples=samples, workers=workers, progress=progress, desc=desc))
    frames = []
    for rows, sc_chunks in plans:
        runs = [run for _ in sc_chunks for run in next(results)]
        frames.append(pd.DataFrame([{**row, **runs[i]} if first else {**row, **runs[i], "seconds": 0.0}
                                    for row, i, first in rows]))
    return frames


def sweep(configs: Iterable[PresenceConfig] | Mapping[str, Iterable[Any]], scenario: ModelScenario, *,
          progress: bool = True, engine: str = "fast", samples: bool = False, workers: int = 1) -> Any:
    """A DataFrame, one row per configuration: the configuration (with its design), the client model and every
    metric. Timelines are drawn once per (design, heartbeat interval) and configurations with the same expiry
    share one run (:func:`_plan` says why). ``workers`` > 1 spreads the runs over that many processes, with the
    same numbers (:func:`sweep_many` sweeps several scenarios at once)."""
    return sweep_many(configs, [scenario], progress=progress, engine=engine, samples=samples, workers=workers)[0]


def pareto(df: Any, objectives: tuple[str, ...] = ("redis_cmds_per_s", "td_p99", "mistakes_per_hour")) -> Any:
    """The rows no other row beats on every objective (lower is better), sorted by the first; among equals the
    simpler setting first (no grace, no visibility beat)."""
    values = df[list(objectives)].to_numpy()
    keep = [not ((values <= v).all(axis=1) & (values < v).any(axis=1)).any() for v in values]
    ties = [c for c in ("leave_grace", "visibility_beat") if c in df]
    return df[keep].sort_values(list(objectives) + ties, kind="stable")


def recommend(results: Any = None, *, max_detection_p99: float, max_mistakes_per_hour: float,
              scenario: ModelScenario | None = None, configs: Any = None, cost: str = "redis_cmds_per_s",
              conservative: bool = False, progress: bool = False) -> Any:
    """The configurations meeting both requirements that are on the Pareto front of (cost, T_D p99, λ_M),
    cheapest first. ``results``: a :func:`sweep` DataFrame (or ``None``: sweep ``configs``, default
    :data:`DEFAULT_GRID`, over ``scenario``). ``conservative``: judge λ_M by its 95 % upper bound, not the
    point estimate (``rtlib tune`` does by default: a run with no mistake only shows λ_M < 3 / viewer-hours)."""
    if results is None:
        results = sweep(configs or DEFAULT_GRID, scenario or ModelScenario(), progress=progress)
    rate = "mistakes_upper95" if conservative else "mistakes_per_hour"
    ok = results[(results["td_p99"] <= max_detection_p99) & (results[rate] <= max_mistakes_per_hour)]
    return pareto(ok, (cost, "td_p99", rate)) if len(ok) else ok


#: Columns :func:`worst_case` takes from one client model's row (a count and its exposure belong together).
_OF_THE_WORST = ["mistakes", "viewer_hours", "mistakes_low95", "mistakes_high95"]


def worst_case(results: Any, by: str = "mistakes_per_hour") -> Any:
    """One row per configuration over several client models: the worst of each metric (the requirement must
    hold for every model), the highest cost, and which model was worst by ``by`` (its mistake count,
    viewer-hours and interval are the row's; ``td_n``: detections behind the worst T_D p99)."""
    import numpy as np  # noqa: PLC0415

    higher = ["td_p50", "td_p90", "td_p99", "td_max", "mistakes_per_hour", "mistakes_upper95", "tm_mean",
              "frames_per_s", "redis_cmds_per_s", "events_per_s", "bytes_per_s"]
    results = results.reset_index(drop=True)
    for col, default in (("leave_grace", 0.0), ("presence_mode", "timer"), ("visibility_beat", False)):
        if col not in results:
            results = results.assign(**{col: default})
    higher += [c for c in ("frames_out_per_s", "bytes_in_per_s", "bytes_out_per_s") if c in results]
    g = results.groupby(CONFIG_COLUMNS, sort=True)
    out = g[higher].max().join(g["p_a"].min())

    def worst_row(column: str) -> Any:
        return results.assign(_k=results[column].fillna(-np.inf)).groupby(CONFIG_COLUMNS, sort=True)["_k"].idxmax()

    taken = CONFIG_COLUMNS + ["model"] + [c for c in _OF_THE_WORST if c in results]
    worst = results.loc[worst_row(by), taken].set_index(CONFIG_COLUMNS)
    out = out.join(worst.rename(columns={"model": "worst_model"}))
    if "detected" in results:
        td = results.loc[worst_row("td_p99"), CONFIG_COLUMNS + ["detected"]].set_index(CONFIG_COLUMNS)
        out = out.join(td.rename(columns={"detected": "td_n"}))
    return out.reset_index()
