"""Flaps per viewer-hour of a Chrome tab that is hidden now and then, per presence alternative, from the model
that reproduces the recorded Chromium traces (``rtlib.clientmodels.chromium``; ``tests/model/test_chromium_traces.py``).

A viewer's tab alternates visible / hidden spells (exponential, means ``--visible`` / ``--hidden`` seconds:
assumptions, not measurements); viewers join at random times, so the interval's grid has every phase against
the monotonic minute; ``--phase`` is the monotonic clock's lead on Unix time (mod 60; default: this machine's).
Each flap is a ``presence.left`` (timeout) for a viewer whose tab was open; rtlib-client.js re-joins at once.
Seconds of CPU, not minutes: ``python -m bench.presence.chromium_flap_rates``.
"""

from __future__ import annotations

import argparse
import random
import time

from rtlib.clientmodels.chromium import probe_beats, server_view
from rtlib.clientmodels.heartbeat import ChromeHiddenTab
from rtlib.protocol.probes import probe_schedule

__all__ = ["flaps_per_viewer_hour", "main"]

ALTERNATIVES = {"timer": (False, 0.0), "visibility": (True, 0.0), "grace": (False, 15.0), "probe": (False, 0.0)}


def flaps_per_viewer_hour(alternative: str, *, hours: float, viewers: int, visible: float, hidden: float,
                          phase: float, seed: int = 1) -> float:
    visibility, grace = ALTERNATIVES[alternative]
    model = ChromeHiddenTab(30, 60, visible, hidden, 60, phase, visibility)
    rng, flaps = random.Random(seed), 0
    for _ in range(viewers):
        start = rng.uniform(0, 3600)
        end = start + hours * 3600 / viewers
        if alternative == "probe":  # answered from the message handler: no timer, no throttling
            beats = probe_beats(probe_schedule(start, end, 30))
        else:
            beats = [b.t for b in model.beats(start, end, rng)]
        flaps += len(server_view(beats, start, end, timeout=60, sweep_interval=5, grace=grace)[1])
    return flaps / hours


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=200.0, help="viewer-hours per alternative")
    ap.add_argument("--viewers", type=int, default=40)
    ap.add_argument("--visible", type=float, default=600.0, help="mean visible spell, s")
    ap.add_argument("--hidden", type=float, default=300.0, help="mean hidden spell, s")
    ap.add_argument("--phase", type=float, default=(time.monotonic() - time.time()) % 60)
    args = ap.parse_args(argv)
    print(f"30 s / 60 s / sweep 5 s; tab visible {args.visible:g} s / hidden {args.hidden:g} s on average; "
          f"monotonic phase {args.phase:.2f} s; {args.hours:g} viewer-hours each")
    for alt in ALTERNATIVES:
        rate = flaps_per_viewer_hour(alt, hours=args.hours, viewers=args.viewers, visible=args.visible,
                                     hidden=args.hidden, phase=args.phase)
        print(f"  {alt:10s} {rate:.2f} flaps per viewer-hour")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
