"""Measurements of one broker-outage case, from what its clients recorded and its servers logged, and the report.

Definitions (each is a column of ``bench/results/broker_outage.md``):

* **sockets closed**: client sockets the servers closed (the clients never close before the end), by code;
* **reconnects**: welcomes after a tab's first, and refused attempts (503 or connection refused);
* **acked lost**: (client, acked update) pairs where the update is in Redis's history at the end, was acked
  after the client's first welcome, and never reached the client, which was not told to reload after it
  (``session.resync`` or a ``recovered: false`` welcome). Updates acked and then lost by Redis itself (a restart
  without persistence, or the last second of an append-only file) are counted apart: nothing can deliver them;
* **late**: delivery delay of each ``task.updated`` (arrival minus the moment Redis stored it: its offset) for
  events stored from 2 s before the fault to 10 s after its end; also how long the slowest write waited for its
  ack (from its first send, through ``unavailable`` retries);
* **false departures**: ``presence.left`` (``timeout``) of viewers that kept beating; the crashed viewers' own
  departures are checked against timeout + fault length + sweep interval from their last beat;
* **duplicates**: an update delivered twice to one client (across its reconnects and catch-ups);
* **caught up**: per client, how long after the fault's end it was connected (its first welcome after the end,
  if it was closed) and had every event stored before the end that it ever got (or its reload, if told to
  resync); p99 and max over clients;
* **catch-up cost**: from the instances' logs, the Redis commands each instance sent to catch its connections
  up: one ``SUBSCRIBE`` for all rooms plus the history reads, per workspace.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.resilience.outage_clients import Tab

__all__ = ["NOTES", "analyse", "checks", "markdown"]

_CAUGHT = re.compile(r"(?P<srv>i\d+): Redis answers again after (?P<down>[\d.]+) s down; caught up (?P<conns>\d+) "
                     r"connections in (?P<ws>\d+) workspaces: (?P<replayed>\d+) events replayed, (?P<resynced>\d+) "
                     r"told to resync, (?P<released>\d+) held events released; Redis commands: (?P<sub>\d+) "
                     r"SUBSCRIBE for all \+ (?P<per>[\d/]+) per workspace \((?P<all>\d+) in all\), (?P<ms>[\d.]+) ms")


def _stored(frame: dict[str, Any]) -> float:
    """When Redis stored and published an event: its offset's milliseconds (Redis's clock, this host's clock).
    Not the envelope's timestamp: that is taken before the store call, so an update sent just before a pause and
    carried out after it would count the pause as delivery delay."""
    return int(frame["offset"].split("-")[0]) / 1000


def _q(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 3)


def analyse(name: str, kind: str, seconds: float, tabs: list[Tab], logs: list[str], times: dict[str, float],
            history: dict[str, set[str]], timeout: float, sweep: float, design: float | None = None
            ) -> dict[str, Any]:
    """The measurements of one case (see the module docstring); ``seconds`` the fault's length as run,
    ``design`` as named (they differ under ``--scale``)."""
    fault, back, end = times["fault"], times["back"], times["end"]
    acks = [(t.workspace, a) for t in tabs for a in t.acks]
    out: dict[str, Any] = {"case": name, "kind": kind, "seconds": seconds, "clients": len(tabs),
                           "design_seconds": seconds if design is None else design}
    # --- sockets and reconnects ---------------------------------------------------------------------------------
    codes = Counter(f"{code} {reason}".strip() for t in tabs for _, code, reason in t.closes)
    out["sockets_closed"] = sum(codes.values())
    out["close_codes"] = dict(codes)
    out["clients_closed"] = sum(1 for t in tabs if t.closes)
    out["reconnects"] = sum(max(0, len(t.connects) - 1) for t in tabs)
    out["refused_attempts"] = sum(t.refused for t in tabs)
    out["resynced_clients"] = sum(1 for t in tabs if t.resyncs)
    out["unavailable_errors"] = sum(t.unavailable for t in tabs)
    # --- acked updates ------------------------------------------------------------------------------------------
    kept = [(ws, a) for ws, a in acks if a.token in history.get(ws, set())]
    out["acked"] = len(acks)  # (the editors stop before the history is read: every ack is in the count)
    out["acked_lost_by_redis"] = len(acks) - len(kept)
    lost_pairs, lost_tokens, duplicates = 0, set(), 0
    for t in tabs:
        if not t.connects:
            continue
        tokens = [f["payload"]["changes"].get("u") for _, f in t.received if f["type"] == "task.updated"]
        got = set(tokens)
        duplicates += len(tokens) - len(got)
        first = t.connects[0][0]
        # A client closed at the end (it had not reconnected yet) would be replayed what it missed on resume:
        # only updates acked a second before its last close count.
        covered = t.closes[-1][0] - 1.0 if t.closes and t.closes[-1][0] > t.connects[-1][0] else end - 1.0
        for ws, a in kept:
            if ws != t.workspace or a.at < first or a.at > covered or a.token in got:
                continue
            if any(r > a.at for r in t.resyncs):
                continue  # told to reload after it: the reload has it
            lost_pairs += 1
            lost_tokens.add(a.token)
    out["acked_lost_pairs"], out["acked_lost_updates"] = lost_pairs, len(lost_tokens)
    out["duplicates"] = duplicates
    out["writes_retried"] = sum(1 for _, a in acks if a.attempts > 1)
    out["write_wait_max_s"] = round(max((a.at - a.first for _, a in acks), default=0.0), 3)
    after = [a.at - back for _, a in acks if a.at >= back]
    out["first_ack_after_s"] = round(min(after), 3) if after else None
    # --- delivery delays ----------------------------------------------------------------------------------------
    delays, baseline = [], []
    for t in tabs:
        for at, f in t.received:
            if f["type"] != "task.updated":
                continue
            stamped = _stored(f)
            if fault - 2 <= stamped <= back + 10:
                delays.append(at - stamped)
            elif stamped < fault - 2:
                baseline.append(at - stamped)
    out["events_in_window"] = len(delays)
    out["late_over_1s"] = sum(1 for d in delays if d > 1.0)
    out["delay_p50_s"], out["delay_p99_s"] = _q(delays, 0.5), _q(delays, 0.99)
    out["delay_max_s"] = round(max(delays), 3) if delays else None
    out["baseline_delay_p99_s"] = _q(baseline, 0.99)
    # --- presence -----------------------------------------------------------------------------------------------
    departures: dict[tuple[str, str, str], float] = {}
    for t in tabs:
        if t.role != "observer":
            continue
        for at, f in t.received:
            if f["type"] == "presence.left":
                key = (f["payload"]["userId"], f["payload"]["reason"], f["timestamp"])
                departures[key] = min(at, departures.get(key, at))
    crashed = {t.user: t for t in tabs if t.crashed_at is not None}
    viewers = {t.user for t in tabs if t.role == "viewer" and t.workspace == "w0"}
    false = [k for k in departures if k[1] == "timeout" and k[0] in viewers and k[0] not in crashed]
    out["false_departures"] = len(false)
    out["disconnect_departures"] = sum(1 for k in departures if k[1] == "disconnect" and k[0] in viewers)
    bound = timeout + seconds + sweep
    detections = []
    for user, t in crashed.items():
        last = max([b for b in t.beats if b <= (t.crashed_at or 0)], default=None)
        seen = [at for (u, reason, _), at in departures.items() if u == user and reason == "timeout"]
        detections.append({"user": user, "after_last_beat_s": round(min(seen) - last, 2) if seen and last else None,
                           "bound_s": round(bound, 2)})
    out["crash_detection"] = detections
    # --- caught up ----------------------------------------------------------------------------------------------
    before: dict[str, set[str]] = {}
    for t in tabs:
        for _, f in t.received:
            if f["type"] == "task.updated" and _stored(f) <= back:
                before.setdefault(t.workspace, set()).add(f["payload"]["changes"]["u"])
    caught = []
    for t in tabs:
        if not t.connects:
            continue
        arrivals = [at for at, f in t.received if f["type"] == "task.updated"
                    and f["payload"]["changes"]["u"] in before.get(t.workspace, set())]
        closed_in_fault = any(fault <= at <= back + 60 for at, _, _ in t.closes)
        rejoined = [at for at, _ in t.connects if at >= fault] if closed_in_fault else []
        done = max([*arrivals, *[r for r in t.resyncs if r >= back], *rejoined[:1]], default=back)
        caught.append(max(0.0, done - back))
    out["caught_up_p99_s"], out["caught_up_max_s"] = _q(caught, 0.99), _q(caught, 1.0)
    # --- the instances' own account ----------------------------------------------------------------------------
    recoveries = [m.groupdict() for log in logs for m in _CAUGHT.finditer(log)]
    out["recoveries"] = [{k: (v if k in ("srv", "per") else float(v)) for k, v in r.items()} for r in recoveries]
    out["grace_closes_logged"] = sum(log.count("closing ") for log in logs)
    return out


def checks(results: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """The issue's "done when", each with whether the run meets it and the numbers that say so."""
    by = {r["case"]: r for r in results}
    out: list[tuple[str, bool, str]] = []
    pauses = [r for r in results if r["kind"] == "pause" and r["design_seconds"] <= 30]
    if pauses:
        bad = [r["case"] for r in pauses if r["sockets_closed"] or r["acked_lost_pairs"] or r["false_departures"]
               or (r["caught_up_p99_s"] or 0) > 2.0 or r["duplicates"]]
        out.append(("Redis paused <= 30 s: 0 sockets closed, 0 acked updates lost, 0 false departures, no "
                    "duplicate, every connection caught up within 2 s (p99)", not bad,
                    "; ".join(f"{r['case']}: closed {r['sockets_closed']}, lost {r['acked_lost_pairs']}, false "
                              f"{r['false_departures']}, caught up p99 {_fmt(r['caught_up_p99_s'])} s"
                              for r in pauses)))
    if (r := by.get("restart-empty")) is not None:
        out.append(("Redis restarted without persistence: 0 sockets closed, every client told to resync, nothing "
                    "acked lost that Redis still has", not r["sockets_closed"] and r["resynced_clients"] ==
                    r["clients"] and not r["acked_lost_pairs"],
                    f"closed {r['sockets_closed']}, resync {r['resynced_clients']}/{r['clients']}, lost "
                    f"{r['acked_lost_pairs']} (Redis itself lost {r['acked_lost_by_redis']} acked before the kill)"))
    if (r := by.get("pause-30")) is not None:
        seen = [d["after_last_beat_s"] for d in r["crash_detection"]]
        out.append(("A client crashed during a 30 s outage is announced within timeout + 30 s + sweep",
                    all(x is not None and x <= d["bound_s"] for x, d in zip(seen, r["crash_detection"], strict=True)),
                    f"{', '.join(_fmt(x) for x in seen)} s after its last beat (bound "
                    f"{r['crash_detection'][0]['bound_s']:g} s)"))
    recoveries = [c for r in results for c in r["recoveries"] if c["ws"]]
    if recoveries:
        per = sorted({c["per"] for c in recoveries})
        out.append(("Catch-up costs Redis commands per instance per workspace, not per connection",
                    per == ["1"] and all(c["sub"] == 1 for c in recoveries),
                    f"every recovery: 1 SUBSCRIBE for all rooms + {'/'.join(per)} history read per workspace, for "
                    f"{min(c['conns'] for c in recoveries):g}-{max(c['conns'] for c in recoveries):g} connections "
                    f"in {max(c['ws'] for c in recoveries):g} workspaces"))
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def markdown(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """The report: one row per case, then the catch-up cost and the crash detections."""
    lines = [
        "# Broker outages: what clients see (issue 20)",
        "",
        f"`python -m bench.resilience.broker_outage` ({meta['date']} UTC, {meta['wall_seconds']} s wall, "
        f"scale {meta['scale']:g}: {'real durations' if meta['scale'] == 1 else 'every duration compressed'}; "
        f"one run per case, seed {meta['seed']}, all cases at once). "
        "Each case: a fresh `redis-server`, `rtlib serve` instances with the defaults (heartbeat 30 s, timeout "
        "60 s, sweep 5 s, `--broker-grace` 30 s), 32 clients behaving like the browser client: w0 has 20 viewers "
        "(half per instance, beating at random phases), 2 editors (an update a second, retried after "
        "`unavailable`), 2 observers; w1 and w2 have 3 viewers and an editor. Two viewers crash (silent, socket "
        "open) 1 s into the fault. Definitions: `bench/resilience/outage_report.py`.",
        "",
        "| case | sockets closed | reconnects | told to resync | acked lost (Redis still has them) | acked lost "
        "by Redis itself | duplicates | `unavailable` errors | slowest write (s) | late events > 1 s / in window "
        "| delay max (s) | false departures (`timeout`) / `disconnect` | caught up p99 / max (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = checks(results)
    for r in results:
        lines.append(
            f"| {r['case']} | {r['sockets_closed']} / {r['clients']} | {r['reconnects']} "
            f"(+{r['refused_attempts']} refused) | {r['resynced_clients']} | {r['acked_lost_pairs']} "
            f"({r['acked']} acked) | {r['acked_lost_by_redis']} | {r['duplicates']} | {r['unavailable_errors']} | "
            f"{_fmt(r['write_wait_max_s'])} | {r['late_over_1s']} / {r['events_in_window']} | "
            f"{_fmt(r['delay_max_s'])} | {r['false_departures']} / {r['disconnect_departures']} | "
            f"{_fmt(r['caught_up_p99_s'])} / {_fmt(r['caught_up_max_s'])} |")
    lines += ["", "## The issue's \"done when\"", ""]
    lines += [f"* {'**met**' if ok else '**NOT met**'}: {what}. {numbers}." for what, ok, numbers in verdicts]
    lines += ["", "## Catch-up cost (each instance's log line on recovery)", "",
              "| case | instance | down (s) | connections | workspaces | Redis commands: SUBSCRIBE + history reads "
              "per workspace (all) | events replayed | told to resync | ms |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for c in r["recoveries"]:
            lines.append(f"| {r['case']} | {c['srv']} | {c['down']:g} | {c['conns']:g} | {c['ws']:g} | "
                         f"{c['sub']:g} + {c['per']} ({c['all']:g}) | {c['replayed']:g} | {c['resynced']:g} | "
                         f"{c['ms']:g} |")
    lines += ["", "## Crashed viewers: announced after their last beat (bound: timeout + fault + sweep)", "",
              "| case | viewer | announced after (s) | bound (s) |", "|---|---|---|---|"]
    for r in results:
        for d in r["crash_detection"]:
            lines.append(f"| {r['case']} | {d['user']} | {_fmt(d['after_last_beat_s'])} | {d['bound_s']:g} |")
    lines += ["", "Close codes: " + "; ".join(f"{r['case']}: {r['close_codes']}" for r in results if r["close_codes"]),
              "", "## Reading it", "", *NOTES, ""]
    return "\n".join(lines)


#: What the columns cannot say by themselves (the same for every run: they follow from the design,
#: docs/protocol.md §11b).
NOTES = [
    "* A pause shorter than the pub/sub check (a probe every 1 s, 2 s to come back) is not noticed: requests wait "
    "for Redis, nothing else happens (`pause-1`: no `unavailable` error). Longer ones are answered `unavailable` "
    "(retry after 1 s); the slowest write is the pause itself, retried until Redis answers, stored once (the "
    "`ref`).",
    "* The events replayed by a catch-up are those Redis had stored and published when it stopped, whose delivery "
    "the old subscriber never finished: nothing else can be missed while no instance can write.",
    "* `pause-60` is past `--broker-grace` (30 s): every socket is closed 1013 between 30 and 40 s (spread), "
    "clients are refused 503 until Redis answers and then resume (`recovered: true`, so nothing is lost); their "
    "presence goes (`disconnect`, when Redis answers) and comes back with the re-join. The late events and the "
    "caught-up time are the clients' reconnect backoff (`retryAfter` 10 s, jittered).",
    "* `restart-empty`: Redis lost every task, version and presence entry (the acked updates it lost are counted "
    "apart); every client is told to resync on its open connection. The crashed viewers are never announced: "
    "their entries went with Redis, and the clients' reload (`presence.state` after the re-join) no longer lists "
    "them.",
    "* `stall-*`: events for the stalled instance's clients wait in Redis and in its sockets for the stall (the "
    "late events), and are delivered, in order, when it runs again. Up to timeout - heartbeat (30 s) nobody is "
    "announced as left. `stall-60` shows the documented limit: the other instance sweeps the stalled one's "
    "viewers (it cannot tell a stall from a crash), and they re-join on their next beat. `solo-stall-60`: the "
    "instance's own sweeps do not count its stall (0 departures; the crashed viewers are announced the stall "
    "later, within the bound).",
]
