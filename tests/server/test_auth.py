"""Tokens: issue and verify, every refusal a 401."""

from http import HTTPStatus

import pytest

from rtlib.protocol.errors import HandshakeError
from rtlib.server.auth import issue_token, verify_token

SECRET = "unit-secret-long-enough-for-hmac-sha256"


def test_roundtrip_claims() -> None:
    claims = verify_token(SECRET, issue_token(SECRET, "usr_1", ["ws_a", "ws_b"], ttl=60, now=1000), now=1030)
    assert claims.user_id == "usr_1" and claims.workspaces == {"ws_a", "ws_b"} and claims.expires_at == 1060


@pytest.mark.parametrize("token", [None, "", "abc", "a.b.c"])
def test_missing_or_malformed(token: str | None) -> None:
    with pytest.raises(HandshakeError) as exc:
        verify_token(SECRET, token)
    assert exc.value.status == HTTPStatus.UNAUTHORIZED


def test_wrong_secret_and_expired() -> None:
    token = issue_token(SECRET, "u", ["w"], ttl=10, now=1000)
    with pytest.raises(HandshakeError, match="invalid token"):
        verify_token("another-secret-of-sufficient-length-xx", token, now=1001)
    with pytest.raises(HandshakeError, match="expired"):
        verify_token(SECRET, token, now=1010)
    with pytest.raises(HandshakeError, match="expired"):
        verify_token(SECRET, token)  # real clock: long expired


@pytest.mark.parametrize(("user", "workspaces", "ttl"), [("bad id", ["w"], 10), ("u", [], 10), ("u", ["w:1"], 10),
                                                         ("u", ["w"], 0)])
def test_issue_rejects_bad_input(user: str, workspaces: list[str], ttl: float) -> None:
    with pytest.raises(ValueError):
        issue_token(SECRET, user, workspaces, ttl)


def test_secret_required() -> None:
    with pytest.raises(ValueError, match="secret"):
        issue_token("", "u", ["w"])


def test_claims_must_be_whole_ids() -> None:
    import jwt

    for claims in ({"sub": "alice\n", "workspaces": ["w"]}, {"sub": "alice", "workspaces": ["w\n"]},
                   {"sub": "al ice", "workspaces": ["w"]}, {"sub": "alice", "workspaces": "w"}):
        bad = jwt.encode({**claims, "exp": 2000}, SECRET, algorithm="HS256")
        with pytest.raises(HandshakeError, match="invalid token claims"):
            verify_token(SECRET, bad, now=1000)


def test_nbf_is_checked_and_iat_is_not() -> None:
    import time

    import jwt

    now = time.time()
    future_nbf = jwt.encode({"sub": "u", "workspaces": ["w"], "exp": now + 60, "nbf": now + 30}, SECRET)
    with pytest.raises(HandshakeError, match="token not yet valid"):
        verify_token(SECRET, future_nbf)
    future_iat = jwt.encode({"sub": "u", "workspaces": ["w"], "exp": now + 60, "iat": int(now) + 30}, SECRET)
    assert verify_token(SECRET, future_iat).user_id == "u"  # an issuer clock slightly ahead is tolerated
