"""Connection tokens: HMAC-SHA256 JWTs carrying a user id, the user's workspaces and an expiry.

``issue_token`` is what ``rtlib token`` prints; ``verify_token`` is the server's handshake check. Both
raise :class:`~rtlib.errors.HandshakeError` so the status (401/403) is decided in one place.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import jwt

from rtlib.errors import HandshakeError

__all__ = ["DEFAULT_TTL", "Claims", "issue_token", "verify_token"]

DEFAULT_TTL = 3600.0
_ALGORITHM = "HS256"
_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


@dataclass(frozen=True)
class Claims:
    """Who a verified token speaks for."""

    user_id: str
    workspaces: frozenset[str]
    expires_at: float


def _check_secret(secret: str | None) -> str:
    if not secret:
        raise ValueError("a signing secret is required (--secret or the RTLIB_SECRET environment variable)")
    return secret


def issue_token(
    secret: str, user_id: str, workspaces: list[str], ttl: float = DEFAULT_TTL, now: float | None = None
) -> str:
    """Sign a token for ``user_id`` valid in ``workspaces`` for ``ttl`` seconds from ``now``."""
    _check_secret(secret)
    for value in (user_id, *workspaces):
        if not _ID.match(value):
            raise ValueError(f"invalid id {value!r}: use 1-128 of A-Z a-z 0-9 _ . -")
    if not workspaces:
        raise ValueError("a token needs at least one workspace")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    issued = time.time() if now is None else now
    claims = {"sub": user_id, "workspaces": list(workspaces), "iat": int(issued), "exp": issued + ttl}
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def verify_token(secret: str, token: str | None, now: float | None = None) -> Claims:
    """Return the token's claims, or raise ``HandshakeError`` 401 (missing, malformed, tampered, expired)."""
    _check_secret(secret)
    if not token:
        raise HandshakeError.unauthorized("missing token")
    # iat is informational: verifying it would refuse tokens from an issuer whose clock runs slightly ahead.
    options = {"require": ["sub", "exp"], "verify_exp": now is None, "verify_iat": False}
    try:
        claims = jwt.decode(token, secret, algorithms=[_ALGORITHM], options=options)
    except jwt.ExpiredSignatureError:
        raise HandshakeError.unauthorized("token expired") from None
    except jwt.InvalidTokenError:
        raise HandshakeError.unauthorized("invalid token") from None
    if now is not None and float(claims["exp"]) <= now:
        raise HandshakeError.unauthorized("token expired")
    user, workspaces = claims.get("sub"), claims.get("workspaces")
    # Ids end up inside Redis keys split on ':': a token from another signer must not smuggle one in.
    if not isinstance(user, str) or not _ID.match(user) or not isinstance(workspaces, list) or not all(
        isinstance(w, str) and _ID.match(w) for w in workspaces
    ):
        raise HandshakeError.unauthorized("invalid token claims")
    return Claims(user, frozenset(workspaces), float(claims["exp"]))
