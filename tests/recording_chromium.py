"""The real Chromium that the recording tests drive (Debian's, started by hand and attached over CDP), or
:func:`conftest.missing`: a skip, or under CI=true a failure. Also puts the repository on ``sys.path``, because
``bench/`` (the recorders) is a package of the repository, not installed."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from conftest import missing

__all__ = ["ROOT", "chromium_or_missing"]

ROOT = Path(__file__).resolve().parents[1]


def chromium_or_missing() -> str:
    """The Chromium binary (``RTLIB_CHROMIUM`` or on PATH), once Playwright is importable too; call it at module
    level, before importing from ``bench``."""
    binary = os.environ.get("RTLIB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:  # pragma: no cover - .ci/run installs Debian's chromium
        missing("no Chromium binary: apt-get install chromium (or set RTLIB_CHROMIUM)")
    try:
        import playwright  # noqa: F401, PLC0415
    except ImportError:
        missing("playwright is not installed (pip install -e '.[dev]')")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    assert binary is not None
    return binary
