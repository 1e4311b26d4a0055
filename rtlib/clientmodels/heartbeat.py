"""Heartbeat schedule models: when a client viewing a task *tries* to send ``presence.heartbeat``, and whether
each one reaches the server. Sans-I/O and seeded: models take a ``random.Random`` and yield :class:`Beat` s.

The design review's client beats every 30 s and the server forgets it after 60 s without one. A model says
what a real browser does with that timer; :mod:`rtlib.clientmodels.analytic` says what the server makes of it
(the presence notebook charts its false departures as "flapping"). :func:`parse_model` builds a model
from a short spec string for the CLI and notebooks.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from rtlib.clientmodels.chromium import CHROMIUM, interval_fires, visibility_beats
from rtlib.protocol.presence import next_multiple

__all__ = [
    "MIN_PERIOD_FRACTION",
    "BackgroundTab",
    "Beat",
    "ChromeHiddenTab",
    "HeartbeatModel",
    "Interval",
    "IOSBackground",
    "Jitter",
    "LaptopSleep",
    "Lossy",
    "parse_model",
    "positive",
]

# A jittered period is never shorter than this fraction of the interval: a timer cannot fire in zero time,
# and it bounds how many beats a window can hold.
MIN_PERIOD_FRACTION = 0.01


@dataclass(frozen=True)
class Beat:
    """A heartbeat the client attempts at ``t``; ``delivered`` = it reaches the server.

    ``away_since``: this beat ends an absence that began then (an app in the background, a sleeping laptop:
    the user was not viewing, so being shown gone meanwhile is right, not a mistake); ``nan`` otherwise."""

    t: float
    delivered: bool = True
    away_since: float = math.nan


class HeartbeatModel(Protocol):
    def beats(self, start: float, end: float, rng: random.Random) -> Iterator[Beat]:
        """The beats in ``(start, end]`` of a client that joined at ``start``, in time order."""
        ...

    @property
    def spec(self) -> str:
        """The :func:`parse_model` spec of this model."""
        ...


def positive(name: str, value: float) -> None:
    """Raise a clear ValueError unless ``value`` is a finite positive number of seconds."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@dataclass(frozen=True)
class Interval:
    """An exact timer: beats at ``start + k * interval`` (computed, not accumulated, so no drift)."""

    interval: float = 30.0

    def __post_init__(self) -> None:
        positive("interval", self.interval)

    def beats(self, start: float, end: float, rng: random.Random) -> Iterator[Beat]:
        k = 1
        while (t := start + k * self.interval) <= end:
            yield Beat(t)
            k += 1

    @property
    def spec(self) -> str:
        return f"interval:{_num(self.interval)}"


@dataclass(frozen=True)
class Jitter:
    """A chained timer whose every period is uniform in ``[interval - jitter, interval + jitter]``."""

    interval: float = 30.0
    jitter: float = 5.0

    def __post_init__(self) -> None:
        positive("interval", self.interval)
        if not (isinstance(self.jitter, (int, float)) and math.isfinite(self.jitter) and self.jitter >= 0):
            raise ValueError(f"jitter must be a non-negative number of seconds, got {self.jitter!r}")

    def beats(self, start: float, end: float, rng: random.Random) -> Iterator[Beat]:
        floor = self.interval * MIN_PERIOD_FRACTION
        t = start
        while True:
            t += max(floor, rng.uniform(self.interval - self.jitter, self.interval + self.jitter))
            if t > end:
                return
            yield Beat(t)

    @property
    def spec(self) -> str:
        return f"jitter:{_num(self.interval)}:{_num(self.jitter)}"


@dataclass(frozen=True)
class Lossy:
    """Any model whose beats are each independently lost with probability ``loss``.

    One draw per beat, even for beats the base already lost, so the timeline of draws (and hence the
    result for a seed) does not depend on earlier outcomes.
    """

    base: HeartbeatModel
    loss: float

    def __post_init__(self) -> None:
        if not (isinstance(self.loss, (int, float)) and 0.0 <= self.loss <= 1.0):
            raise ValueError(f"loss must be a probability in [0, 1], got {self.loss!r}")

    def beats(self, start: float, end: float, rng: random.Random) -> Iterator[Beat]:
        for beat in self.base.beats(start, end, rng):
            kept = rng.random() >= self.loss
            yield dataclasses.replace(beat, delivered=beat.delivered and kept)

    @property
    def spec(self) -> str:
        return f"lossy:{_num(self.loss)}:{self.base.spec}"


@dataclass(frozen=True)
class BackgroundTab:
    """A chained ``interval`` timer in a tab that is hidden long enough for Chrome's intensive throttling.

    Source: Chrome's "intensive wake up throttling" (chromestatus.com/feature/4718288976216064; the
    developer.chrome.com post "Heavy throttling of chained JS timers beginning in Chrome 88"): once a page
    has been hidden for 5 minutes (and is silent, without WebRTC), a timer whose nesting level is 5 or more
    (a ``setInterval``, or a ``setTimeout`` chain, as a heartbeat loop is) runs at most once per minute, on
    1-minute aligned wake-ups. So ``hidden_after`` = when the tab was hidden + 5 min, counted from the join
    (Chrome later trialled a 10 s grace for pages fully loaded when hidden). The 1-second alignment of
    hidden tabs before that is negligible at a 30 s interval and is not modelled.

    Before ``start + hidden_after`` beats are those of :class:`Interval`. After, a timer due at ``t`` fires at
    the next multiple of ``align`` at or after ``t`` on the absolute clock (Chrome aligns to its monotonic
    clock; pass times from the same origin as the sweeper's to keep the phase meaningful), and the next one
    is due ``interval`` after it fires: with interval 30 and align 60 a beat lands on every minute boundary.

    Measured (Debian's Chromium 156, ``notebooks/data/chromium_*.json``): the grace was 1 minute, not 5,
    an open WebSocket did not exempt the page, and a ``setInterval`` keeps its grid (the next run is due at the
    next ``start + k * interval``, not ``interval`` after a late run), which changes only the first throttled
    gap. :class:`ChromeHiddenTab` follows the measured rule (:mod:`rtlib.clientmodels.chromium`); this class keeps
    the documented one, a tab hidden from the join, for comparison.
    """

    interval: float = 30.0
    hidden_after: float = 300.0
    align: float = 60.0

    def __post_init__(self) -> None:
        positive("interval", self.interval)
        positive("align", self.align)
        if not (isinstance(self.hidden_after, (int, float)) and math.isfinite(self.hidden_after)
                and self.hidden_after >= 0):
            raise ValueError(f"hidden_after must be a non-negative number of seconds, got {self.hidden_after!r}")

    def beats(self, start: float, end: float, rng: random.Random) -> Iterator[Beat]:
        throttled_from = start + self.hidden_after
        due = start + self.interval
        while True:
            fire = due if due < throttled_from else next_multiple(due, self.align)
            if fire > end:
                return
            yield Beat(fire)
            due = fire + self.interval

    @property
    def spec(self) -> str:
        return f"background:{_num(self.interval)}:{_num(self.hidden_after)}:{_num(self.align)}"


def _episodes(start: float, end: float, rng: random.Random, on_mean: float, off_mean: float
              ) -> list[tuple[float, float]]:
    """Alternating periods from ``start``: "on" for Exp(``on_mean``), then "off" for Exp(``off_mean``), ...;
    the "off" ones as ``(begin, end)``, up to ``end``."""
    out, t = [], start
    while True:
        t += rng.expovariate(1.0 / on_mean)
        if t > end:
            return out
        off = rng.expovariate(1.0 / off_mean)
        out.append((t, t + off))
        t += off


@dataclass(frozen=True)
class ChromeHiddenTab:
    """A ``setInterval`` heartbeat in a Chrome tab that the user hides and shows again.

    Visible and hidden periods alternate, exponentially distributed with means ``visible_mean`` and
    ``hidden_mean`` (assumptions to vary, not measurements). When the timer fires in them is
    :func:`rtlib.clientmodels.chromium.interval_fires`, the rule that reproduces the recorded Chromium traces
    (``notebooks/data/chromium_*.json``, Debian's Chromium 156 headless; ``tests/model/test_chromium_traces.py``):
    the interval stays on its grid (``start + k * interval``); hidden, it runs at the first whole second of
    the monotonic clock; once the page has been hidden ``grace`` seconds, a timer that has already run 6 times
    runs only at whole minutes (recorded: 60 s, judged at the next whole-second wake-up, so ``chrome:30:60`` models this
    machine; Chrome's documentation says 5 minutes, ``chrome:30:300``); shown again, an overdue run happens at
    once (then a gap shorter than the interval can follow, to the next grid point). At 30 s, a hide of 150 s
    gives one gap of 30-90 s (the first minute-aligned run; 40-78 s recorded), a long hide 60.00 s gaps.

    ``phase``: seconds that the monotonic clock is ahead of this model's clock (modulo ``align``); with 0,
    whole minutes coincide with sweeps (multiples of 5 s), and a 60 s gap expires exactly at a sweep, which
    counts as a flap (the pessimistic phase); on the recording machine whole minutes fell 1.21 s before a
    sweep, which gave the recorded 60 s gaps 1.21 s of margin. A hidden tab is still open on the task, so
    being shown gone meanwhile counts as a mistake.

    ``visibility_beat`` (spec ``chromevis:...``): the page of a ``--visibility-beat`` server, which also beats
    at every hide and show and restarts its interval there (:func:`rtlib.clientmodels.chromium.visibility_beats`).
    In presence mode ``probe`` a hidden tab needs no model: it answers every probe within milliseconds.
    This is the reference; :mod:`rtlib.model.chrome_beats` draws whole populations in bulk, the same beats.
    """

    interval: float = 30.0
    grace: float = 300.0
    visible_mean: float = 600.0
    hidden_mean: float = 300.0
    align: float = 60.0
    phase: float = 0.0
    visibility_beat: bool = False

    def __post_init__(self) -> None:
        for name in ("interval", "visible_mean", "hidden_mean", "align"):
            positive(name, getattr(self, name))
        if not (math.isfinite(self.grace) and self.grace >= 0):
            raise ValueError(f"grace must be a non-negative number of seconds, got {self.grace!r}")
        if not math.isfinite(self.phase):
            raise ValueError(f"phase must be a finite number of seconds, got {self.phase!r}")

    def beats(self, start: float, end: float, rng: random.Random) -> Iterator[Beat]:
        hides = _episodes(start, end, rng, self.visible_mean, self.hidden_mean)
        # The one rule, shared with the replay of recorded browser traces (rtlib.clientmodels.chromium).
        throttling = dataclasses.replace(CHROMIUM, grace=self.grace, align=self.align)
        rule = visibility_beats if self.visibility_beat else interval_fires
        for t in rule(start, end, self.interval, hides, mono_offset=self.phase, throttling=throttling):
            yield Beat(t)

    @property
    def spec(self) -> str:
        phase = f":{_num(self.phase)}" if self.phase else ""
        kind = "chromevis" if self.visibility_beat else "chrome"
        return (f"{kind}:{_num(self.interval)}:{_num(self.grace)}:{_num(self.visible_mean)}:"
                f"{_num(self.hidden_mean)}:{_num(self.align)}{phase}")


@dataclass(frozen=True)
class IOSBackground:
    """A heartbeat in iOS Safari when the user switches away: WebKit suspends a backgrounded page's
    JavaScript a few seconds (``suspend_after``) after it leaves the foreground (Apple's WebKit and Safari
    documentation; the anchors file: "Safari on iOS stops JavaScript a few seconds after backgrounding").
    Foreground and background periods are exponential (means ``foreground_mean``, ``background_mean``:
    assumptions). No beat fires while suspended; the overdue one fires on return, marked ``away_since`` the
    moment the user left (they were not viewing: a ``presence.left`` meanwhile is right)."""

    interval: float = 30.0
    foreground_mean: float = 600.0
    background_mean: float = 120.0
    suspend_after: float = 5.0

    def __post_init__(self) -> None:
        for name in ("interval", "foreground_mean", "background_mean", "suspend_after"):
            positive(name, getattr(self, name))

    def beats(self, start: float, end: float, rng: random.Random) -> Iterator[Beat]:
        return _suspended(start, end, self.interval,
                          _episodes(start, end, rng, self.foreground_mean, self.background_mean), self.suspend_after)

    @property
    def spec(self) -> str:
        return (f"ios:{_num(self.interval)}:{_num(self.foreground_mean)}:{_num(self.background_mean)}:"
                f"{_num(self.suspend_after)}")


@dataclass(frozen=True)
class LaptopSleep:
    """A laptop whose lid closes ``per_hour`` times an hour (Poisson) for Exp(``sleep_mean``) seconds: the OS
    suspends every process, so no timer fires; on wake the overdue heartbeat fires at once (after the
    network is back, ``wake_delay``), marked ``away_since`` the moment it slept. Rates are assumptions."""

    interval: float = 30.0
    per_hour: float = 0.5
    sleep_mean: float = 600.0
    wake_delay: float = 3.0

    def __post_init__(self) -> None:
        for name in ("interval", "per_hour", "sleep_mean"):
            positive(name, getattr(self, name))

    def beats(self, start: float, end: float, rng: random.Random) -> Iterator[Beat]:
        sleeps = _episodes(start, end, rng, 3600.0 / self.per_hour, self.sleep_mean)
        return _suspended(start, end, self.interval, [(a, b + self.wake_delay) for a, b in sleeps], 0.0)

    @property
    def spec(self) -> str:
        return f"sleep:{_num(self.interval)}:{_num(self.per_hour)}:{_num(self.sleep_mean)}:{_num(self.wake_delay)}"


def _suspended(start: float, end: float, interval: float, offs: list[tuple[float, float]], grace: float
               ) -> Iterator[Beat]:
    """A chained timer that does not run from ``begin + grace`` to ``end`` of each period in ``offs``."""
    due, i = start + interval, 0
    while True:
        while i < len(offs) and offs[i][1] <= due:
            i += 1
        fire, away = due, math.nan
        if i < len(offs) and offs[i][0] + grace <= due:
            fire, away = offs[i][1], offs[i][0]
        if fire > end:
            return
        yield Beat(fire, True, away)
        due = fire + interval


_USAGE = ("expected interval:SECONDS, jitter:SECONDS:JITTER, lossy:LOSS:<model>, "
          "background:SECONDS:HIDDEN_AFTER[:ALIGN], "
          "chrome[vis]:SECONDS[:GRACE[:VISIBLE_MEAN[:HIDDEN_MEAN[:ALIGN[:PHASE]]]]], "
          "ios:SECONDS[:FOREGROUND_MEAN[:BACKGROUND_MEAN[:SUSPEND_AFTER]]] or "
          "sleep:SECONDS[:PER_HOUR[:SLEEP_MEAN[:WAKE_DELAY]]]")


def parse_model(spec: str) -> HeartbeatModel:
    """A model from a spec: ``interval:30``, ``jitter:30:5``, ``lossy:0.1:interval:30``,
    ``background:30:300`` or ``background:30:300:60``, ``chrome:30:60`` (hidden/visible episodes;
    ``chromevis:30:60``: the same page with a visibility beat), ``ios:30``, ``sleep:30``. ``model.spec`` gives
    the spec back."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "lossy":
        loss, _, base = rest.partition(":")
        if not base:
            raise ValueError(f"bad heartbeat model {spec!r}: lossy needs a loss and a base model; {_USAGE}")
        return _build(spec, Lossy, parse_model(base), _float(spec, loss))
    arity = {"interval": (1, 1), "jitter": (2, 2), "background": (2, 3), "chrome": (1, 6), "chromevis": (1, 6),
             "ios": (1, 4), "sleep": (1, 4)}
    if kind not in arity:
        raise ValueError(f"bad heartbeat model {spec!r}: unknown kind {kind!r}; {_USAGE}")
    args = [_float(spec, a) for a in rest.split(":")] if rest else []
    low, high = arity[kind]
    if not low <= len(args) <= high:
        raise ValueError(f"bad heartbeat model {spec!r}: {kind} takes {low}-{high} numbers, got {len(args)}; "
                         f"{_USAGE}")
    classes = {"interval": Interval, "jitter": Jitter, "background": BackgroundTab, "chrome": ChromeHiddenTab,
               "ios": IOSBackground, "sleep": LaptopSleep}
    if kind == "chromevis":
        return _build(spec, functools.partial(ChromeHiddenTab, visibility_beat=True), *args)
    return _build(spec, classes[kind], *args)


def _float(spec: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"bad heartbeat model {spec!r}: {text!r} is not a number; {_USAGE}") from None
    return value


def _build(spec: str, cls: Callable[..., HeartbeatModel], *args: object) -> HeartbeatModel:
    try:
        return cls(*args)
    except ValueError as exc:
        raise ValueError(f"bad heartbeat model {spec!r}: {exc}") from None
