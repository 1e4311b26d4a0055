"""A population of browser behaviours: the viewers ``rtlib tune`` answers for, as shares with their sources.

A presence setting is judged on real browsers, which are a mix: visible tabs, hidden tabs whose timers Chrome
throttles, tabs that Energy Saver freezes. A :class:`Population` is ``[(share, client spec), ...]``; each part
runs as its own :class:`~rtlib.model.scenario.ModelScenario` with ``share x viewers`` viewers (so the parts'
viewer-hours are in the population's proportions) and :func:`combine` pools them: mistakes per viewer-hour are
the summed count over the summed viewer-hours, with the exact Poisson interval of that count; T_D quantiles
come from the pooled detection times (quantiles do not average); costs are weighted by viewer-hours.

**Frozen, cached and discarded pages** (the ``frozen:``, ``bfcache:`` and ``discard:`` specs). Recorded in
Chromium (``bench/results/page_lifecycle.md``, :mod:`rtlib.clientmodels.lifecycle`): a frozen page runs no timer
and no message handler, so it sends no heartbeat and answers no probe (presence modes alike) while its socket stays
open (the browser answers protocol pings); on resume Chromium closes the socket and the page reconnects and
re-joins within about 0.4 s. A page put in the back/forward cache closes its socket on ``pagehide`` and
reconnects when restored; a discarded page's socket is closed at once and the page does not come back. Each is
a page its user cannot see and that cannot show what the others do, so we count it as **not viewing**
(docs/protocol.md §9): a ``presence.left`` meanwhile is a correct detection (``absences_detected``), not a
mistake, and the re-join ends the absence. In the population engine all three are the suspended-page rule of
:class:`rtlib.clientmodels.heartbeat.IOSBackground` with suspension at once (``KIND:{hb}:U:A`` is
``ios:{hb}:U:A:0.001``, present Exp(U), away Exp(A)): what they change is when the absence is announced (a
close is announced at once, a freeze at the timeout), not how many mistakes a design makes; the per-page
event sequence, close and re-join included, is :func:`rtlib.clientmodels.lifecycle.observed`. Not in the
engine: the ``presence.left``/``presence.joined`` pair at the end of a freeze shorter than the timeout (Chromium
closes the socket on resume): an absence announced as it ends, which adds two events per such freeze and no
mistake.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rtlib.clientmodels.heartbeat import parse_model
from rtlib.model.metrics import poisson_interval, poisson_upper
from rtlib.model.scenario import ModelScenario, PresenceConfig
from rtlib.model.search import CONFIG_COLUMNS, sweep_many

__all__ = ["AWAY_DEFAULTS", "AWAY_RULES", "BACKGROUNDED", "DEFAULT_POPULATION", "FROZEN_OF_BACKGROUNDED", "Part",
           "Population", "combine", "expand", "label_of", "parse_population", "sweep_population"]

#: Share of sessions that are backgrounded tabs: git-city #81 estimates 30-40 %; the midpoint.
BACKGROUNDED = 0.35
#: Share of background tabs that Chrome's Energy Saver freezes ("aims to freeze about 10 %").
FROZEN_OF_BACKGROUNDED = 0.10
#: Frozen episodes: the hidden-tab model's assumed episodes (visible Exp(600 s), hidden Exp(300 s)) under Energy
#: Saver's 5 minutes: a hide outlasts them with probability 1/e, i.e. once per 900 e s ~ 2450 s of page life,
#: and the frozen rest of it is again Exp(300 s); so unfrozen Exp(900 e - 300 ~ 2150 s), frozen Exp(300 s).
FROZEN_DEFAULTS = (2150.0, 300.0)
#: (present, away) means of each away kind, seconds, and where they come from.
AWAY_DEFAULTS: dict[str, tuple[float, float, str]] = {
    "frozen": (*FROZEN_DEFAULTS, "unfrozen Exp(2150 s) / frozen Exp(300 s) (Energy Saver's 5 min under the "
                                 "hidden-tab model's assumed episodes)"),
    # Assumptions, stated: a viewer who goes back and forth every ~10 min and returns after about a minute.
    "bfcache": (600.0, 60.0, "on the page Exp(600 s) / away in the back/forward cache Exp(60 s) (assumed)"),
    # Discarded: away until the user reloads the tab, typically much later (assumed Exp(1 h)).
    "discard": (3600.0, 3600.0, "on the page Exp(3600 s) / discarded until a reload Exp(3600 s) (assumed)"),
}
AWAY_RULES = {
    "frozen": "frozen: no timer and no message handler runs (recorded: no beat, no probe answer; the socket stays "
              "open, the browser answers protocol pings); on resume Chromium closes the socket and the page "
              "re-joins in ~0.4 s",
    "bfcache": "bfcache: the board closes its socket on pagehide (presence.left at once) and re-joins when "
               "restored (recorded)",
    "discard": "discard: the socket is closed at once (recorded: 1001 close frame, presence.left 'disconnect' "
               "within 0.05 s); the page does not come back, a reload joins anew",
}
_AWAY_NOTE = ("{kinds}: counted as not viewing (docs/protocol.md §9), so being shown gone then is a correct "
              "detection, not a mistake; modelled as present/away episodes, suspended at once")


def expand(spec: str) -> str:
    """The :func:`rtlib.clientmodels.heartbeat.parse_model` spec of a part: ``frozen:{hb}[:PRESENT[:AWAY]]``,
    ``bfcache:...`` and ``discard:...`` become the suspended-page model (see the module docstring);
    ``lossy:X:frozen:...`` too; others unchanged."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "lossy":
        loss, _, base = rest.partition(":")
        return f"lossy:{loss}:{expand(base)}"
    if kind not in AWAY_DEFAULTS:
        return spec.strip()
    args = rest.split(":") if rest else []
    if not 1 <= len(args) <= 3:
        raise ValueError(f"bad {kind} model {spec!r}: expected {kind}:SECONDS[:PRESENT_MEAN[:AWAY_MEAN]]")
    interval, *means = args
    present, away = (*means, *[f"{v:g}" for v in AWAY_DEFAULTS[kind][:2]][len(means):])
    return f"ios:{interval}:{present}:{away}:0.001"


def label_of(spec: str) -> str:
    """What a part is, in words, from its spec's kind."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "lossy":
        loss, _, base = rest.partition(":")
        return f"{label_of(base)}, {float(loss):.0%} lost"
    return {"interval": "visible", "jitter": "visible", "chrome": "hidden (throttled)",
            "chromevis": "hidden (throttled)", "background": "hidden (throttled)", "frozen": "frozen",
            "bfcache": "back/forward cache", "discard": "discarded",
            "ios": "iOS background", "sleep": "laptop sleep"}.get(kind, kind)


@dataclass(frozen=True)
class Part:
    """``share`` of the viewers behave as ``spec`` (``{hb}`` = the heartbeat interval being tried)."""

    share: float
    spec: str
    label: str = ""
    source: str = "set by the user"

    @property
    def client(self) -> str:
        return expand(self.spec)


@dataclass(frozen=True)
class Population:
    """Parts whose shares add up to 1."""

    parts: tuple[Part, ...]

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("a population needs at least one part")
        if any(not (math.isfinite(p.share) and p.share > 0) for p in self.parts):
            raise ValueError("every share must be a positive number")
        total = sum(p.share for p in self.parts)
        if abs(total - 1.0) > 0.005:
            raise ValueError(f"the shares add up to {total:.1%}, not 100 %")
        for p in self.parts:
            parse_model(ModelScenario(client=p.client).client_spec(30.0))  # a bad spec fails here, clearly

    def split(self, viewers: int) -> list[int]:
        """Viewers per part, in proportion (largest remainder), at least one each."""
        exact = [p.share * viewers for p in self.parts]
        counts = [max(1, math.floor(x)) for x in exact]
        order = sorted(range(len(exact)), key=lambda i: exact[i] - math.floor(exact[i]), reverse=True)
        for i in order[:max(0, viewers - sum(counts))]:
            counts[i] += 1
        return counts

    def scenarios(self, base: ModelScenario) -> list[ModelScenario]:
        """One scenario per part: ``base`` with that part's client and viewers (seed ``base.seed + i``, so the
        parts draw independent joins and departures)."""
        return [base.replace(client=p.client, viewers=n, seed=base.seed + i)
                for i, (p, n) in enumerate(zip(self.parts, self.split(base.viewers), strict=True))]

    def describe(self, viewers: int | None = None) -> list[str]:
        """The lines ``rtlib tune`` prints: each share, what it is, its spec and its source."""
        counts = self.split(viewers) if viewers else [None] * len(self.parts)
        lines = []
        for p, n in zip(self.parts, counts, strict=True):
            size = f" ({n} viewers)" if n is not None else ""
            lines.append(f"  {p.share:6.1%}  {p.label or label_of(p.spec):<19} {p.spec:<16}{size}: {p.source}")
        kinds = [k for k in AWAY_DEFAULTS if any(_away_kind(p.spec) == k for p in self.parts)]
        for kind in kinds:
            lines.append(f"  {AWAY_RULES[kind]}; default episodes {AWAY_DEFAULTS[kind][2]}")
        if kinds:
            lines.append("  " + _AWAY_NOTE.format(kinds=", ".join(kinds)))
        return lines


def _away_kind(spec: str) -> str:
    """``frozen``/``bfcache``/``discard`` for such a part (under ``lossy:`` too), else ``""``."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "lossy":
        return _away_kind(rest.partition(":")[2])
    return kind if kind in AWAY_DEFAULTS else ""


DEFAULT_POPULATION = Population((
    Part(1 - BACKGROUNDED, "interval:{hb}", "visible",
         "the rest: 100 % minus the 35 % backgrounded"),
    Part(BACKGROUNDED * (1 - FROZEN_OF_BACKGROUNDED), "chrome:{hb}:60", "hidden (throttled)",
         "git-city #81: 30-40 % of sessions are backgrounded tabs (35 % taken), less the frozen 10 % of them; "
         "throttled as recorded in Chromium 156 (60 s to intensive throttling), hidden Exp(300 s) of every "
         "900 s (an assumption)"),
    Part(BACKGROUNDED * FROZEN_OF_BACKGROUNDED, "frozen:{hb}", "frozen",
         "Chrome 'Freezing on Energy Saver' (Chrome 133) aims to freeze about 10 % of background tabs: 10 % "
         "of 35 %"),
))


def parse_population(text: str) -> Population:
    """``SHARE:SPEC,SHARE:SPEC,...``, a share as ``65%`` or ``0.65``, e.g.
    ``60%:interval:{hb},31.5%:chrome:{hb}:60,3.5%:frozen:{hb},4%:bfcache:{hb},1%:discard:{hb}``."""
    parts = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        share_text, _, spec = item.partition(":")
        if not spec:
            raise ValueError(f"bad population part {item!r}: expected SHARE:SPEC, e.g. 65%:interval:{{hb}}")
        try:
            share = float(share_text.rstrip("% ")) / (100.0 if share_text.strip().endswith("%") else 1.0)
        except ValueError:
            raise ValueError(f"bad population part {item!r}: {share_text!r} is not a share (65% or 0.65)") from None
        parts.append(Part(share, spec))
    return Population(tuple(parts))


def sweep_population(configs: Iterable[PresenceConfig], population: Population, base: ModelScenario, *,
                     progress: bool = False, engine: str = "fast", workers: int = 1) -> tuple[Any, Any]:
    """(combined, parts): :func:`combine` 's one row per configuration, and every part's own rows (column
    ``part``) for the breakdown. ``workers``: processes for the parts' runs (:func:`sweep_many`; same numbers)."""
    import pandas as pd  # noqa: PLC0415 - the lab extra

    scenarios = population.scenarios(base)
    frames = [frame.assign(part=p.label or label_of(p.spec), share=p.share, spec=p.spec)
              for p, frame in zip(population.parts, sweep_many(list(configs), scenarios, progress=progress,
                                                               engine=engine, samples=True, workers=workers),
                                  strict=True)]
    parts = pd.concat(frames, ignore_index=True)
    return combine(parts), parts.drop(columns=["td_samples"])


#: Costs and rates per present viewer: a viewer-hour-weighted mean over the parts.
_WEIGHTED = ["frames_per_s", "frames_out_per_s", "redis_cmds_per_s", "events_per_s", "bytes_in_per_s",
             "bytes_out_per_s", "bytes_per_s"]
_SUMMED = ["viewers", "viewer_hours", "departures", "detected", "mistakes", "absences_detected", "beats_attempted",
           "seconds"]


def combine(parts: Any, label: str = "population") -> Any:
    """One row per configuration from the parts' rows (:func:`sweep` with ``samples=True``): counts summed,
    λ_M = Σ mistakes / Σ viewer-hours with the exact Poisson interval and one-sided bound of Σ mistakes, T_D
    quantiles of the pooled detection times, T_M weighted by mistakes, P_A and costs by viewer-hours."""
    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415

    rows = []
    for key, g in parts.groupby(CONFIG_COLUMNS, sort=True):
        vh = g["viewer_hours"].to_numpy(float)
        total_vh, n_mist = float(vh.sum()), int(g["mistakes"].sum())
        row: dict[str, Any] = dict(zip(CONFIG_COLUMNS, key, strict=True))
        row.update({"model": label, "client": "; ".join(g["client"]), "alternative": g["alternative"].iloc[0]})
        row.update({c: g[c].sum() for c in _SUMMED if c in g})
        low, high = poisson_interval(n_mist)
        row.update({"mistakes_per_hour": n_mist / total_vh, "mistakes_upper95": poisson_upper(n_mist) / total_vh,
                    "mistakes_low95": low / total_vh, "mistakes_high95": high / total_vh})
        t_d = np.concatenate(list(g["td_samples"])) if len(g) else np.array([])
        for name, p in (("td_p50", 0.5), ("td_p90", 0.9), ("td_p99", 0.99)):
            row[name] = float(np.quantile(t_d, p)) if len(t_d) else math.nan
        row["td_max"] = float(t_d.max()) if len(t_d) else math.nan
        row["td_mean"] = float(t_d.mean()) if len(t_d) else math.nan
        row["tm_mean"] = float((g["tm_mean"] * g["mistakes"]).sum() / n_mist) if n_mist else 0.0
        row["tm_max"] = float(g["tm_max"].max())
        row["p_a"] = 1.0 - float(((1.0 - g["p_a"]) * vh).sum()) / total_vh
        row.update({c: float((g[c] * vh).sum()) / total_vh for c in _WEIGHTED if c in g})
        rows.append(row)
    return pd.DataFrame(rows)

