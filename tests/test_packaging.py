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
    assert f"python>={required}" in conda
    assert "redis-server" in conda  # the embedded Redis finds it in $CONDA_PREFIX/bin
    assert pip == ["-e .[dev]"]  # every Python dependency comes from pyproject, in one place
    assert "conda-forge" in env["channels"]
    assert "dev" in pyproject["project"]["optional-dependencies"]
    assert pyproject["project"]["scripts"]["rtlib"] == "rtlib.cli:main"
