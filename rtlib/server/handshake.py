"""The handshake path of one instance: what happens between a TCP connection and a WebSocket session.

In order: the admission gate (:mod:`rtlib.server.admission`) lets a few connections at a time be read and
checked; :meth:`Handshakes.check` serves the board's static files or checks the WebSocket request (Redis up,
token, workspace membership, the per-user cap, Origin, resume parameters) and refuses with a status and a reason
that is also logged; an accepted handshake is paced (:class:`~rtlib.protocol.ratelimit.Pacer`), because it goes
on to cost a subscription, a welcome and a session. What was accepted is attached to the connection as
:class:`Accepted` for the per-connection path (:mod:`rtlib.server.connection`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from rtlib.protocol.config import ServerConfig
from rtlib.protocol.errors import HandshakeError
from rtlib.protocol.history import EPOCH_RE, OFFSET_RE
from rtlib.protocol.ratelimit import Pacer
from rtlib.server.admission import AdmissionGate
from rtlib.server.auth import verify_token
from rtlib.server.static import StaticFiles

__all__ = ["WS_PATH", "Accepted", "Handshakes"]

log = logging.getLogger("rtlib.server.handshake")
WS_PATH = "/ws"


@dataclass(frozen=True, slots=True)
class Accepted:
    """What an accepted handshake established: who, where, until when, and the resume point if any."""

    user_id: str
    workspace: str
    expires_at: float
    resume: tuple[str, str] | None  # (offset, epoch)


class Handshakes:
    """Checks and paces this instance's handshakes (``process_request`` for websockets' ``serve``)."""

    def __init__(self, config: ServerConfig, secret: str, user_conns: Counter[str],
                 redis_up: Callable[[], bool], serves: Callable[[str], bool] | None = None) -> None:
        self.config, self.secret = config, secret
        self.user_conns = user_conns  # open connections per user on this instance (the per-user cap)
        self.redis_up = redis_up
        # Can the workspace's requests be carried out (on a Redis Cluster: its master is not lost)? A connection
        # accepted to a lost master's workspace could not be subscribed, and would be closed right after (1013).
        self.serves = serves
        self.static = StaticFiles()
        self.pacer = Pacer(config.handshake_rate, config.handshake_burst, config.handshake_max_wait)
        self.admission = AdmissionGate(config.handshake_concurrency)

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        refusal = self.check(connection, request)
        connection.checked()  # type: ignore[attr-defined]  # its admission slot (rtlib.server.admission)
        if refusal is not None:
            return refusal
        # Refusals above are cheap; an accepted handshake goes on to cost a subscription, a welcome and a
        # session, so accepted ones are paced: a storm waits here instead of stalling the open connections.
        wait = self.pacer.reserve(time.monotonic())
        if wait is None:
            return self._refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE,
                                "too many new connections on this instance; retry with backoff")
        if wait > 0:
            await asyncio.sleep(wait)
        return None

    def check(self, connection: ServerConnection, request: Request) -> Response | None:
        """A response that ends the handshake (a static file, or a refusal), or None to accept it; an accepted
        connection gets ``connection.rtlib``, an :class:`Accepted`."""
        url = urlsplit(request.path)
        if self.static.handles(url.path):  # the board page: plain GETs, no token, no Origin rule
            return self.static.respond(connection, url.path)
        if url.path != WS_PATH:
            return self._refuse(connection, HTTPStatus.NOT_FOUND, f"no endpoint at {url.path}; use {WS_PATH}")
        query = parse_qs(url.query)
        try:
            if not self.redis_up():
                raise HandshakeError.unavailable("this instance lost Redis and is reconnecting; try another")
            claims = verify_token(self.secret, (query.get("token") or [None])[0])
            workspace = (query.get("workspace") or [""])[0]
            if not workspace:
                raise HandshakeError.forbidden("missing workspace parameter")
            if workspace not in claims.workspaces:  # token workspaces are valid ids, so W is one too
                raise HandshakeError.forbidden(f"user is not a member of workspace {workspace!r}")
            if self.serves is not None and not self.serves(workspace):
                raise HandshakeError.unavailable("this workspace's Redis Cluster master is being replaced; retry")
            if self.user_conns[claims.user_id] >= self.config.max_connections_per_user:
                raise HandshakeError.too_many("too many connections for this user on this instance")
            origin = request.headers.get("Origin")
            allowed = self.config.allowed_origins
            if origin is not None and allowed is not None and origin not in allowed:
                raise HandshakeError.forbidden(f"origin {origin!r} is not allowed")
        except HandshakeError as exc:  # logged with its reason (the query, with its token, never is)
            return self._refuse(connection, exc.status, exc.message)
        resume = None
        if "offset" in query or "epoch" in query:
            offset, epoch = (query.get("offset") or [""])[0], (query.get("epoch") or [""])[0]
            if not OFFSET_RE.fullmatch(offset) or not EPOCH_RE.fullmatch(epoch):
                return self._refuse(connection, HTTPStatus.BAD_REQUEST,
                                    "resume needs both offset=MS-SEQ and epoch=DIGITS")
            resume = (offset, epoch)
        connection.rtlib = Accepted(claims.user_id, workspace, claims.expires_at, resume)  # type: ignore[attr-defined]
        return None

    def _refuse(self, connection: ServerConnection, status: HTTPStatus, reason: str) -> Response:
        log.info("%s: refused a handshake from %s: %d %s (%s)", self.config.server_id, connection.remote_address,
                 status, status.phrase, reason)
        return connection.respond(status, reason + "\n")
