"""Replay a page-lifecycle recording (``bench/presence/lifecycle.py``) through :mod:`rtlib.clientmodels.lifecycle`.

A trace (``notebooks/data/lifecycle/<mode>.json``) is a board page frozen, cached and discarded against
``rtlib serve``. :func:`replay` gives the model only what the page went through, from the page's own log
(``freeze``/``resume``, ``pagehide``/``pageshow`` with ``persisted``, its welcome) and the recorder's marks
(when the target was closed or crashed), plus the server's settings and the first join; never what the observer
saw. :func:`mismatches` compares the model's events with the observer's, within :data:`TOLERANCE`.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from rtlib.clientmodels.lifecycle import CHROMIUM_LIFECYCLE, Away, Event, LifecycleRule, observed
from rtlib.protocol.presence import PresenceConfig

__all__ = ["LIFECYCLE_DIR", "TOLERANCE", "aways_of", "load", "mismatches", "recorded", "replay"]

LIFECYCLE_DIR = Path(__file__).resolve().parents[2] / "notebooks" / "data" / "lifecycle"
Trace = dict[str, Any]
#: Seconds a modelled event may be off the recorded one, by kind: a timeout is judged at a sweep (0.5 s apart
#: in the recordings), after beats whose grid the reconnect's backoff jitter (U(0.25, 0.5) s) shifted; a
#: re-join after a resume carries that jitter; a close lands within a few hundred ms of pagehide/discard.
TOLERANCE = {"timeout": 0.65, "joined": 0.35, "disconnect": 0.35}


def load(path: Path) -> Trace:
    return json.loads(path.read_text())


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _page_log(trace: Trace) -> list[dict[str, Any]]:
    """The page's log, each line once (Playwright can deliver a console line twice), in time order."""
    seen, out = set(), []
    for e in sorted(trace["page_log"], key=lambda e: (e["wall"], e["perf"])):
        key = (e["kind"], e["wall"], e["perf"])
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def aways_of(trace: Trace, since: float, until: float) -> list[Away]:
    """The page's freezes and stays in the back/forward cache between ``since`` and ``until``, from its log."""
    log = [e for e in _page_log(trace) if since <= e["wall"] < until]
    out, frozen, cached = [], None, None
    for e in log:
        if e["kind"] == "pagehide" and e["persisted"]:
            cached = e["wall"]
        elif e["kind"] == "pageshow" and e["persisted"] and cached is not None:
            out.append(Away("bfcache", cached, e["wall"]))
            cached = None
        elif e["kind"] == "freeze" and cached is None:
            frozen = e["wall"]
        elif e["kind"] == "resume" and frozen is not None and cached is None:
            out.append(Away("freeze", frozen, e["wall"]))
            frozen = None
    return out


def _mark(trace: Trace, kind: str) -> float | None:
    return next((e["at"] for e in trace["events"] if e["kind"] == kind), None)


def recorded(trace: Trace, since: float, until: float) -> list[Event]:
    """The observer's presence events about the page's user, by server timestamp, in ``[since, until)``."""
    return [Event(_ts(e["timestamp"]), e["type"].split(".")[1], e["reason"]) for e in trace["observer"]
            if since <= _ts(e["timestamp"]) < until and e["type"] in ("presence.joined", "presence.left")]


def replay(trace: Trace, rule: LifecycleRule = CHROMIUM_LIFECYCLE) -> list[tuple[list[Event], list[Event]]]:
    """``[(model, recorded), ...]``, one pair per page of the trace: the board page (frozen, cached, closed)
    and, where recorded, the page whose renderer was crashed."""
    p = trace["presence"]
    config = PresenceConfig(heartbeat_interval=p["heartbeat_interval"], timeout=p["timeout"],
                            sweep_interval=p["sweep_interval"], leave_grace=p["leave_grace"], mode=p["mode"])
    first = recorded(trace, 0.0, math.inf)[0].t
    closed = _mark(trace, "close-target")
    crash = _mark(trace, "crash")
    last = trace["events"][-1]["at"]
    welcome = next(e["wall"] for e in _page_log(trace) if e["kind"] == "recv" and e["type"] == "session.welcome")
    pages = []
    end_a = closed + 3.0 if closed is not None else last
    aways = aways_of(trace, first, end_a)
    if closed is not None:
        aways.append(Away("discard", closed))
    pages.append((observed(p["mode"], config, first, end_a, aways, rule, origin=welcome),
                  recorded(trace, first - 0.01, end_a)))
    if crash is not None:
        joins = recorded(trace, end_a, crash)
        if joins:
            start = joins[0].t
            end_b = crash + 3.0
            pages.append((observed(p["mode"], config, start, end_b, [Away("discard", crash)], rule),
                          recorded(trace, start - 0.01, end_b)))
    return pages


def mismatches(model: list[Event], seen: list[Event]) -> list[str]:
    """What differs between the model's events and the recorded ones (empty: they agree within
    :data:`TOLERANCE`)."""
    out = []
    if [(e.type, e.reason) for e in model] != [(e.type, e.reason) for e in seen]:
        out.append(f"events differ: model {[(e.type, e.reason) for e in model]}, "
                   f"recorded {[(e.type, e.reason) for e in seen]}")
        return out
    for m, r in zip(model, seen, strict=True):
        tol = TOLERANCE[m.reason or m.type]
        if abs(m.t - r.t) > tol:
            out.append(f"{m.type}/{m.reason}: model {m.t - seen[0].t:.3f}, recorded {r.t - seen[0].t:.3f} "
                       f"(> {tol} s apart)")
    return out
