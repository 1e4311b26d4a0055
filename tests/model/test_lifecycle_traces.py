"""The lifecycle model against the recordings: each recorded page (``notebooks/data/lifecycle/*.json``) replayed
through :func:`rtlib.clientmodels.lifecycle.observed` gives the observer's recorded presence events, in order and
within :data:`rtlib.model.lifecycle_traces.TOLERANCE`; and the recorded facts the model rests on hold."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rtlib.clientmodels.lifecycle import CHROMIUM_LIFECYCLE
from rtlib.model.lifecycle_traces import LIFECYCLE_DIR, load, mismatches, replay

TRACES = sorted(LIFECYCLE_DIR.glob("*.json"))


def test_every_presence_mode_was_recorded() -> None:
    assert {p.stem for p in TRACES} == {"timer", "probe", "grace"}


@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.stem)
def test_the_model_gives_the_recorded_presence_events(path: Path) -> None:
    pages = replay(load(path))
    assert pages and all(len(seen) >= 2 for _, seen in pages)
    for model, seen in pages:
        assert not mismatches(model, seen), (model, seen)


@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.stem)
def test_the_recorded_facts_the_model_rests_on(path: Path) -> None:
    trace = load(path)
    w, events = trace["witness"], trace["events"]
    freezes = [(e["at"], nxt["at"]) for e, nxt in zip(events, events[1:], strict=False) if e["kind"] == "freeze"]
    for start, end in freezes:
        inside = [p for p in w["pings"] if start + 0.5 <= p["sent"] < end - 2.0]
        # The socket stays open and the browser answers protocol pings: pings cannot tell frozen from live.
        assert all(p["pong"] is not None and p["pong"] < end for p in inside)
        # No message handler runs while frozen.
        assert not [x for x in w["echoes"] if start + 0.2 <= x["at"] < end]
        # Chromium closes the sockets on resume, with a close frame (1001): a clean disconnect for the server.
        closes = [c for c in w["closes"] if c["closed"] and start <= c["closed"] < end + 1.0]
        assert [c["code"] for c in closes] == [1001]
    assert len(freezes) >= 3


def test_a_model_without_the_recorded_close_on_resume_is_rejected() -> None:
    # The replay can fail: keep the socket open on resume (what protocol pings would suggest) and the short
    # freezes' disconnects disappear from the model.
    kept = dataclasses.replace(CHROMIUM_LIFECYCLE, closes_on_resume=False)
    for path in TRACES:
        assert any(mismatches(model, seen) for model, seen in replay(load(path), kept)), path.stem


def test_a_model_without_the_restore_reconnect_is_rejected() -> None:
    before = dataclasses.replace(CHROMIUM_LIFECYCLE, reconnect_on_restore=False)
    assert all(any(mismatches(m, s) for m, s in replay(load(p), before)) for p in TRACES)
