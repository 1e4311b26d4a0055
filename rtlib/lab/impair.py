"""An in-process network impairment layer between a simulated client and its server.

Every frame, in both directions, is held for ``delay + U(0, jitter)`` seconds before it is sent or handed
to the client; frames held for different times overtake each other, which is real reordering at the
application. ``loss`` drops server-to-client ``task.updated`` frames only (a lossy delivery path: the
versions then show a gap); other frames are delayed but never dropped, so presence and resync replies
measure their own rules, not the loss model. Seeded by the client's RNG.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from rtlib.lab.scenario import Impairment
from rtlib.server.tasks import spawn

__all__ = ["Impairer"]

_UPDATED_PREFIX = '{"type":"task.updated"'  # the server always encodes "type" first


class Impairer:
    """Applies one :class:`~rtlib.lab.scenario.Impairment` to a client's frames."""

    def __init__(self, impairment: Impairment, rng: random.Random) -> None:
        self.imp = impairment
        self.rng = rng
        self.dropped = 0

    def _delay(self) -> float:
        return self.imp.delay + (self.rng.uniform(0, self.imp.jitter) if self.imp.jitter else 0.0)

    async def send(self, ws: Any, frame: bytes) -> None:
        """Send ``frame`` as a text frame now, or after the impairment's delay."""
        if not self.imp.active:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(frame, text=True)
            return
        asyncio.get_running_loop().call_later(self._delay(), _spawn_send, ws, frame)

    def receive(self, raw: str | bytes, handler: Callable[[str | bytes], None],
                on_drop: Callable[[str | bytes], None] | None = None) -> None:
        """Hand ``raw`` to ``handler`` now, or later, or never (a dropped ``task.updated``: ``on_drop``)."""
        if not self.imp.active:
            handler(raw)
            return
        if self.imp.loss and self.rng.random() < self.imp.loss:
            text = raw if isinstance(raw, str) else raw.decode()
            if text.startswith(_UPDATED_PREFIX):
                self.dropped += 1
                if on_drop is not None:
                    on_drop(raw)
                return
        asyncio.get_running_loop().call_later(self._delay(), handler, raw)


def _spawn_send(ws: Any, frame: bytes) -> None:
    async def go() -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(frame, text=True)

    spawn(go())
