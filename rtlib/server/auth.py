"""Connection tokens: HMAC-SHA256 JWTs carrying a user id, the user's workspaces and an expiry.

``issue_token`` is what ``rtlib token`` prints; ``verify_token`` is the server's handshake check. Both
raise :class:`~rtlib.protocol.errors.HandshakeError` so the status (401/403) is decided in one place.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import jwt

from rtlib.protocol.errors import HandshakeError
from rtlib.protocol.schema import is_id

__all__ = ["DEFAULT_TTL", "MIN_SECRET_BYTES", "Claims", "check_secret", "issue_token", "verify_token"]

DEFAULT_TTL = 3600.0
_ALGORITHM = "HS256"
#: RFC 7518 §3.2: an HS256 key must be at least as long as the hash output, 256 bits.
MIN_SECRET_BYTES = 32
log = logging.getLogger("rtlib.server.auth")
_warned_short = False


@dataclass(frozen=True)
class Claims:
    """Who a verified token speaks for."""

    user_id: str
    workspaces: frozenset[str]
    expires_at: float


def check_secret(secret: str | None) -> str:
    """``secret``, or ``ValueError`` saying what is wrong with it: missing, or shorter than
    :data:`MIN_SECRET_BYTES` bytes (UTF-8), which HS256 must not be signed with."""
    if not secret:
        raise ValueError("a signing secret is required (--secret or the RTLIB_SECRET environment variable)")
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        raise ValueError(f"the signing secret is {size} byte{'' if size == 1 else 's'}; HS256 needs at least "
                         f"{MIN_SECRET_BYTES}: use a random one, e.g. export RTLIB_SECRET=$(openssl rand -hex 32)")
    return secret


def _check_verifying_secret(secret: str | None) -> None:
    """Verifying needs a secret; a short one is not refused here (a running server would answer every handshake
    with 500) but reported once, in rtlib's words, instead of PyJWT's warning on every token."""
    global _warned_short
    try:
        check_secret(secret)
    except ValueError as exc:
        if not secret:
            raise
        if not _warned_short:
            _warned_short = True
            log.warning("insecure signing secret: %s", exc)
            warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)


def issue_token(
    secret: str, user_id: str, workspaces: list[str], ttl: float = DEFAULT_TTL, now: float | None = None
) -> str:
    """Sign a token for ``user_id`` valid in ``workspaces`` for ``ttl`` seconds from ``now``; ``ValueError`` if the
    secret is missing or shorter than :data:`MIN_SECRET_BYTES`, an id is invalid or ``ttl`` is not positive."""
    check_secret(secret)
    for value in (user_id, *workspaces):
        if not is_id(value):
            raise ValueError(f"invalid id {value!r}: use 1-128 of A-Z a-z 0-9 _ . -")
    if not workspaces:
        raise ValueError("a token needs at least one workspace")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    issued = time.time() if now is None else now
    claims = {"sub": user_id, "workspaces": list(workspaces), "iat": int(issued), "exp": issued + ttl}
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def verify_token(secret: str, token: str | None, now: float | None = None) -> Claims:
    """Return the token's claims, or raise ``HandshakeError`` 401 (missing, malformed, tampered, expired, not
    yet valid, or claims that are not ids).

    ``exp`` is required and checked here; the server also closes the connection when it passes (1008).
    ``nbf``, when present, must not be in the future. ``iat`` is informational and never checked.
    A secret shorter than :data:`MIN_SECRET_BYTES` is logged once as insecure (``issue_token`` refuses it).
    """
    _check_verifying_secret(secret)
    if not token:
        raise HandshakeError.unauthorized("missing token")
    # iat is informational: verifying it would refuse tokens from an issuer whose clock runs slightly ahead.
    # verify_sub off: PyJWT would refuse a non-string sub as "invalid token"; is_id below says "invalid token claims".
    options = {"require": ["sub", "exp"], "verify_exp": now is None, "verify_iat": False, "verify_sub": False}
    try:
        claims = jwt.decode(token, secret, algorithms=[_ALGORITHM], options=options)
    except jwt.ExpiredSignatureError:
        raise HandshakeError.unauthorized("token expired") from None
    except jwt.ImmatureSignatureError:  # nbf in the future
        raise HandshakeError.unauthorized("token not yet valid") from None
    except jwt.InvalidTokenError:
        raise HandshakeError.unauthorized("invalid token") from None
    if now is not None and float(claims["exp"]) <= now:
        raise HandshakeError.unauthorized("token expired")
    user, workspaces = claims.get("sub"), claims.get("workspaces")
    # Ids end up inside Redis keys split on ':': a token from another signer must not smuggle one in.
    # Whole-string matches: "alice\n" is not an id.
    if not is_id(user) or not isinstance(workspaces, list) or not all(is_id(w) for w in workspaces):
        raise HandshakeError.unauthorized("invalid token claims")
    return Claims(user, frozenset(workspaces), float(claims["exp"]))
