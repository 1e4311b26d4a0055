"""What a person meets first on a running server: ``GET /`` leads to the board, and a refused handshake is
logged with its status and reason (never with the token)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from conftest import Instances, token
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from rtlib.server.static import StaticFiles


async def _get(port: int, target: str) -> tuple[int, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    head = (await asyncio.wait_for(reader.read(), 5)).partition(b"\r\n\r\n")[0].decode().split("\r\n")
    writer.close()
    return int(head[0].split()[1]), {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}


async def test_root_redirects_to_the_board(cluster: Instances) -> None:
    for target in ("/", "/?x=1"):
        status, headers = await _get(cluster.servers[0].port, target)
        assert status == 302 and headers["location"] == "/app/", target
    status, _ = await _get(cluster.servers[0].port, "/index.html")
    assert status == 404


def test_root_is_not_redirected_without_a_board(tmp_path: Path) -> None:
    assert not StaticFiles(tmp_path).handles("/")
    assert StaticFiles().handles("/")


@pytest.mark.parametrize(("query", "said"), [
    ("token=garbage&workspace=w1", "401 Unauthorized (invalid token)"),
    (f"token={token('alice', 'w1')}&workspace=w2", "403 Forbidden (user is not a member of workspace 'w2')"),
    (f"token={token('alice', 'w1')}&workspace=w1&offset=1", "400 Bad Request (resume needs both offset=MS-SEQ"),
])
async def test_a_refused_handshake_is_logged_with_its_reason(cluster: Instances, caplog: pytest.LogCaptureFixture,
                                                             query: str, said: str) -> None:
    with caplog.at_level(logging.INFO, logger="rtlib.server.handshake"):
        with pytest.raises(InvalidStatus):
            await connect(f"{cluster.servers[0].url}?{query}")
    lines = [r.getMessage() for r in caplog.records
             if r.name == "rtlib.server.handshake" and "refused" in r.getMessage()]
    assert len(lines) == 1 and said in lines[0], lines
    assert "token=" not in lines[0] and "garbage" not in lines[0]
