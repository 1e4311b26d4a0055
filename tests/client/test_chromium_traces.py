"""The Chromium client model reproduces real browser recordings (``bench/chromium_presence.py``).

Each committed trace (``notebooks/data/chromium_*.json``) is a board page in Debian's headless Chromium, hidden
and shown on a schedule, against ``rtlib serve`` at 30 s / 60 s / 5 s. The model (:mod:`rtlib.client.chromium`)
gets only what the page was given, never what the server saw: the hide/show times (the page's own
``visibilitychange`` log), the time its heartbeat interval was set up (the welcome), the monotonic-vs-wall clock
offset, and for ``probe`` the server's probe schedule (from its receipt of the join). It must give the beats
the server received, one for one, each within :data:`TOLERANCE` (the network and the handler take
milliseconds; a model with a wrong rule is off by seconds: a 1 s vs 60 s alignment, a grid point, a missing
beat), and the flaps the observer saw.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from rtlib.client.chromium import (
    CHROMIUM,
    Throttling,
    interval_fires,
    probe_beats,
    probe_times,
    server_view,
    visibility_beats,
)

DATA = Path(__file__).resolve().parents[2] / "notebooks" / "data"
TRACES = sorted(DATA.glob("chromium_*.json"))
#: Seconds: each model beat against the server's receive time of the matching recorded beat (so each gap is
#: within twice this). Recorded: page send -> server receive is 1-5 ms; the page's Date.now() has 1 ms steps.
TOLERANCE = 0.1
FLAP_TOLERANCE = 0.5
#: The recorder polls the score of the page's entry every 100 ms: beats closer than that show as one (the later).
POLL = 0.1  # a flap is announced by a sweep a few ms after its nominal multiple of 5 s


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def hidden_periods(trace: dict[str, Any]) -> list[tuple[float, float]]:
    """Page A's hidden spells, from its own visibilitychange log (an unfinished one ends with the recording)."""
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


def _page(trace: dict[str, Any], kind: str, type_: str) -> list[float]:
    return [e["wall"] for e in trace["page_log"] if e["kind"] == kind and e.get("type") == type_]


def timer_origin(trace: dict[str, Any]) -> float:
    """When the page set its heartbeat interval up: at its receipt of session.welcome (rtlib-client.js does it
    in that handler). Recordings made before the page logged the welcome: the join, which the page sent
    right after (Playwright's round trip: ~40 ms later)."""
    welcome = _page(trace, "recv", "session.welcome")
    return welcome[0] if welcome else _page(trace, "send", "presence.join")[0] - 0.04


def model_view(trace: dict[str, Any], throttling: Throttling = CHROMIUM) -> tuple[list[float], list[float]]:
    """The model's ``(beats received, flaps)`` for the trace's schedule and clock phase."""
    alt, end = trace["alternative"], trace["end"]
    interval = float(trace["welcome"]["heartbeatInterval"])
    origin = timer_origin(trace)
    join = _page(trace, "send", "presence.join")[0]
    hidden, offset = hidden_periods(trace), trace["clock"]["offset"]
    if alt == "probe":
        # The server's probe schedule starts at its receipt of the join (the first recorded score).
        attempts = probe_beats(probe_times(trace["beats"][0], end, interval))
    elif alt == "visibility":
        attempts = visibility_beats(origin, end, interval, hidden, mono_offset=offset, throttling=throttling)
    else:
        attempts = interval_fires(origin, end, interval, hidden, mono_offset=offset, throttling=throttling)
    p = trace["presence"]
    return server_view(attempts, join, end, timeout=p["timeout"], sweep_interval=p["sweep_interval"],
                       grace=p["leave_grace"])


def recorded_flaps(trace: dict[str, Any]) -> list[float]:
    return [datetime.fromisoformat(f["timestamp"].replace("Z", "+00:00")).timestamp() for f in trace["flaps"]]


def as_polled(beats: list[float]) -> list[float]:
    """The beats as the recorder saw them: of beats less than :data:`POLL` apart, only the last."""
    return [b for b, nxt in zip(beats, [*beats[1:], float("inf")], strict=True) if nxt - b >= POLL]


def _mismatch(model: list[float], recorded: list[float]) -> str | None:
    model = as_polled(model)
    if len(model) != len(recorded):
        return f"{len(model)} beats in the model, {len(recorded)} recorded"
    worst = max((abs(m - r), i) for i, (m, r) in enumerate(zip(model, recorded, strict=True)))
    return f"beat {worst[1]} off by {worst[0]:.3f} s" if worst[0] > TOLERANCE else None


def test_there_are_recordings() -> None:
    assert {p.stem for p in TRACES} >= {"chromium_timer"}


@pytest.mark.parametrize("path", TRACES, ids=[p.stem for p in TRACES])
def test_the_recording_is_what_it_says(path: Path) -> None:
    trace = _load(path)
    assert trace["browser"].startswith("Chromium ")
    assert trace["presence"]["heartbeat_interval"] == 30 and trace["presence"]["timeout"] == 60
    hides = [s for s in trace["schedule"] if s["state"] == "hide"]
    assert hides and all(s["visibilityState"] == "hidden" for s in hides)
    assert all(s["visibilityState"] == "visible" for s in trace["schedule"] if s["state"] == "show")
    assert trace["end"] - trace["start"] >= 600, "long enough for intensive throttling"


@pytest.mark.parametrize("path", TRACES, ids=[p.stem for p in TRACES])
def test_model_reproduces_the_recorded_beats_and_flaps(path: Path) -> None:
    trace = _load(path)
    beats, flaps = model_view(trace)
    recorded = trace["beats"]
    gaps = [round(b - a, 3) for a, b in zip(recorded, recorded[1:], strict=False)]
    assert _mismatch(beats, recorded) is None, (_mismatch(beats, recorded), gaps)
    assert len(flaps) == len(trace["flaps"])
    assert all(abs(m - r) <= FLAP_TOLERANCE for m, r in zip(flaps, recorded_flaps(trace), strict=True))


@pytest.mark.parametrize("wrong", [
    dataclasses.replace(CHROMIUM, grace=300.0),  # the documented 5-minute grace
    dataclasses.replace(CHROMIUM, align=1.0),  # no intensive throttling at all
    dataclasses.replace(CHROMIUM, chain=0),  # a fresh timer throttled like an old one
], ids=["grace-300", "no-intensive", "no-nesting"])
def test_a_wrong_rule_does_not_reproduce_the_timer_recording(wrong: Throttling) -> None:
    """The comparison can fail: each of these plausible rules misses the recording by seconds somewhere."""
    traces = [_load(p) for p in TRACES if _load(p)["alternative"] in ("timer", "grace")]
    assert any(_mismatch(model_view(t, wrong)[0], t["beats"]) for t in traces)


def test_interval_fires_rules_by_hand() -> None:
    """Grid at 30 k (origin 0.5); hidden from 100 to 400; monotonic = wall + 7 (whole seconds at .0 wall)."""
    fires = interval_fires(0.5, 420, 30, [(100.0, 400.0)], mono_offset=7.0)
    # 30.5..90.5 visible; hidden: the next whole second (120.5, 150.5: hidden < 60 s; 180.5: only the 6th run);
    # from the 7th run (210.5) the next whole minute of the monotonic clock (wall 233, 293, ...); shown at 400:
    # the overdue run at once, then the grid again (420.5 > 420: not in).
    assert fires == [30.5, 60.5, 90.5, 121.0, 151.0, 181.0, 233.0, 293.0, 353.0, 400.0]
    # A restart at 200: a new grid, and the chain starts again (6 runs at whole seconds).
    again = interval_fires(0.5, 420, 30, [(100.0, 400.0)], mono_offset=7.0, restarts=[200.0])
    assert again == [30.5, 60.5, 90.5, 121.0, 151.0, 181.0, 230.0, 260.0, 290.0, 320.0, 350.0, 380.0, 410.0]


def test_visibility_beats_at_each_change_and_probes_ignore_throttling() -> None:
    beats = visibility_beats(0.5, 420, 30, [(100.0, 400.0)], mono_offset=7.0)
    # The 7th run after the hide's restart is throttled to a whole minute; the show replaces the overdue run.
    assert beats == [30.5, 60.5, 90.5, 100.0, 130.0, 160.0, 190.0, 220.0, 250.0, 280.0, 353.0, 400.0]
    assert probe_beats(probe_times(10.2, 100, 30), delay=0.002) == [41.002, 71.002]


def test_server_view_flaps_and_rejoins() -> None:
    # A 70 s gap: popped by the sweep at 40 + 60, then the page re-joins at once (its grid goes on).
    beats, flaps = server_view([40.0, 110.0, 140.0], 10.0, 150.0)
    assert flaps == [100.0] and beats == pytest.approx([10.0, 40.0, 100.005, 110.0, 140.0])
    # A 15 s leave grace absorbs it.
    assert server_view([40.0, 110.0, 140.0], 10.0, 150.0, grace=15.0) == ([10.0, 40.0, 110.0, 140.0], [])
