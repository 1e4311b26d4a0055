"""The load generator's worker processes: receivers that time deliveries, and an open-loop sender.

Each worker is a child process (so its CPU is apart from the server's, and measured on its own) running one
epoll loop over its connections (see ``wsclient.py`` for why not asyncio) and its command pipe from the
harness: ``(name, *args)`` in, ``("ok", value)`` or ``("error", traceback)`` out. Between commands the loop
keeps reading, so every connection is always drained. :class:`WorkerHandle` is the harness's side.

Latency is measured against the *scheduled* send time that the sender writes into each frame (``sentAt``,
``time.monotonic_ns()``; CLOCK_MONOTONIC is system-wide on Linux, so it is comparable across processes). A
sender that falls behind still stamps the schedule, so its lateness shows up as latency (no coordinated
omission), and it never waits for replies.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from array import array
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any, Self

import msgspec

from bench.harness.wsclient import Poller, WsConn, open_connections


# --- the delivery recogniser -------------------------------------------------------------------------------
# Deliberately not rtlib.protocol.schema's structs: the load generator reads every target's frames (the toy's and
# the floor's are echoed client frames) and shares the 2 cores with the server it measures. These loose structs
# take 0.48 us per delivery frame, the schema's Envelope + TaskUpdated 1.85 us (min of 7 x 200,000, same run):
# at S3's 240,000 deliveries/s that difference is ~1/3 of a core taken from the server under test.
class _Envelope(msgspec.Struct):
    type: str = ""
    payload: msgspec.Raw = msgspec.Raw(b"null")


class _Changes(msgspec.Struct):
    sentAt: int | float | None = None


class _Payload(msgspec.Struct):
    changes: _Changes | None = None


#: ``delivery_type`` prefix of a Socket.IO target: frames are Engine.IO v4 / Socket.IO v5 packets.
SOCKETIO = "socketio:"


def socketio_control(conn: WsConn, frame: bytes) -> bool:
    """Answer Engine.IO/Socket.IO control packets; True if ``frame`` was one (not an event).

    ``0{...}`` (Engine.IO open) -> ``40`` (connect to the main namespace); ``2`` (ping) -> ``3`` (pong): the
    server closes a client that misses a pong. ``40{...}`` (namespace connected) is left to the caller.
    """
    if frame[:1] == b"0":
        conn.send_text(b"40")
        return True
    if frame == b"2":
        conn.send_text(b"3")
        return True
    return False


def socketio_sender_text(conn: WsConn, frame: bytes, now: int) -> None:
    """A Socket.IO sender's handler: keep the session alive, ignore the rest (broadcast copies)."""
    socketio_control(conn, frame)


class DeliveryRecorder:
    """Recognises deliveries (frames of ``delivery_type`` carrying ``payload.changes.sentAt``) and times them.

    Only the envelope's ``type`` is decoded for every frame (the payload stays raw); other frame types
    (``session.welcome``, ``ack``, ...) are skipped. Latencies are kept only for updates scheduled inside the
    measurement window, so warm-up traffic and stragglers from it never count.

    ``delivery_type`` ``"socketio:EVENT"``: frames are Socket.IO packets; a delivery is ``42["EVENT",
    envelope]`` (the envelope the sender emitted, echoed), and the namespace connection ``40{...}`` counts as
    the welcome (an "other" frame).
    """

    def __init__(self, delivery_type: str) -> None:
        self.socketio = delivery_type.startswith(SOCKETIO)
        self.delivery_type = delivery_type.removeprefix(SOCKETIO)
        self._event_prefix = b'42["' + self.delivery_type.encode() + b'",'
        self._envelope = msgspec.json.Decoder(_Envelope)
        self._payload = msgspec.json.Decoder(_Payload)
        self.window = (0, 0)  # [start, end) of scheduled send times that count
        self.latencies = array("q")  # ns, in-window deliveries only
        self.total = 0  # every delivery, warm-up included
        self.other_frames = 0
        self.undecodable = 0

    def set_window(self, start_ns: int, end_ns: int) -> None:
        self.window = (start_ns, end_ns)
        self.latencies = array("q")

    def on_text(self, conn: WsConn, frame: bytes, now: int) -> None:
        if self.socketio:
            if not frame.startswith(self._event_prefix):
                if not socketio_control(conn, frame):
                    self.other_frames += 1
                return
            frame = frame[len(self._event_prefix):-1]  # the envelope: 42["EVENT",<envelope>]
        try:
            envelope = self._envelope.decode(frame)
            # Socket.IO: the event name was the check; the envelope is the sender's, echoed.
            if envelope.type != self.delivery_type and not self.socketio:
                self.other_frames += 1
                return
            changes = self._payload.decode(envelope.payload).changes
        except msgspec.DecodeError:  # ValidationError is a subclass
            self.undecodable += 1
            return
        if changes is None or changes.sentAt is None:
            self.undecodable += 1
            return
        sent_at = int(changes.sentAt)
        conn.deliveries += 1
        self.total += 1
        if self.window[0] <= sent_at < self.window[1]:
            self.latencies.append(now - sent_at)


def _close_codes(conns: list[WsConn]) -> dict[str, int]:
    return dict(Counter(str(c.close_code) for c in conns if c.closed))


# --- the workers -------------------------------------------------------------------------------------------
class Worker:
    """What both workers share: a poller over their connections, and the list of those connections."""

    def __init__(self) -> None:
        self.poller = Poller()
        self.conns: list[WsConn] = []

    def _open(self, urls: list[str], on_text: Any) -> dict[str, Any]:
        conns, errors = open_connections(urls, on_text)
        for conn in conns:
            self.poller.add(conn)
        self.conns += conns
        return {"connected": len(conns), "failed": len(urls) - len(conns), "errors": errors[:3]}

    def cmd_finish(self) -> dict[str, Any]:
        status = self.cmd_status()
        for conn in self.conns:
            conn.close()
        return status

    def cmd_status(self) -> dict[str, Any]:
        return {"open": sum(not c.closed for c in self.conns), "close_codes": _close_codes(self.conns)}


class ReceiverWorker(Worker):
    """Holds receiving connections and records the latency of every delivery they get."""

    def __init__(self, urls: list[str], delivery_type: str) -> None:
        super().__init__()
        self.urls = urls
        self.recorder = DeliveryRecorder(delivery_type)

    def cmd_connect(self) -> dict[str, Any]:
        return self._open(self.urls, self.recorder.on_text)

    def cmd_status(self) -> dict[str, Any]:
        rec = self.recorder
        return {
            **super().cmd_status(),
            "ready": sum(c.deliveries > 0 for c in self.conns),  # have seen at least one delivery
            "total": rec.total,
            "in_window": len(rec.latencies),
            "other_frames": rec.other_frames,
            "undecodable": rec.undecodable,
            "wakeups": self.poller.wakeups,
            "reads": self.poller.reads,
        }

    def cmd_window(self, start_ns: int, end_ns: int) -> None:
        self.recorder.set_window(start_ns, end_ns)
        self.poller.wakeups = self.poller.reads = 0

    def cmd_finish(self) -> dict[str, Any]:
        return {**super().cmd_finish(), "latencies": self.recorder.latencies.tobytes()}


class SenderWorker(Worker):
    """Holds sender connections and sends ``task.update`` frames open-loop on a fixed schedule."""

    def __init__(self, urls_by_workspace: dict[str, list[str]], protocol: str = "ws") -> None:
        super().__init__()
        self.urls_by_workspace = urls_by_workspace
        self.socketio = protocol == "socketio"
        self.by_workspace: dict[str, list[WsConn]] = {}

    def cmd_connect(self) -> dict[str, Any]:
        replies = []
        for workspace, urls in self.urls_by_workspace.items():
            before = len(self.conns)
            # Senders drain what they receive (their own echoes, acks) without looking at it.
            replies.append(self._open(urls, socketio_sender_text if self.socketio else None))
            self.by_workspace[workspace] = self.conns[before:]
        return {
            "connected": sum(r["connected"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "errors": [e for r in replies for e in r["errors"]][:3],
        }

    def wait_until(self, deadline_ns: int) -> None:
        """Keep draining the connections until ``deadline_ns``, then return as close to it as possible.

        epoll's timeout has millisecond granularity (rounded up), so the last stretch is a sleep, which is
        precise to tens of µs: sender lateness is latency, and this keeps it small without spinning.
        """
        while (remaining := deadline_ns - time.monotonic_ns()) > 1_500_000:
            self.poller.poll((remaining - 1_000_000) / 1e9)
        if remaining > 0:
            time.sleep(remaining / 1e9)

    def cmd_send(self, start_ns: int, rate: float, count: int) -> dict[str, Any]:
        """Send ``count`` updates at ``rate``/s from ``start_ns``, round-robin over workspaces, then over the
        senders of each workspace; report what was sent where and how far the loop ran behind schedule."""
        workspaces = list(self.by_workspace)
        # Socket.IO: the same envelope as the event's argument, 42["task.update",<envelope>].
        head, tail = (b'42["task.update",', b"]") if self.socketio else (b"", b"")
        prefixes = {
            ws: head + f'{{"type":"task.update","workspaceId":"{ws}","payload":{{"taskId":"t1",'
            f'"changes":{{"title":"x","sentAt":'.encode()
            for ws in workspaces
        }
        interval_ns = round(1e9 / rate)
        per_workspace: Counter[str] = Counter()
        dropped, late_max, late_sum = 0, 0, 0
        for i in range(count):
            scheduled = start_ns + i * interval_ns
            self.wait_until(scheduled)
            late = time.monotonic_ns() - scheduled
            late_max, late_sum = max(late_max, late), late_sum + late
            ws = workspaces[i % len(workspaces)]
            senders = self.by_workspace[ws]
            conn = senders[(i // len(workspaces)) % len(senders)]
            if conn.send_text(prefixes[ws] + b"%d}}}" % scheduled + tail):
                per_workspace[ws] += 1
            else:
                dropped += 1
        self.poller.poll(0)
        return {
            "sent": sum(per_workspace.values()),
            "per_workspace": dict(per_workspace),
            "dropped": dropped,
            "late_max_ms": late_max / 1e6,
            "late_mean_ms": late_sum / max(1, count) / 1e6,
        }


# --- the command loop (child side) and the handle (harness side) ------------------------------------------
def worker_main(pipe: Connection, kind: str, args: tuple[Any, ...]) -> None:
    """Entry point of a worker process: read the connections, and obey commands, until told to finish."""
    if kind == "sender":
        # The sender does little work, but must do it on time: late sends count as latency, and on 2 cores
        # the server and the receivers can keep it waiting for a CPU for milliseconds. Needs root; optional.
        try:
            os.nice(-5)
        except PermissionError:
            pass
    worker: Worker = {"receiver": ReceiverWorker, "sender": SenderWorker}[kind](*args)
    worker.poller.add_fd(pipe.fileno())
    while True:
        if not worker.poller.poll(1.0):
            continue
        try:
            name, *cmd_args = pipe.recv()
        except (EOFError, OSError):  # the harness is gone: finish and exit rather than linger
            worker.cmd_finish()
            return
        try:
            reply: tuple[str, Any] = ("ok", getattr(worker, f"cmd_{name}")(*cmd_args))
        except Exception:  # any failure goes back to the harness, with its traceback
            reply = ("error", traceback.format_exc())
        try:
            pipe.send(reply)
        except OSError:
            return
        if name == "finish":
            return


class WorkerHandle:
    """The harness's side of one worker process: start it, send commands, get replies, always stop it."""

    def __init__(self, name: str, kind: str, args: tuple[Any, ...]) -> None:
        ctx = mp.get_context("spawn")  # a fresh interpreter: nothing of the harness's state leaks in
        self._pipe, child = ctx.Pipe()
        self.name = name
        self.proc = ctx.Process(target=worker_main, args=(child, kind, args), name=name, daemon=True)

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def start(self) -> Self:
        self.proc.start()
        return self

    def submit(self, name: str, *args: Any) -> None:
        """Send a command without waiting for its reply (collect it with :meth:`result`)."""
        self._pipe.send((name, *args))

    def result(self, timeout: float) -> Any:
        """Wait for the reply to the last submitted command."""
        if not self._pipe.poll(timeout):
            raise TimeoutError(f"worker {self.name} did not answer within {timeout:.0f}s")
        try:
            status, value = self._pipe.recv()
        except (EOFError, OSError) as exc:
            self.proc.join(timeout=1)
            raise RuntimeError(f"worker {self.name} died (exit code {self.proc.exitcode})") from exc
        if status != "ok":
            raise RuntimeError(f"worker {self.name} failed:\n{value}")
        return value

    def call(self, name: str, *args: Any, timeout: float = 60.0) -> Any:
        self.submit(name, *args)
        return self.result(timeout)

    def stop(self) -> None:
        """Ask the worker to finish if it is still alive; terminate, then kill, if it does not exit."""
        if self.proc.is_alive():
            try:  # normally already finished by the harness; on an error path this is the polite way out
                self._pipe.send(("finish",))
            except OSError:
                pass
            self.proc.join(timeout=3)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=3)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self._pipe.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
