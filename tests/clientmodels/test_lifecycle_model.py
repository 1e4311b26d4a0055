"""rtlib.clientmodels.lifecycle: what an observer sees of a frozen, cached or discarded page, in virtual time."""

from __future__ import annotations

import dataclasses

import pytest

from rtlib.clientmodels.lifecycle import CHROMIUM_LIFECYCLE, Away, Event, observed
from rtlib.protocol.presence import PresenceConfig

TIMER = PresenceConfig(heartbeat_interval=3.0, timeout=6.0, sweep_interval=0.5)
PROBE = dataclasses.replace(TIMER, mode="probe")
R = CHROMIUM_LIFECYCLE


def kinds(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(e.type, e.reason) for e in events]


@pytest.mark.parametrize("config", [TIMER, PROBE], ids=["timer", "probe"])
def test_a_freeze_shorter_than_the_timeout_shows_only_at_resume_as_a_disconnect(config: PresenceConfig) -> None:
    ev = observed(config.mode, config, 100.0, 130.0, [Away("freeze", 110.2, 112.2)])
    assert kinds(ev) == [("joined", None), ("left", "disconnect"), ("joined", None)]
    assert ev[1].t == 112.2  # Chromium closes the resumed page's socket
    assert ev[2].t == pytest.approx(112.2 + R.reconnect)  # and rtlib-client.js reconnects and re-joins


@pytest.mark.parametrize("config", [TIMER, PROBE], ids=["timer", "probe"])
def test_a_long_freeze_times_out_by_the_servers_rule_and_re_joins_after_the_resume(config: PresenceConfig) -> None:
    ev = observed(config.mode, config, 100.0, 160.0, [Away("freeze", 110.2, 140.2)])
    assert kinds(ev) == [("joined", None), ("left", "timeout"), ("joined", None)]
    last_beat = 109.0 if config.mode == "timer" else 109.0 + 0.05 + R.probe_delay  # probes leave on 0.1 s ticks
    assert ev[1].t == config.popped_at(last_beat)  # nothing answered while frozen, in either mode
    assert ev[2].t == pytest.approx(140.2 + R.reconnect)


def test_the_leave_grace_delays_a_frozen_pages_timeout_but_not_its_disconnect() -> None:
    graced = dataclasses.replace(TIMER, leave_grace=1.5)
    long = observed("timer", graced, 100.0, 160.0, [Away("freeze", 110.2, 140.2)])
    assert long[1].t == TIMER.popped_at(109.0) + 1.5
    short = observed("timer", graced, 100.0, 130.0, [Away("freeze", 110.2, 116.2)])  # 6 s < timeout + grace
    assert kinds(short)[1] == ("left", "disconnect") and short[1].t == 116.2


def test_the_back_forward_cache_leaves_at_pagehide_and_re_joins_when_restored() -> None:
    ev = observed("timer", TIMER, 100.0, 140.0, [Away("bfcache", 110.0, 120.0)])
    assert [(e.t, e.type, e.reason) for e in ev] == [(100.0, "joined", None), (110.0, "left", "disconnect"),
                                                     (120.0 + R.restore_connect, "joined", None)]
    before_the_fix = dataclasses.replace(R, reconnect_on_restore=False)
    assert kinds(observed("timer", TIMER, 100.0, 140.0, [Away("bfcache", 110.0, 120.0)], before_the_fix)) == [
        ("joined", None), ("left", "disconnect")]  # the restored page viewed the task, unseen


def test_a_discarded_page_leaves_at_once_and_for_good() -> None:
    ev = observed("probe", PROBE, 100.0, 200.0, [Away("discard", 110.0)])
    assert [(e.t, e.type, e.reason) for e in ev] == [(100.0, "joined", None), (110.0, "left", "disconnect")]


def test_a_running_page_beats_and_a_freeze_after_a_timeout_re_joins_once() -> None:
    assert kinds(observed("timer", TIMER, 100.0, 200.0, [])) == [("joined", None)]  # beats every 3 s, 6 s timeout
    ev = observed("timer", TIMER, 100.0, 200.0, [Away("freeze", 110.2, 140.2), Away("freeze", 150.0, 151.0)])
    assert kinds(ev) == [("joined", None), ("left", "timeout"), ("joined", None), ("left", "disconnect"),
                         ("joined", None)]


def test_if_the_socket_survived_the_resume_a_short_freeze_would_show_nothing() -> None:
    # The "what if" the rule's fields allow: with the socket kept open on resume, the page's next beat comes in
    # time and the others see nothing; the recorded close is what makes a 2 s freeze visible.
    kept = dataclasses.replace(R, closes_on_resume=False)
    assert kinds(observed("timer", TIMER, 100.0, 130.0, [Away("freeze", 110.2, 112.2)], kept)) == [
        ("joined", None)]
