"""``notebooks/data/manifest.json``: for every recorded Chromium trace under ``notebooks/data/`` (the fitting set
``chromium_*.json`` and the holdout set ``holdout/*.json.gz``), which browser and version, which flags, which
schedule, which presence timing and mode, and whether the Chromium model was fitted to it or never saw it.

    python -m bench.presence.trace_manifest     # rewrites notebooks/data/manifest.json from the traces

``tests/bench/test_trace_manifest.py`` checks that it lists every file there and agrees with each trace.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from bench.presence.chromium_presence import CHROMIUM_FLAGS, ROOT

__all__ = ["DATA_DIR", "MANIFEST", "OTHER_SETS", "data_files", "entry", "load", "manifest", "write_manifest"]

DATA_DIR = ROOT / "notebooks" / "data"
MANIFEST = DATA_DIR / "manifest.json"
# The fitting recordings predate the traces' own "chromium_flags"; bench/chromium_presence.py started Chromium
# with these same flags at every commit they name (6bc3fbc, 1859848, b36a1c3, 31b8e1b; checked with git grep).
_FIT_FLAGS_SOURCE = "start_chromium() of bench/chromium_presence.py at the recording's commit (flags unchanged since)"
_FIT_SCHEDULES = ("chosen by hand (issue 10 §2) to provoke and then explain flaps; not a sample of user "
                  "behaviour")


#: Recordings of another kind, with their own description: ``lifecycle/`` (frozen, cached and discarded pages,
#: bench/presence/lifecycle.py; bench/results/page_lifecycle.md) is neither fit nor holdout of the hidden-tab model.
OTHER_SETS = ("lifecycle",)


def data_files(directory: Path = DATA_DIR) -> list[Path]:
    """Every hidden-tab trace under ``directory`` (not the manifest itself, not :data:`OTHER_SETS`), sorted."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and p != directory / MANIFEST.name
                  and p.relative_to(directory).parts[0] not in OTHER_SETS)


def load(path: Path) -> dict[str, Any]:
    """A trace, gzipped (``.gz``) or not."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return json.loads(raw)


def _hidden_seconds(trace: dict[str, Any]) -> float:
    from rtlib.model.chromium_traces import hidden_periods  # the report's own definition of hidden time

    return round(sum(b - a for a, b in hidden_periods(trace)), 3)


def entry(path: Path, directory: Path = DATA_DIR) -> dict[str, Any]:
    """What the manifest says about one file."""
    trace = load(path)
    holdout = trace.get("holdout")
    return {
        "file": path.relative_to(directory).as_posix(),
        "set": "holdout" if holdout else "fit",
        "browser": trace["browser"],
        "browser_cdp": trace.get("browser_cdp"),
        "user_agent": trace.get("user_agent"),
        "flags": trace.get("chromium_flags") or list(CHROMIUM_FLAGS),
        "flags_source": "the trace" if "chromium_flags" in trace else _FIT_FLAGS_SOURCE,
        "presence_mode": trace["alternative"],
        "server_args": trace["server_args"],
        "presence": trace["presence"],
        "schedule": trace["schedule_spec"],
        "schedule_origin": (f"drawn at random, seeded: {holdout['tab_seed']}" if holdout else _FIT_SCHEDULES),
        "seed": holdout["seed"] if holdout else None,
        "tab_seed": holdout["tab_seed"] if holdout else None,
        "layout": holdout["layout"] if holdout else "one page A and one page B in one window, one Chromium process",
        "processes": holdout["processes"] if holdout else 1,
        "tabs_per_process": holdout["tabs_per_process"] if holdout else 1,
        "hidden_seconds": _hidden_seconds(trace),
        "recorded_from": trace["start"],
        "rtlib_commit": trace.get("rtlib_commit"),
    }


def manifest(directory: Path = DATA_DIR) -> dict[str, Any]:
    """The manifest of every file under ``directory``."""
    entries = [entry(p, directory) for p in data_files(directory)]
    return {
        "what": "every recorded Chromium trace in notebooks/data: fit = the Chromium model "
                "(rtlib/clientmodels/chromium.py) was fitted to it; holdout = recorded after the fit, with "
                "random seeded schedules (bench/presence/holdout.py), never used to fit anything",
        "fit": sum(e["set"] == "fit" for e in entries), "holdout": sum(e["set"] == "holdout" for e in entries),
        "traces": entries,
    }


def write_manifest(directory: Path = DATA_DIR) -> Path:
    path = directory / MANIFEST.name
    path.write_text(json.dumps(manifest(directory), indent=1) + "\n")
    return path


if __name__ == "__main__":
    print(f"wrote {write_manifest()}")
