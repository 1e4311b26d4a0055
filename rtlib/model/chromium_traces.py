"""Replay a recorded Chromium presence trace (``bench/presence/chromium_presence.py``) through the model.

A trace (``notebooks/data/chromium_*.json``) is a board page in Debian's headless Chromium, hidden and shown on
a schedule, against ``rtlib serve`` at production timing. :func:`replay` gives the model only what the page
was given, never what the server saw: the hide/show times (the page's own ``visibilitychange`` log), when its
heartbeat interval was set up (its receipt of ``session.welcome``), the monotonic-vs-wall clock offset, the
server's presence settings, and for ``probe`` the server's probe schedule (from its receipt of the join). The
result is compared with the trace's ``beats`` (the server's receive times) and ``flaps`` by
``tests/model/test_chromium_traces.py``; notebook 05 shows them side by side.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from rtlib.clientmodels.chromium import (
    CHROMIUM,
    Throttling,
    interval_fires,
    probe_beats,
    server_view,
    visibility_beats,
)
from rtlib.protocol.probes import probe_schedule

__all__ = ["POLL", "TRACE_DIR", "as_polled", "hidden_periods", "load_trace", "recorded_flaps", "replay",
           "timer_origin", "traces"]

TRACE_DIR = Path(__file__).resolve().parents[2] / "notebooks" / "data"
#: Seconds between the recorder's polls of the page's presence score: beats closer than this show as one.
POLL = 0.1
# Playwright's round trip between the page's welcome and the join it was told to send (measured: 40-90 ms).
_JOIN_AFTER_WELCOME = 0.04

Trace = dict[str, Any]


def traces(directory: Path = TRACE_DIR) -> list[Path]:
    """The committed recordings, by name."""
    return sorted(directory.glob("chromium_*.json"))


def load_trace(path: Path) -> Trace:
    return json.loads(Path(path).read_text())


def hidden_periods(trace: Trace) -> list[tuple[float, float]]:
    """The page's hidden spells, from its own visibilitychange log (an unfinished one ends with the recording)."""
    out, since = [], None
    for e in trace["page_log"]:
        if e["kind"] != "visibility":
            continue
        if e["visibility"] == "hidden" and since is None:
            since = e["wall"]
        elif e["visibility"] == "visible" and since is not None:
            out.append((since, e["wall"]))
            since = None
    if since is not None:
        out.append((since, trace["end"]))
    return out


def _page(trace: Trace, kind: str, type_: str) -> list[float]:
    return [e["wall"] for e in trace["page_log"] if e["kind"] == kind and e.get("type") == type_]


def timer_origin(trace: Trace) -> float:
    """When the page set its heartbeat interval up: at its receipt of session.welcome (rtlib-client.js does it
    in that handler). The first recordings did not log the welcome: there, the join the page sent right after,
    less Playwright's round trip (off by up to 50 ms, well inside the test's tolerance)."""
    welcome = _page(trace, "recv", "session.welcome")
    return welcome[0] if welcome else _page(trace, "send", "presence.join")[0] - _JOIN_AFTER_WELCOME


def replay(trace: Trace, throttling: Throttling = CHROMIUM) -> tuple[list[float], list[float]]:
    """The model's ``(beats received, flaps)`` for the trace's schedule, clock phase and server settings."""
    alt, end = trace["alternative"], trace["end"]
    interval = float(trace["welcome"]["heartbeatInterval"])
    origin, join = timer_origin(trace), _page(trace, "send", "presence.join")[0]
    hidden, offset = hidden_periods(trace), trace["clock"]["offset"]
    if alt == "probe":
        # The recorder stores the Prober's tick phase from commit 428f548 on; earlier ticks were on the grid.
        attempts = probe_beats(probe_schedule(trace["beats"][0], end, interval, trace.get("probe_tick_phase", 0.0)))
    elif alt == "visibility":
        attempts = visibility_beats(origin, end, interval, hidden, mono_offset=offset, throttling=throttling)
    else:  # "timer" and "grace": the page's own interval
        attempts = interval_fires(origin, end, interval, hidden, mono_offset=offset, throttling=throttling)
    p = trace["presence"]
    return server_view(attempts, join, end, timeout=p["timeout"], sweep_interval=p["sweep_interval"],
                       grace=p["leave_grace"])


def recorded_flaps(trace: Trace) -> list[float]:
    """When the observer was told (server timestamps) that the open page's user left by timeout."""
    return [datetime.fromisoformat(f["timestamp"].replace("Z", "+00:00")).timestamp() for f in trace["flaps"]]


def as_polled(beats: list[float]) -> list[float]:
    """Model beats as the recorder would have seen them: of beats less than :data:`POLL` apart, the last."""
    return [b for b, nxt in zip(beats, [*beats[1:], float("inf")], strict=True) if nxt - b >= POLL]
