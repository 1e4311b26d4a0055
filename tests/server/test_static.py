"""The board's static files under /app/ on a real server: content types, security headers, no traversal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import Instances

from rtlib.server.static import CONTENT_TYPES, WEB_DIR, StaticFiles


async def _get(port: int, target: str) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 GET with the request target sent byte for byte (no client-side normalising)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


#: Static files are served before and without Redis: not run again on the Redis Cluster (conftest.py).
pytestmark = pytest.mark.before_redis


async def test_serves_the_board_files_with_their_content_types(cluster: Instances) -> None:
    port = cluster.servers[0].port
    status, headers, body = await _get(port, "/app/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert body == (WEB_DIR / "index.html").read_bytes()
    assert headers["content-length"] == str(len(body))
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    for name in ("rtlib-client.js", "board.js", "board.css", "index.html"):
        status, headers, body = await _get(port, f"/app/{name}?v=1")
        assert status == 200, name
        assert headers["content-type"] == CONTENT_TYPES[Path(name).suffix]
        assert body == (WEB_DIR / name).read_bytes()
    status, headers, _ = await _get(port, "/app")
    assert status == 308 and headers["location"] == "/app/"


@pytest.mark.parametrize("target", [
    "/app/../rtlib/server.py", "/app/..%2f..%2fpyproject.toml", "/app/%2e%2e/static.py", "/app//etc/passwd",
    "/app/../../../../etc/passwd", "/app/./index.html", "/app/web/index.html", "/app/index.html/",
    "/app/nope.js", "/app/%69ndex.html", "/app/\\..\\static.py", "/appindex.html",
])
async def test_nothing_outside_the_table_is_served(cluster: Instances, target: str) -> None:
    status, _, body = await _get(cluster.servers[0].port, target)
    assert status == 404, (target, body)
    assert b"import" not in body and b"root:" not in body


async def test_ws_path_and_its_rules_are_unchanged(cluster: Instances) -> None:
    status, _, body = await _get(cluster.servers[1].port, "/ws")
    assert status == 401 and body == b"missing token\n"
    status, _, body = await _get(cluster.servers[1].port, "/other")
    assert status == 404 and body == b"no endpoint at /other; use /ws\n"


def test_only_known_suffixes_and_no_dotfiles_are_loaded(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_text("x")
    (tmp_path / "notes.txt").write_text("secret")
    (tmp_path / ".hidden.js").write_text("secret")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.css").write_text("y")
    (tmp_path / "link.js").symlink_to("/etc/hostname")
    files = StaticFiles(tmp_path).files
    assert set(files) == {"a.js", "sub/b.css"}  # symlinks are skipped: nothing can point outside
    assert StaticFiles(tmp_path / "missing").files == {}
