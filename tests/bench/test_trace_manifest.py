"""``notebooks/data/manifest.json`` lists every file under ``notebooks/data/`` and says what the trace says:
browser and version, flags, schedule, presence timing, fit or holdout, seed (``bench/presence/trace_manifest.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is a package of the repository, not installed

from bench.presence.trace_manifest import DATA_DIR, MANIFEST, data_files, manifest  # noqa: E402


def test_the_manifest_covers_every_file_in_notebooks_data() -> None:
    listed = {e["file"] for e in json.loads(MANIFEST.read_text())["traces"]}
    on_disk = {p.relative_to(DATA_DIR).as_posix() for p in data_files()}
    assert listed == on_disk, f"not listed: {sorted(on_disk - listed)}; listed but gone: {sorted(listed - on_disk)}"


def test_the_manifest_says_what_the_traces_say() -> None:
    assert json.loads(MANIFEST.read_text()) == manifest(), "re-run: python -m bench.presence.trace_manifest"


def test_every_entry_has_its_provenance() -> None:
    entries = json.loads(MANIFEST.read_text())["traces"]
    assert {e["set"] for e in entries} == {"fit", "holdout"}
    assert sum(e["set"] == "fit" for e in entries) == 9, "the fitting set is the nine chromium_*.json"
    for e in entries:
        assert e["browser"].startswith("Chromium ") and e["flags"] and e["schedule"] and e["presence"]["timeout"]
        assert (e["seed"] is not None) == (e["set"] == "holdout"), e["file"]
        assert e["set"] == "fit" or e["file"].startswith("holdout/")
