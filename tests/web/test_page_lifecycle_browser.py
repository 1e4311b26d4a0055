"""CI-sized: a board page frozen by Chromium (``Page.setWebLifecycleState``) keeps its socket open (the browser,
not the page, answers protocol pings), runs no handler, and is shown gone by timeout; on resume Chromium closes
the socket and the page re-joins: the events the lifecycle model predicts (``rtlib.clientmodels.lifecycle``).

``bench/presence/lifecycle.py`` records the full set (three presence modes, the back/forward cache, discards).
Freezing is not throttling, so presence timing compresses: heartbeat 3 s, timeout 6 s; a 2 s freeze shows only
at the resume (a disconnect), a 9 s one times out while frozen. About 35 s.
"""

from __future__ import annotations

import pytest
from recording_chromium import chromium_or_missing

from rtlib.model.lifecycle_traces import mismatches, replay

CHROMIUM = chromium_or_missing()

from bench.presence.lifecycle import record_mode  # noqa: E402
from bench.presence.lifecycle_table import summarize  # noqa: E402

pytestmark = pytest.mark.recording


@pytest.mark.timeout(120)
async def test_a_frozen_page_keeps_its_socket_answers_pings_and_shows_as_the_model_says() -> None:
    trace = await record_mode("timer", CHROMIUM, freezes=(2.0, 9.0), settle=4.0, away=False)
    short, long = summarize(trace)
    assert long["pings"].split("/")[0] == long["pings"].split("/")[1] != "0", long  # answered while frozen
    assert short["echoes"] == long["echoes"] == 0  # no message handler ran while frozen
    assert short["observer"].startswith("left/disconnect") and long["observer"].startswith("left/timeout")
    assert all(r["server_close"].startswith("1001") for r in (short, long))  # closed on resume, a close frame
    [(model, seen)] = replay(trace)
    assert not mismatches(model, seen), (model, seen)
