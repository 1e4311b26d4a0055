"""A minimal WebSocket client on a bare ``asyncio.Protocol``, for the load generator.

Why not the ``websockets`` client: the load generator shares a 2-core machine with the server it measures,
and a receiver handles up to ~20,000 frames/s. This client does only what a load generator needs (RFC 6455
handshake, unmasked server frames, fragmentation, ping -> pong, close) and hands each complete text frame,
with one ``time.monotonic_ns()`` stamp per socket read, straight to a callback: no queue, no task switch,
no UTF-8 validation. It offers no compression extension, so the server sends plain frames.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import Callable
from urllib.parse import urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: Called with (client, payload of a complete text frame, monotonic_ns when its last bytes were read).
TextHandler = Callable[["WsClient", bytes, int], None]


def _mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` (client frames must be masked), as one big-int operation."""
    n = len(payload)
    if n == 0:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """A single, final, masked client frame."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    return header + key + _mask(payload, key)


class HandshakeFailed(ConnectionError):
    """The server answered the upgrade request with something other than a valid 101."""


class WsClient(asyncio.Protocol):
    """One client connection. ``opened`` resolves after the 101 response; text frames go to ``on_text``."""

    def __init__(self, host: str, port: int, target: str, on_text: TextHandler | None) -> None:
        self.on_text = on_text
        self.deliveries = 0  # free for the handler's bookkeeping
        self.close_code: int | None = None  # set when the server closes the connection
        self.closed = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._key = base64.b64encode(os.urandom(16))
        self._request = (
            f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self._handshaking = True
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_op = 0

    # --- asyncio.Protocol -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()  # one clock read per socket read: cheap, and the frames arrived together
        if self._handshaking:
            self._buf += data
            if not self._finish_handshake():
                return
            data, self._buf = bytes(self._buf), bytearray()
        if self._buf:  # a frame split across reads: append and parse from the buffer
            self._buf += data
            used = self._parse(self._buf, now)
            del self._buf[:used]
        else:  # the common case: whole frames in this read, parsed without copying into the buffer
            used = self._parse(data, now)
            if used < len(data):
                self._buf += data[used:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("connection closed during the handshake"))

    # --- sending ----------------------------------------------------------------------------------------
    def send_text(self, payload: bytes) -> bool:
        """Queue a text frame (never waits); False if the connection is already closed."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(encode_frame(OP_TEXT, payload))
        return True

    def close(self, code: int = 1000) -> None:
        """Send a close frame and close the socket (the load generator does not wait for the echo)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(OP_CLOSE, code.to_bytes(2, "big")))
            self.transport.close()
        self.closed = True

    # --- parsing ----------------------------------------------------------------------------------------
    def _finish_handshake(self) -> bool:
        """Consume the HTTP response from the buffer; True once it is complete and valid."""
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head, self._buf = bytes(self._buf[:end]).decode("latin-1"), self._buf[end + 4:]
        status_line, *header_lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        expected = base64.b64encode(hashlib.sha1(self._key + _GUID).digest()).decode()
        self._handshaking = False
        if status_line.split(" ", 2)[1:2] != ["101"] or headers.get("sec-websocket-accept") != expected:
            self.opened.set_exception(HandshakeFailed(status_line))
            assert self.transport is not None
            self.transport.close()
            return False
        self.opened.set_result(None)
        return True

    def _parse(self, buf: bytes | bytearray, now: int) -> int:
        """Handle every complete frame in ``buf``; return how many bytes were consumed."""
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, header = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, header = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, header = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if b1 & 0x80:  # servers must not mask: a protocol error
                self.close(1002)
                return size
            end = pos + header + length
            if end > size:
                break
            self._frame(b0 & 0x80, b0 & 0x0F, bytes(buf[pos + header:end]), now)
            pos = end
        return pos

    def _frame(self, fin: int, opcode: int, payload: bytes, now: int) -> None:
        if opcode == OP_TEXT or opcode == OP_BINARY:
            if not fin:
                self._fragment_op, self._fragments = opcode, [payload]
                return
            if opcode == OP_TEXT and self.on_text is not None:
                self.on_text(self, payload, now)
        elif opcode == OP_CONT:
            self._fragments.append(payload)
            if fin:
                whole, self._fragments = b"".join(self._fragments), []
                if self._fragment_op == OP_TEXT and self.on_text is not None:
                    self.on_text(self, whole, now)
        elif opcode == OP_PING:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(encode_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.close(self.close_code if self.close_code not in (1005, 1006) else 1000)
        # OP_PONG and reserved opcodes: ignored


async def connect(url: str, on_text: TextHandler | None, timeout: float = 10.0) -> WsClient:
    """Open a ``ws://`` URL and return the client once the handshake has succeeded."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ValueError(f"only ws://host:port/... URLs are supported, got {url!r}")
    port = parts.port or 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    loop = asyncio.get_running_loop()
    _, client = await asyncio.wait_for(
        loop.create_connection(lambda: WsClient(parts.hostname, port, target, on_text), parts.hostname, port),
        timeout,
    )
    try:
        await asyncio.wait_for(asyncio.shield(client.opened), timeout)
    except BaseException:
        client.close()
        raise
    return client
