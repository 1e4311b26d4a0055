"""The event loop choice of rtlib serve: uvloop when installed (a Linux dependency), asyncio's otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest

from rtlib.server import eventloop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_is_always_available() -> None:
    assert eventloop.loop_name("asyncio") == "asyncio"
    assert eventloop.run(_loop_module(), "asyncio").startswith("asyncio")


def test_auto_prefers_uvloop_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    if eventloop._uvloop() is not None:
        assert eventloop.loop_name("auto") == "uvloop"
        assert eventloop.run(_loop_module(), "auto").startswith("uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert eventloop.loop_name("auto") == "asyncio"
    with pytest.raises(RuntimeError, match="not installed"):
        eventloop.loop_name("uvloop")
