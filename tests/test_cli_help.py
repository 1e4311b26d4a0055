"""``rtlib --help``: every option of every command has a help line and shows its default; ``rtlib --version``."""

from __future__ import annotations

import argparse
import re

import pytest

from rtlib import __version__
from rtlib.cli import build_parser, main


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Help text unwrapped (argparse wraps at $COLUMNS, and would split sim-results at its hyphen)."""
    monkeypatch.setenv("COLUMNS", "1000")


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"rtlib": parser, **sub.choices}


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("name", list(commands()))
def test_every_option_has_a_help_line_and_its_default(name: str) -> None:
    parser = commands()[name]
    text = " ".join(parser.format_help().split())
    for action in options(parser):
        option = action.option_strings[-1]
        assert action.help and action.help.strip(), f"rtlib {name} {option} has no help line"
        shows_default = action.default not in (None, "", argparse.SUPPRESS) and action.default is not False
        if shows_default and "default" not in action.help:
            assert re.search(rf"{re.escape(option)}\b.*?\(default: {re.escape(str(action.default))}\)", text), (
                f"rtlib {name} --help does not show {option}'s default {action.default!r}")


def test_serve_help_shows_the_defaults_a_newcomer_asks_about() -> None:
    text = " ".join(commands()["serve"].format_help().split())
    assert "(default: 8765)" in text and "(default: 30.0)" in text
    text = " ".join(commands()["simulate"].format_help().split())
    for default in ("(default: 200)", "(default: 60.0)", "(default: 0.1)"):
        assert default in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"rtlib {__version__}"
