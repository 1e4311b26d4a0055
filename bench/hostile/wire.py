"""A raw asyncio WebSocket client for the hostile harness: it sends exactly the bytes it is told to.

Why not the ``websockets`` client: a hostile client must send what a well-behaved library refuses to (text
frames with invalid UTF-8, reserved opcodes, RSV bits, unmasked frames, oversize frames, half-finished
handshakes), must be able to stop reading altogether (a slow reader with a tiny receive buffer), and must see the
exact close code and the raw bytes of every server frame (a text frame that is not valid UTF-8 is itself a
finding: it is what makes compliant clients fail with 1007).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

__all__ = ["OP_BINARY", "OP_CLOSE", "OP_CONT", "OP_PING", "OP_PONG", "OP_TEXT", "HandshakeRefused", "RawWs",
           "frame_bytes", "http_exchange", "open_ws"]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: Called with (connection, raw payload of a complete server text frame, monotonic_ns when it was read).
TextCallback = Callable[["RawWs", bytes, int], None]


class HandshakeRefused(ConnectionError):
    """The server answered the upgrade with an HTTP status other than 101 (or closed without one)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status} {body.strip()}")
        self.status, self.body = status, body


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def frame_bytes(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """One client frame; ``rsv`` (0-7) and ``masked=False`` exist only to break the protocol on purpose."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv & 7) << 4 | opcode
    mbit = 0x80 if masked else 0
    if n < 126:
        header = bytes((b0, mbit | n))
    elif n < 1 << 16:
        header = bytes((b0, mbit | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((b0, mbit | 127)) + n.to_bytes(8, "big")
    if not masked:
        return header + payload
    key = os.urandom(4)  # masking keys are not part of the seeded input: they do not change what the server sees
    return header + key + _mask(payload, key)


def _split_url(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname or "127.0.0.1", parts.port or 80, target


async def _connect_socket(host: str, port: int, rcvbuf: int | None, timeout: float
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:  # before connect(): a small window the kernel will not auto-tune away (slow readers)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
    except BaseException:
        sock.close()
        raise
    # A small StreamReader limit too, so a reader that stops reading stops the TCP window quickly.
    return await asyncio.open_connection(sock=sock, limit=64 * 1024 if rcvbuf else 2 ** 20)


async def _read_head(reader: asyncio.StreamReader, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of an HTTP response; status 0 if the server closed without a response."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    except asyncio.IncompleteReadError:
        return 0, {}, b""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines if h)}
    parts = status_line.split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
    body = b""
    if status != 101 and (length := int(headers.get("content-length", "0") or 0)):
        with contextlib.suppress(asyncio.IncompleteReadError, TimeoutError):
            body = await asyncio.wait_for(reader.readexactly(length), timeout)
    return status, headers, body


async def http_exchange(host: str, port: int, request: bytes, timeout: float = 5.0) -> tuple[int, str]:
    """Send raw bytes as an HTTP request; (status, body), status 0 when the server closed without answering
    and -1 when it answered something that is not HTTP."""
    reader, writer = await _connect_socket(host, port, None, timeout)
    try:
        writer.write(request)
        await writer.drain()
        status, _, body = await _read_head(reader, timeout)
        return status, body.decode("utf-8", "replace")
    except (ConnectionError, TimeoutError):
        return 0, ""
    finally:
        writer.close()


class RawWs:
    """One open connection. A reader task parses server frames unless ``reading`` is off (slow readers)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_text: TextCallback | None = None) -> None:
        self.reader, self.writer, self.on_text = reader, writer, on_text
        self.texts: asyncio.Queue[bytes] = asyncio.Queue()
        self.close_code: int | None = None  # 1006: the TCP connection ended without a close frame
        self.close_reason = ""
        self.closed = asyncio.Event()
        self.bad_utf8 = 0  # server text frames that were not valid UTF-8 (a compliant client fails on them)
        self.frames_in = 0
        self.bytes_in = 0
        self._task: asyncio.Task[None] | None = None
        self.keep = True  # put text frames on ``texts``; off for load connections that only count

    def start_reading(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._read_loop())

    async def _read_loop(self) -> None:
        reader, fragments = self.reader, []
        try:
            while True:
                b0, b1 = await reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(await reader.readexactly(2), "big")
                elif n == 127:
                    n = int.from_bytes(await reader.readexactly(8), "big")
                payload = await reader.readexactly(n) if n else b""
                self.bytes_in += n + 2
                op = b0 & 0x0F
                if op == OP_PING:
                    self._write(frame_bytes(OP_PONG, payload))
                elif op == OP_CLOSE:
                    self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    self.close_reason = payload[2:].decode("utf-8", "replace")
                    self._write(frame_bytes(OP_CLOSE, payload[:2]))
                    break
                elif op in (OP_TEXT, OP_BINARY, OP_CONT):
                    fragments.append(payload)
                    if b0 & 0x80:
                        whole = fragments[0] if len(fragments) == 1 else b"".join(fragments)
                        fragments = []
                        self._text(whole)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            if self.close_code is None:
                self.close_code = 1006
        finally:
            self.closed.set()
            self.writer.close()

    def _text(self, payload: bytes) -> None:
        self.frames_in += 1
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            self.bad_utf8 += 1
        if self.on_text is not None:
            self.on_text(self, payload, time.monotonic_ns())
        if self.keep:
            self.texts.put_nowait(payload)

    def _write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def send(self, opcode: int, payload: bytes, **frame_kw: bool | int) -> bool:
        """Send one frame (``frame_bytes`` options pass through); False if the connection is gone."""
        return await self.send_raw(frame_bytes(opcode, payload, **frame_kw))  # type: ignore[arg-type]

    async def send_raw(self, data: bytes) -> bool:
        if self.writer.is_closing() or self.closed.is_set():
            return False
        try:
            self.writer.write(data)
            await self.writer.drain()
            return True
        except (ConnectionError, OSError):
            return False

    async def next_text(self, timeout: float) -> bytes | None:
        """The next text frame, or None if the connection closed (or ``timeout`` passed) first."""
        if not self.texts.empty():
            return self.texts.get_nowait()
        getter = asyncio.ensure_future(self.texts.get())
        closed = asyncio.ensure_future(self.closed.wait())
        done, _ = await asyncio.wait({getter, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
        if getter in done:
            return getter.result()
        getter.cancel()
        return None if self.texts.empty() else self.texts.get_nowait()

    async def wait_closed(self, timeout: float) -> int | None:
        """The close code once the connection ended, or None if it is still open after ``timeout``."""
        self.start_reading()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code if self.closed.is_set() else None

    async def close(self, timeout: float = 2.0) -> None:
        """Client-initiated close 1000, then wait (bounded) for the server's echo; always frees the socket."""
        if not self.closed.is_set():
            self._write(frame_bytes(OP_CLOSE, (1000).to_bytes(2, "big")))
            self.start_reading()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait(), timeout)
        self.writer.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        self.writer.transport.abort()


async def open_ws(url: str, headers: dict[str, str] | None = None, *, reading: bool = True,
                  rcvbuf: int | None = None, on_text: TextCallback | None = None,
                  timeout: float = 10.0) -> RawWs:
    """Open a WebSocket (no extensions: no compression); raise :class:`HandshakeRefused` on any non-101."""
    host, port, target = _split_url(url)
    reader, writer = await _connect_socket(host, port, rcvbuf, timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write((f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode("latin-1"))
    try:
        await writer.drain()
        status, _, body = await _read_head(reader, timeout)
    except (ConnectionError, TimeoutError):
        writer.close()
        raise HandshakeRefused(0, "connection dropped during the handshake") from None
    if status != 101:
        writer.close()
        raise HandshakeRefused(status, body.decode("utf-8", "replace"))
    ws = RawWs(reader, writer, on_text)
    if reading:
        ws.start_reading()
    return ws
