"""Admission of new connections: a storm of them must not stall the open ones.

The event loop accepts a storm's connections a hundred or more per iteration, and for each one
``websockets`` at once starts a handler task whose first steps (the handshake's futures, then reading and
parsing the request, the token check, :meth:`~rtlib.server.handshake.Handshakes.process_request`) run in
the next iterations. Measured with ``bench/hostile/loopspy`` during a 400-connection storm: 100-175 such steps per
iteration, 11-24 ms each, during which no open connection's frame is read or written.
:class:`~rtlib.protocol.ratelimit.Pacer` spaces the handshakes that *passed* those checks; this gate bounds
everything before them: at most ``limit`` new connections are between "accepted" and "checked" at once. The
others stop reading (``transport.pause_reading()``: their requests wait unread in the kernel's socket buffer,
costing the loop nothing), and ``websockets`` does not start them until a slot frees, in arrival order.
A slot bounds work, not waiting: a connection that has not been checked ``hold`` seconds after it started
(a client that connects and sends nothing, or half a request) gives its slot back and goes on without one,
so idle sockets cannot block admission (at worst ``limit`` admissions per ``hold``).

``websockets.asyncio.server.serve(create_connection=...)`` takes the connection class: :func:`gated` builds
one whose ``connection_made`` asks the gate before it runs ``ServerConnection.connection_made`` (which starts
the handler task). The server calls :meth:`AdmissionGate.release` when its checks are done.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection

__all__ = ["AdmissionGate", "gated"]


class Admittable(Protocol):
    """What the gate holds: a new connection that can be started, found gone, or aborted."""

    def admit(self) -> None: ...

    def gone(self) -> bool: ...

    def abort(self) -> None: ...


class AdmissionGate:
    """At most ``limit`` new connections between accepted and checked; the others wait in arrival order."""

    def __init__(self, limit: int, hold: float = 0.05) -> None:
        if limit < 1 or hold <= 0:
            raise ValueError(f"need limit >= 1 and hold > 0, got {limit}, {hold}")
        self.limit, self.hold = limit, hold
        self.active = 0
        self.waiting: deque[Admittable] = deque()
        self._turn: asyncio.Handle | None = None
        #: connections that had to wait for a slot (a storm's size, for the logs and the benchmarks)
        self.deferred = 0

    def enter(self, conn: Admittable) -> bool:
        """A connection was accepted: True if it holds a slot and may start now; else it waits (the caller
        paused its reading) and :meth:`Admittable.admit` is called once a slot frees, unless it is gone."""
        if self.active < self.limit and not self.waiting:
            self.active += 1
            return True
        self.waiting.append(conn)
        self.deferred += 1
        return False

    def release(self) -> None:
        """A connection that held a slot was checked (accepted or refused) or is gone."""
        self.active -= 1
        if self.waiting and self._turn is None:
            # call_soon runs after every callback already ready: the open connections' frames go first.
            self._turn = asyncio.get_running_loop().call_soon(self._admit_next)

    def _admit_next(self) -> None:
        self._turn = None
        while self.waiting and self.active < self.limit:
            conn = self.waiting.popleft()
            if conn.gone():  # the client gave up while it waited
                continue
            self.active += 1
            conn.admit()

    def close(self) -> None:
        """Server shutdown: abort the connections still waiting (no handler knows them yet)."""
        while self.waiting:
            self.waiting.popleft().abort()


def gated(gate: AdmissionGate) -> type[ServerConnection]:
    """A ``ServerConnection`` class (for ``serve(create_connection=...)``) whose new connections go through
    ``gate`` before ``websockets`` starts their handler (and so before their opening handshake is read).
    ``connection.checked()`` gives its slot back; so does losing the connection first."""

    class GatedConnection(ServerConnection):
        _admitted = False
        _holding = False
        _lost = False
        _waiting_transport: Any = None
        _expiry: asyncio.TimerHandle

        def connection_made(self, transport: Any) -> None:
            self._waiting_transport = transport
            if gate.enter(self):
                self.admit()
            else:
                transport.pause_reading()

        def admit(self) -> None:
            self._admitted = self._holding = True
            self._expiry = self.loop.call_later(gate.hold, self.checked)  # a silent client keeps no slot
            transport = self._waiting_transport
            super().connection_made(transport)  # starts the websockets handler task
            if not transport.is_reading():
                transport.resume_reading()

        def checked(self) -> None:
            if self._holding:
                self._holding = False
                self._expiry.cancel()
                gate.release()

        def gone(self) -> bool:
            return self._lost or self._waiting_transport.is_closing()

        def abort(self) -> None:
            self._waiting_transport.abort()

        def connection_lost(self, exc: Exception | None) -> None:
            self._lost = True
            self.checked()
            if self._admitted:  # else websockets never saw this connection
                super().connection_lost(exc)

    return GatedConnection
