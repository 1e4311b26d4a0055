"""Summarise ``bench.cost.server_cost --repeat N`` runs: per scenario and target, CPU µs/delivery (server + redis)
and p99 as min / median over the runs, and each median as a multiple of the same run's toy and floor medians.

Run: ``python -m bench.cost.hot_path_report bench/results/server_cost.json [more.json ...]`` (prints
markdown; each file is one run, so ratios are only ever taken inside one file).
Also: ``--profile FILE`` prints the top entries of a py-spy collapsed-stack profile (``RTLIB_BENCH_PYSPY``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

SCENARIO_NAMES = {"B": "S1 (1,000 receivers / 50 workspaces, 100 updates/s)",
                  "A": "S2 (200 receivers / 1 workspace, 100 updates/s)"}


def summary(path: Path) -> str:
    data = json.loads(path.read_text())
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in data["results"]:
        if "error" not in r:
            runs.setdefault((r["scenario"], r["target"]), []).append(r)
    loads = [r["loadavg_1min_before"] for r in data["results"] if "loadavg_1min_before" in r]
    others = [r["cpu_pct"]["other"] for r in data["results"] if "cpu_pct" in r]
    lines = [f"### {path.name}: {data['date']}", "",
             f"{data['parameters'].get('repeat', 1)} runs per target, alternating; send phase "
             f"{data['parameters']['duration']} s; 1-min load average before a case: {min(loads):.2f}–{max(loads):.2f}"
             f" (median {statistics.median(loads):.2f}); other processes during a case: median "
             f"{statistics.median(others):.0f}%, max {max(others):.0f}% of a core (2 cores, shared).", ""]
    for scen in [s for s in ("B", "A") if any(k[0] == s for k in runs)]:
        med = {t: statistics.median(r["cpu_us_per_delivery"]["total"] for r in rs)
               for (s, t), rs in runs.items() if s == scen}
        lines += [f"**{SCENARIO_NAMES.get(scen, scen)}**", "",
                  "| target | CPU µs/delivery min | median | server / redis (median run) | × toy | × floor "
                  "| × floor-uvloop | p99 ms min | median |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for (s, target), rs in runs.items():
            if s != scen:
                continue
            cpu = sorted(r["cpu_us_per_delivery"]["total"] for r in rs)
            mid = sorted(rs, key=lambda r: r["cpu_us_per_delivery"]["total"])[len(rs) // 2]
            p99 = [r["latency_ms"]["p99"] for r in rs]

            def ratio(ref: str, target: str = target, med: dict[str, float] = med) -> str:
                return f"{med[target] / med[ref]:.2f}" if ref in med else "–"

            lines.append(f"| {target} | {cpu[0]:.1f} | {med[target]:.1f} | "
                         f"{mid['cpu_us_per_delivery']['server']:.1f} / {mid['cpu_us_per_delivery']['redis']:.1f} | "
                         f"{ratio('toy')} | {ratio('floor')} | {ratio('floor-uvloop')} | {min(p99):.2f} | "
                         f"{statistics.median(p99):.2f} |")
        lines.append("")
    return "\n".join(lines)


def profile_top(path: Path, n: int = 15) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    rows = [f"{total} samples (py-spy, 250 Hz, running samples only). Self time:", "", "| % | frame |", "|---|---|"]
    rows += [f"| {100 * c / total:.1f} | `{f}` |" for f, c in own.most_common(n)]
    rows += ["", "Inclusive:", "", "| % | frame |", "|---|---|"]
    rows += [f"| {100 * c / total:.1f} | `{f}` |" for f, c in inclusive.most_common(n + 10)[6:]]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--profile", type=Path, action="append", default=[])
    args = parser.parse_args()
    for path in args.runs:
        print(summary(path))
    for path in args.profile:
        print(profile_top(path))
        print()


if __name__ == "__main__":
    main()
