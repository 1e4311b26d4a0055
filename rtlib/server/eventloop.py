"""Which asyncio event loop ``rtlib serve`` runs on: uvloop when it is installed (a dependency on Linux), else
asyncio's own. ``bench/results/hot_path.md`` has the measurement behind the default."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["LOOPS", "loop_name", "run"]

T = TypeVar("T")
LoopChoice = Literal["auto", "uvloop", "asyncio"]
LOOPS: tuple[LoopChoice, ...] = ("auto", "uvloop", "asyncio")
log = logging.getLogger("rtlib.server.eventloop")


def _uvloop() -> Any | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def loop_name(choice: LoopChoice = "auto") -> str:
    """The loop ``run(choice)`` would use: ``uvloop`` or ``asyncio``; raises if uvloop is asked for but absent."""
    if choice == "asyncio":
        return "asyncio"
    if _uvloop() is None:
        if choice == "uvloop":
            raise RuntimeError("--loop uvloop: uvloop is not installed (pip install uvloop; Linux and macOS only)")
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T], choice: LoopChoice = "auto") -> T:
    """``asyncio.run(main)`` on the chosen loop (``auto``: uvloop if importable, else asyncio's default)."""
    if loop_name(choice) == "uvloop":
        with asyncio.Runner(loop_factory=_uvloop().new_event_loop) as runner:  # type: ignore[union-attr]
            return runner.run(main)
    return asyncio.run(main)
