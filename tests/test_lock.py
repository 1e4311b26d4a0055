"""Installs are reproducible: the environment the tests run in is the one ``constraints.txt`` pins.

Why: on 2026-12-07 the registry started serving msgspec 0.23, which formats docstrings differently, and a fresh
clone failed a test that had passed the day before. With every package pinned, a new release changes nothing
until ``make lock`` refreshes the file on purpose (and this suite runs on the refreshed set before it lands).
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"constraints.txt: {line!r} is not an exact pin (name==version)"
        pins[canonicalize_name(name)] = version.strip()
    return pins


def _declared() -> set[str]:
    """Every third-party distribution pyproject.toml names (core and every extra), whose marker applies here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    names = set()
    for spec in specs:
        req = Requirement(spec)
        if canonicalize_name(req.name) == "rtlib":
            continue
        if req.marker is None or req.marker.evaluate():
            names.add(canonicalize_name(req.name))
    return names


def test_every_declared_dependency_is_pinned() -> None:
    missing = sorted(_declared() - set(_pins()))
    assert not missing, f"pyproject.toml names {missing}, which constraints.txt does not pin: run `make lock`"


def test_installed_versions_match_the_lock() -> None:
    pins = _pins()
    wrong = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name in pins and dist.version != pins[name]:
            wrong[name] = f"{dist.version} installed, {pins[name]} pinned"
    assert not wrong, f"the environment differs from constraints.txt (reinstall with `make install`): {wrong}"


def test_lock_header_says_how_to_refresh() -> None:
    header = [line for line in LOCK.read_text().splitlines() if line.startswith("#")]
    assert any(re.search(r"make lock", line) for line in header)
