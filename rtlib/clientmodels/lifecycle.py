"""What the other viewers see of a board page that Chromium freezes, puts in the back/forward cache or discards.

Recorded (``bench/presence/lifecycle.py``, Debian's Chromium 156 headless; ``bench/results/page_lifecycle.md``),
the rule this module plays back in virtual time:

* **Frozen** (``Page.setWebLifecycleState`` frozen, what Energy Saver does to a hidden tab): no timer and no
  message handler runs, so no heartbeat and no probe answer, in both presence modes. The socket stays open:
  Chromium's network stack answers the server's protocol pings (48 of 48 in a 50 s freeze), so
  ``rtlib serve``'s keepalive never closes it. The entry expires like any silent viewer's (``presence.left``
  reason ``timeout``, :meth:`~rtlib.protocol.presence.PresenceConfig.popped_at`). **On resume Chromium closes
  the page's sockets** (the server receives a 1001 close frame, the page sees 1006): an entry still present
  then leaves with reason ``disconnect`` (a clean close: no leave grace), and rtlib-client.js reconnects after
  its first backoff (0.25-0.5 s) and re-joins.
* **Back/forward cache**: the board closes its socket on ``pagehide`` (a clean ``presence.left`` reason
  ``disconnect`` at once) and Chromium keeps the page; restored (``pageshow.persisted``), the board reconnects
  and re-joins (from this commit's board.js; before it, the restored page never re-joined).
* **Discarded** (closed without unload handlers, or its renderer killed): the network stack closes the socket
  with 1001, so the entry leaves at once with reason ``disconnect``; the page never comes back (a reload is a
  new page and a new join).

:func:`observed` turns a page's lifecycle (:class:`Away` periods) into the presence events an observer gets;
``tests/clientmodels/test_lifecycle_model.py`` replays the recordings through it. For ``rtlib tune``'s
populations the same behaviour is an absence (the user is not viewing: see docs/protocol.md §9, "Frozen,
cached and discarded pages"): :func:`rtlib.model.population.expand` maps the ``frozen:``, ``bfcache:`` and
``discard:`` parts onto the suspended-page beat model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from rtlib.protocol.presence import PresenceConfig
from rtlib.protocol.probes import probe_schedule

__all__ = ["CHROMIUM_LIFECYCLE", "Away", "Event", "LifecycleRule", "observed"]

AwayKind = Literal["freeze", "bfcache", "discard"]


@dataclass(frozen=True)
class Away:
    """The page is frozen, cached or discarded from ``start`` to ``end`` (``inf``: discarded for good)."""

    kind: AwayKind
    start: float
    end: float = math.inf


@dataclass(frozen=True)
class Event:
    """A presence event about the page's user, as an observer gets it: ``type`` ``joined`` or ``left``."""

    t: float
    type: Literal["joined", "left"]
    reason: str | None = None


@dataclass(frozen=True)
class LifecycleRule:
    """The recorded Chromium behaviour (module docstring); each field can be varied to ask "what if"."""

    #: Chromium closes a frozen page's sockets when it resumes (recorded in every freeze, 2-50 s).
    closes_on_resume: bool = True
    #: The socket of a frozen page stays open while frozen (protocol pings answered by the network stack).
    open_while_frozen: bool = True
    #: From the close at resume to the re-join: rtlib-client.js's first backoff, U(0.25, 0.5) s, plus the
    #: handshake and welcome (recorded 0.3-0.6 s); the midpoint.
    reconnect: float = 0.4
    #: From ``pageshow`` (restored from the cache) to the re-join: a fresh connect, no backoff.
    restore_connect: float = 0.1
    #: The board reconnects when restored from the back/forward cache (board.js, from issue 21 item 3 on).
    reconnect_on_restore: bool = True
    #: The client's answer to a probe, from its message handler (as :func:`rtlib.clientmodels.chromium.probe_beats`).
    probe_delay: float = 0.003
    #: The client re-joins after its own ``presence.left`` timeout, from its message handler.
    rejoin_delay: float = 0.005


CHROMIUM_LIFECYCLE = LifecycleRule()


def _away_at(t: float, aways: list[Away]) -> Away | None:
    return next((a for a in aways if a.start <= t < a.end), None)


def _attempts(mode: str, joined: float, origin: float, until: float, interval: float, rule: LifecycleRule
              ) -> list[float]:
    """The beats a running page on a connection that joined at ``joined`` would send until ``until``: its
    heartbeat interval, started at the welcome ``origin`` (timer), or its answers to the server's probes, which
    are scheduled from the join (probe)."""
    if mode == "probe":
        return [p + rule.probe_delay for p in probe_schedule(joined, until, interval)]
    k, out = 1, []
    while (t := origin + k * interval) < until:
        out.append(t)
        k += 1
    return out


def _skip_frozen(attempts: list[float], freezes: list[Away]) -> list[float]:
    """Beats of a connection that survives ``freezes`` (only if Chromium did not close it on resume): none
    while frozen, and one at the resume for those missed (the overdue timer fires, the queued probe is
    answered)."""
    out = [t for t in attempts if not any(f.start <= t < f.end for f in freezes)]
    out += [f.end for f in freezes if any(f.start <= t < f.end for t in attempts)]
    return sorted(out)


def observed(mode: str, config: PresenceConfig, joined: float, end: float, aways: list[Away],
             rule: LifecycleRule = CHROMIUM_LIFECYCLE, origin: float | None = None) -> list[Event]:
    """The presence events an observer gets about a page that joined at ``joined`` and then went away as
    ``aways`` (sorted, not overlapping), up to ``end``; ``origin``: when its first connection's heartbeat
    interval started (its welcome; default ``joined``: a reconnect joins at its welcome). Expiry is the server's rule
    (:meth:`PresenceConfig.popped_at`, the leave grace included); a close is a clean disconnect (never held by
    the grace: the server received a close frame in every recorded case)."""
    events: list[Event] = [Event(joined, "joined")]
    aways = sorted(aways, key=lambda a: a.start)
    conn_start, present, last = joined, True, joined
    grid = joined if origin is None else origin
    while conn_start < end:
        # This connection lives until the next close: entering the cache, a discard, or (recorded) a resume.
        later = [a for a in aways if a.start >= conn_start]
        nxt = next((a for a in later if a.kind != "freeze" or rule.closes_on_resume), None)
        if nxt is None:
            closes = end
        elif nxt.kind == "freeze":
            closes = nxt.end
        else:
            closes = nxt.start  # pagehide closes it at once; a discard's network stack too
        silent_from = nxt.start if nxt else end  # no beats once away (frozen: no timer, no handler)
        beats = _skip_frozen(_attempts(mode, conn_start, grid, min(closes, end), config.heartbeat_interval, rule),
                             [a for a in later if a.kind == "freeze" and a.end <= silent_from])
        beats = [b for b in beats if b < silent_from]
        for b in [*beats, math.inf]:
            # Sweeps between beats (and, for the last one, up to the close) pop the entry.
            horizon = min(b, closes, end)
            while present and (popped := config.popped_at(last)) <= horizon:
                events.append(Event(popped, "left", "timeout"))
                present = False
                if _away_at(popped, aways) is None and popped + rule.rejoin_delay < silent_from:
                    # Running: rtlib-client.js re-joins from the handler of its own presence.left.
                    last, present = popped + rule.rejoin_delay, True
                    events.append(Event(last, "joined"))
            if b == math.inf or b >= closes or b > end:
                break
            if not present:  # a heartbeat of an expired entry re-joins it
                events.append(Event(b, "joined"))
                present = True
            last = b
        if closes >= end:
            break
        if present:
            events.append(Event(closes, "left", "disconnect"))
            present = False
        assert nxt is not None
        if nxt.kind == "discard" or nxt.end >= end:
            break
        back = nxt.end + (rule.reconnect if nxt.kind == "freeze" else rule.restore_connect)
        if nxt.kind == "bfcache" and not rule.reconnect_on_restore:
            break
        if back >= end:
            break
        conn_start, grid, last, present = back, back, back, True
        events.append(Event(back, "joined"))
    return events
