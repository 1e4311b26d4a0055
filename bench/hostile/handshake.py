"""Handshake abuse: seeded bad upgrade requests, each judged against its class's ``HTTP STATUS message`` outcome."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from urllib.parse import parse_qs, quote, urlsplit

import jwt

from bench.hostile.classes import CLASSES
from bench.hostile.server import ALLOWED_ORIGIN, ServerUnderTest
from bench.hostile.wire import HandshakeRefused, http_exchange, open_ws

__all__ = ["run_handshakes"]

Case = tuple[str, str, dict[str, str] | None, bytes | None]  # class, url, headers, raw request instead of a WS


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _case(rng: random.Random, srv: ServerUnderTest, cls: str) -> Case:
    base, now = srv.base, time.time()
    good = srv.token("hs", "ws-a")

    def url(token: str | None, workspace: str | None = "ws-a", path: str = "/ws") -> str:
        q = [f"token={quote(token)}"] if token is not None else []
        q += [f"workspace={quote(workspace)}"] if workspace is not None else []
        return f"{base}{path}?{'&'.join(q)}"

    if cls == "hs-wrong-path":
        return cls, url(good, path=rng.choice(["/", "/ws/", "/WS", "/ws2", "/../ws", "/%00", "/ws.json"])), None, None
    if cls == "hs-missing-token":
        return cls, url(rng.choice([None, ""])), None, None
    if cls == "hs-invalid-token":
        head, body, sig = good.split(".")
        token = rng.choice([
            "garbage", "a.b.c", good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"),
            f"{head}.{_b64({'sub': 'admin', 'workspaces': ['ws-a'], 'exp': now + 60})}.{sig}",
            jwt.encode({"sub": "hs", "workspaces": ["ws-a"], "exp": now + 60}, "another-secret-of-32-bytes-xxxxxx"),
            f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'sub': 'hs', 'workspaces': ['ws-a'], 'exp': now + 60})}.",
            jwt.encode({"sub": "hs", "workspaces": ["ws-a"]}, srv.secret),  # no exp
            jwt.encode({"workspaces": ["ws-a"], "exp": now + 60}, srv.secret),  # no sub
        ])
        return cls, url(token), None, None
    if cls == "hs-not-yet-valid":
        return cls, url(srv.token("hs", "ws-a", nbf=int(now) + rng.choice([60, 3600]))), None, None
    if cls == "hs-expired-token":
        return cls, url(srv.token("hs", "ws-a", ttl=-rng.choice([1, 60, 86400]))), None, None
    if cls == "hs-bad-claims":
        bad = rng.choice(["hs\n", "hs\r\n", "h\x00s", "h\u00e9", "\u0422", "x" * 129, "", "h s", "h:s"])
        variant = rng.choice(["sub", "workspaces", "sub-type", "ws-type"])
        if variant == "sub":
            token = srv.token(bad, "ws-a")
        elif variant == "workspaces":
            token = srv.token("hs", "ws-a", bad)
        elif variant == "sub-type":
            token = srv.token(rng.choice([1, ["hs"], {"id": "hs"}, True]), "ws-a")  # type: ignore[arg-type]
        else:
            token = srv.token("hs", workspaces=rng.choice(["ws-a", {"ws-a": 1}, 5, [1], [None]]))
        return cls, url(token), None, None
    if cls == "hs-missing-workspace":
        return cls, url(good, rng.choice([None, ""])), None, None
    if cls == "hs-foreign-workspace":
        return cls, url(good, rng.choice(["ws-b", "ws-a\n", "WS-A", "ws-a ", "*", "ws-\u00e1", "ws-a\x00"])), None, \
            None
    if cls == "hs-bad-origin":
        origin = rng.choice(["https://evil.example", "null", ALLOWED_ORIGIN + ".evil", ALLOWED_ORIGIN.upper(), ""])
        return cls, url(good), {"Origin": origin}, None
    if cls == "hs-future-iat":
        return cls, url(srv.token("hs", "ws-a", iat=int(now) + rng.choice([60, 86400]))), None, None
    if cls == "hs-allowed-origin":
        return cls, url(good), rng.choice([{"Origin": ALLOWED_ORIGIN}, None]), None
    if cls == "hs-not-websocket":
        target = url(good)[len(base):]
        return cls, "", None, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    if cls == "hs-garbage-request":
        raw = rng.choice([rng.randbytes(rng.randint(1, 500)) + b"\r\n\r\n", b"\r\n\r\n", b"GET\r\n\r\n",
                          b"GET /ws HTTP/1.1\r\n" + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n",
                          b"GET /ws HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(500)) + b"\r\n"])
        return cls, "", None, raw
    raise KeyError(cls)


def _describe(url: str, raw: bytes | None) -> str:
    """What a refused request was, readably: the token's claims (unverified) instead of its base64."""
    if raw is not None:
        return repr(raw[:80])
    query = parse_qs(urlsplit(url).query)
    try:
        claims: object = jwt.decode(query["token"][0], options={"verify_signature": False})
    except (KeyError, jwt.InvalidTokenError):
        claims = (query.get("token") or ["(none)"])[0][:40]
    return f"path {urlsplit(url).path!r}, workspace {query.get('workspace')}, token {claims}"[:300]


def _judge(cls: str, status: int, body: str) -> bool:
    expect = CLASSES[cls][0]
    if expect == "HTTP 4xx or closed":
        return status == 0 or 400 <= status < 500
    _, code, *message = expect.split(" ", 2)
    return status == int(code) and body.strip().startswith(message[0] if message else "")


async def run_handshakes(srv: ServerUnderTest, seed: int, n: int) -> tuple[dict[str, int], list[dict[str, str]]]:
    """``n`` seeded abusive handshakes, 8 at a time: (count by class, mismatches)."""
    rng = random.Random(seed)
    classes = [c for c in CLASSES if c.startswith("hs-")]
    cases = [_case(rng, srv, rng.choice(classes)) for _ in range(n)]
    counts: dict[str, int] = {}
    misses: list[dict[str, str]] = []
    gate = asyncio.Semaphore(8)

    async def one(case: Case) -> None:
        cls, url, headers, raw = case
        counts[cls] = counts.get(cls, 0) + 1
        async with gate:
            if raw is not None:
                status, body = await http_exchange("127.0.0.1", srv.port, raw)
            else:
                try:
                    ws = await open_ws(url, headers)
                    status, body = 101, "upgraded"
                    await ws.close(1.0)
                except HandshakeRefused as exc:
                    status, body = exc.status, exc.body
        if not _judge(cls, status, body):
            misses.append({"class": cls, "expected": CLASSES[cls][0], "observed": f"HTTP {status} {body.strip()}",
                           "request": _describe(url, raw), "headers": json.dumps(headers)})

    await asyncio.gather(*(one(c) for c in cases))
    return counts, misses
