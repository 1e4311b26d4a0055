"""A minimal WebSocket client on plain non-blocking sockets and one ``epoll``, for the load generator.

Why not the ``websockets`` client, or even asyncio: the load generator shares a 2-core machine with the server
it measures, and one receiver process handles ~20,000 frames/s. asyncio's per-event machinery (handles,
callbacks, transports) cost ~30 µs per frame here, which both stole CPU from the server and delayed the
reading of the 200th connection of a broadcast by milliseconds (measured as "latency"). This client does only
what a load generator needs: the RFC 6455 handshake (no extensions, so no compression), unmasked server
frames, fragmentation, ping -> pong, close; each complete text frame goes straight to a callback with the
``time.monotonic_ns()`` of the socket read that completed it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
READ_SIZE = 256 * 1024

#: Called with (connection, payload of a complete text frame, monotonic_ns of the read that completed it).
TextHandler = Callable[["WsConn", bytes, int], None]


class HandshakeFailed(ConnectionError):
    """The server answered the upgrade request with something other than a valid 101."""


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


class WsConn:
    """One open client connection on a non-blocking socket: frame parsing, pong and close replies."""

    def __init__(self, sock: socket.socket, on_text: TextHandler | None) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.on_text = on_text
        self.deliveries = 0  # free for the handler's bookkeeping
        self.close_code: int | None = None  # set when the server closes (1006: without a close frame)
        self.closed = False
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_op = 0

    # --- reading ----------------------------------------------------------------------------------------
    def read(self) -> None:
        """Read what the socket has (call when epoll says it is readable) and handle every complete frame."""
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        self.feed(data, time.monotonic_ns())

    def feed(self, data: bytes, now: int) -> None:
        """Handle bytes received at ``now``; an incomplete frame waits in the buffer for the next read."""
        if self._buf:  # a frame split across reads: append and parse from the buffer
            self._buf += data
            used = self._parse(self._buf, now)
            del self._buf[:used]
        else:  # the common case, whole frames in one read: parse without copying
            used = self._parse(data, now)
            if used < len(data):
                self._buf += data[used:]

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
            elif opcode == OP_TEXT and self.on_text is not None:
                self.on_text(self, payload, now)
        elif opcode == OP_CONT:
            self._fragments.append(payload)
            if fin:
                whole, self._fragments = b"".join(self._fragments), []
                if self._fragment_op == OP_TEXT and self.on_text is not None:
                    self.on_text(self, whole, now)
        elif opcode == OP_PING:
            self._send_quietly(encode_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.close(1000)
        # OP_PONG and reserved opcodes: ignored

    def _lost(self) -> None:
        if not self.closed:
            self.close_code = self.close_code or 1006
            self.closed = True
            self.sock.close()

    # --- writing ----------------------------------------------------------------------------------------
    def send_text(self, payload: bytes, timeout: float = 10.0) -> bool:
        """Send a text frame now; False if the connection is closed or stays unwritable for ``timeout`` s.

        A full socket buffer means the server stopped reading: waiting (bounded) is then the honest thing,
        since the sender stamps the *scheduled* time and any delay shows up as latency.
        """
        if self.closed:
            return False
        view = memoryview(encode_frame(OP_TEXT, payload))
        deadline = time.monotonic() + timeout
        while view:
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([], [self.sock], [], remaining)[1]:
                    self._lost()
                    return False
            except OSError:
                self._lost()
                return False
        return True

    def _send_quietly(self, frame: bytes) -> None:
        """Control replies: best effort (a few bytes; a full buffer here means the connection is doomed)."""
        if not self.closed:
            try:
                self.sock.send(frame)
            except OSError:
                pass

    def close(self, code: int = 1000) -> None:
        """Send a close frame and close the socket (the load generator does not wait for the echo)."""
        if not self.closed:
            self._send_quietly(encode_frame(OP_CLOSE, code.to_bytes(2, "big")))
            self.closed = True
            self.sock.close()


# --- opening connections ---------------------------------------------------------------------------------
def _request(url: str) -> tuple[str, int, bytes, bytes]:
    """(host, port, upgrade request, Sec-WebSocket-Key) for a ``ws://`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ValueError(f"only ws://host:port/... URLs are supported, got {url!r}")
    port = parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.hostname}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    return parts.hostname, port, request.encode(), key


def _read_response(sock: socket.socket, key: bytes) -> bytes:
    """Read and check the 101 response; return the bytes after it (frames the server sent at once)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise HandshakeFailed(f"connection closed during the handshake after {buf[:80]!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    expected = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
    if status_line.split(" ", 2)[1:2] != ["101"] or headers.get("sec-websocket-accept") != expected:
        raise HandshakeFailed(status_line)
    return rest


def open_connections(urls: list[str], on_text: TextHandler | None, batch: int = 64,
                     timeout: float = 10.0) -> tuple[list[WsConn], list[str]]:
    """Open every URL and return the connections and the error messages of those that failed.

    ``batch`` handshakes are in flight at once: the server works on them concurrently, and the batch stays
    well under a typical accept backlog (asyncio's is 100). A batch gets ``timeout`` seconds in all, and if
    none of its connections opened the server is taken as unresponsive and the rest are not tried.
    """
    conns: list[WsConn] = []
    errors: list[str] = []
    for first in range(0, len(urls), batch):
        deadline = time.monotonic() + timeout
        pending: list[tuple[socket.socket, bytes]] = []
        opened_before = len(conns)
        for url in urls[first:first + batch]:
            try:
                host, port, request, key = _request(url)
                sock = socket.create_connection((host, port), timeout=max(0.01, deadline - time.monotonic()))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(request)
                pending.append((sock, key))
            except (OSError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        for sock, key in pending:
            try:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                rest = _read_response(sock, key)
            except OSError as exc:  # HandshakeFailed and timeouts included
                errors.append(f"{type(exc).__name__}: {exc}")
                sock.close()
                continue
            sock.setblocking(False)
            conn = WsConn(sock, on_text)
            if rest:
                conn.feed(rest, time.monotonic_ns())
            conns.append(conn)
        if len(conns) == opened_before:
            rest_count = len(urls) - first - batch
            if rest_count > 0:
                errors.append(f"{rest_count} more not tried: a whole batch of {batch} failed")
            break
    return conns, errors


class Poller:
    """One epoll over many connections (level-triggered) plus other file descriptors (a control pipe)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._conns: dict[int, WsConn] = {}
        self.wakeups = 0  # epoll returns with something ready, and
        self.reads = 0  # connection reads: reads per wakeup tell how well the loop batches

    def add(self, conn: WsConn) -> None:
        self._conns[conn.fd] = conn
        self._epoll.register(conn.fd, select.EPOLLIN)

    def add_fd(self, fd: int) -> None:
        self._epoll.register(fd, select.EPOLLIN)

    def poll(self, timeout: float) -> list[int]:
        """Wait up to ``timeout`` s, read every readable connection; return the other fds that are ready."""
        others = []
        events = self._epoll.poll(timeout)
        self.wakeups += bool(events)
        for fd, _ in events:
            conn = self._conns.get(fd)
            if conn is None:
                others.append(fd)
                continue
            self.reads += 1
            conn.read()
            if conn.closed:  # closing the socket already took it out of the epoll set
                del self._conns[fd]
        return others

    def close(self) -> None:
        self._epoll.close()
