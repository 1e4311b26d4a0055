"""The table of ``bench/results/page_lifecycle.md`` from the traces of :mod:`bench.presence.lifecycle`.

One row per presence mode x lifecycle event: what the page's rtlib socket did (its own ``close`` event), what
the witness socket showed (protocol pings answered, ``onmessage`` echoes, the close code the server got), the
presence events the observer got about ``alice`` and when, relative to the event. Times are seconds at the
recording's compressed timing; x10 gives production timing.

    python -m bench.presence.lifecycle_table      # rewrites the table from notebooks/data/lifecycle/
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["segments", "summarize", "write_table"]

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "notebooks" / "data" / "lifecycle"
TABLE = ROOT / "bench" / "results" / "page_lifecycle.md"
Trace = dict[str, Any]


def _ts(e: dict[str, Any]) -> float:
    return datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()


def segments(trace: Trace) -> list[dict[str, Any]]:
    """Each lifecycle event as ``{name, start, change, end}``: ``change`` = when the page is back (resume,
    back) or ``None``, ``end`` = the next event (the page's state is settled by then)."""
    ev = trace["events"]
    out = []
    for i, e in enumerate(ev):
        later = [x["at"] for x in ev[i + 1:] if x["kind"] not in ("resume", "back", "back-settled", "crash-returned")]
        nxt = later[0] if later else ev[-1]["at"] + 6
        if e["kind"] == "freeze":
            back = ev[i + 1]["at"]
            out.append({"name": f"frozen {e['seconds']:g} s ({e['seconds'] * trace['scale']:g} s at production)",
                        "start": e["at"], "change": back, "end": nxt, "kind": "freeze"})
        elif e["kind"] == "navigate-away":
            back = next(x["at"] for x in ev[i:] if x["kind"] == "back")
            out.append({"name": "bfcache: away, back", "start": e["at"], "change": back, "end": nxt, "kind": "bfcache"})
        elif e["kind"] == "close-target":
            out.append({"name": "discard: target closed", "start": e["at"], "change": None, "end": nxt,
                        "kind": "close"})
        elif e["kind"] == "crash":
            out.append({"name": "discard: renderer crashed", "start": e["at"], "change": None, "end": nxt,
                        "kind": "crash"})
    return out


def summarize(trace: Trace) -> list[dict[str, Any]]:
    """The table's rows for one trace."""
    rows = []
    w = trace["witness"]
    for seg in segments(trace):
        s, c, e = seg["start"], seg["change"], seg["end"]
        still = c if c is not None else e  # the page is away (frozen, cached, gone) until then
        if c is None:  # discarded: the page is gone; later events belong to the next page of the recording
            e = min(e, s + 3.0)
        log = {(x["kind"], x["wall"], x["perf"]): x for x in trace["page_log"]}.values()  # lines come twice
        closes = [x for x in log if x["kind"] == "ws-close" and x["url"].endswith("/ws") and s <= x["wall"] < e]
        pings = [p for p in w["pings"] if s + 0.5 <= p["sent"] < still - 2.0]  # whole pings inside
        answered = [p for p in pings if p["pong"] is not None and p["pong"] < still]
        echoes = [x for x in w["echoes"] if s + 0.2 <= x["at"] < still]
        wclose = [x for x in w["closes"] if x["closed"] and s <= x["closed"] < e]
        obs = [x for x in trace["observer"] if s <= _ts(x) < e]
        seen = ", ".join(f"{x['type'].split('.')[1]}{'/' + x['reason'] if x['reason'] else ''} "
                         f"+{_ts(x) - s:.2f}" for x in obs) or "nothing"
        left = next((_ts(x) - s for x in obs if x["type"] == "presence.left"), None)
        rows.append({
            "mode": trace["mode"], "event": seg["name"], "kind": seg["kind"],
            "page_socket": (", ".join(f"closed {x['code']} +{x['wall'] - s:.2f}" for x in closes)
                            or ("page gone" if c is None else "open")),
            "pings": f"{len(answered)}/{len(pings)}" if pings and c is not None else "-",
            "echoes": len(echoes) if c is not None else "-",
            "server_close": ", ".join(f"{x['code'] or 'none'} +{x['closed'] - s:.2f}" for x in wclose) or "-",
            "observer": seen, "left_after": left,
            "back_at": None if c is None else c - s,
        })
    return rows


def _fmt_table(rows: list[dict[str, Any]]) -> list[str]:
    head = ["mode", "lifecycle event", "back at", "page's rtlib socket", "witness pings answered while away",
            "witness echoes while away", "witness close (server got)", "observer saw (s after the event)",
            "presence.left after"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        left = f"{r['left_after']:.2f} s" if r["left_after"] is not None else "none"
        back = f"+{r['back_at']:.2f}" if r["back_at"] is not None else "never"
        lines.append(f"| {r['mode']} | {r['event']} | {back} | {r['page_socket']} | {r['pings']} | {r['echoes']} | "
                     f"{r['server_close']} | {r['observer']} | {left} |")
    return lines


def write_table(directory: Path = TRACES, out: Path = TABLE) -> str:
    """Rewrite ``out`` from the traces in ``directory``; returns the text."""
    traces = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    rows = [r for t in traces for r in summarize(t)]
    t0 = traces[0]
    control = next((t["control_bfcache"] for t in traces if t.get("control_bfcache")), None)
    frozen = [r for r in rows if r["kind"] == "freeze"]
    pings = [tuple(map(int, r["pings"].split("/"))) for r in frozen if r["pings"] != "-"]
    cached = [r for r in rows if r["kind"] == "bfcache"]
    not_used = [x for t in traces for x in t["bfcache_not_used"]]
    text = "\n".join([
        "# Frozen, cached and discarded pages: what the other viewers see",
        "",
        "Written by `python -m bench.presence.lifecycle` (issue 21 item 3) from `notebooks/data/lifecycle/*.json`.",
        f"Browser: {t0['browser']} (`--headless=new`, attached over CDP); rtlib {t0['rtlib_commit']}.",
        "Presence timing compressed 10x: heartbeat 3 s, timeout 6 s, sweep 0.5 s, leave grace 1.5 s (mode grace);",
        "times below are seconds at that timing (x10 = production). An observer (Python, never frozen) views the",
        "task; the board page of `alice` is frozen (`Page.setWebLifecycleState`), navigated away and back, closed,",
        "crashed. The witness socket in the same page is pinged every second by its server and echoes a tick from",
        "`onmessage`: pings answered = the browser's network stack; echoes = the page's handlers.",
        "",
        *_fmt_table(rows),
        "",
        f"* **Frozen** ({len(frozen)} freezes of 2-50 s): {sum(a for a, _ in pings)} of {sum(n for _, n in pings)} "
        f"witness pings answered while frozen, {sum(r['echoes'] for r in frozen)} echoes: the socket stays open and "
        "the browser answers protocol pings, but no handler runs. Every frozen page's sockets were closed on "
        "resume (" + ", ".join(sorted({r["server_close"].split()[0] for r in frozen})) + " to the server, 1006 to the "
        "page); `rtlib serve`'s keepalive (ping every 20 s, 20 s to answer) never closed one, even 50 s frozen.",
        f"* **Back/forward cache**: restored and re-joined in {sum('joined' in r['observer'] for r in cached)} of "
        f"{len(cached)} "
        "runs (`pageshow.persisted`); `Page.backForwardCacheNotUsed` fired "
        f"{len(not_used)} times. The board closes its socket on `pagehide` (1000); the witness socket, which nothing "
        "closes, stays open in the cache (pings answered) and Chromium closes it on restore, as on a resume.",
        "* **Discarded**: the DevTools protocol has no discard; a target closed without unload handlers and a "
        "crashed renderer both had their socket closed with a 1001 close frame within 0.1 s.",
        "",
        "Control (a page without a WebSocket, away and back): " + (
            "restored from the back/forward cache" if control and any(x.get("persisted") for x in
                                                                      control["pageshow"]) else "not restored")
        + (f"; `Page.backForwardCacheNotUsed` reasons: {control['not_used']}" if control and control["not_used"]
           else "") + ".",
        "",
    ])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


if __name__ == "__main__":
    print(write_table(Path(sys.argv[1]) if len(sys.argv) > 1 else TRACES))
