"""The load generator's worker processes: receivers that time deliveries, and an open-loop sender.

Each worker runs its own asyncio loop in a child process (so its CPU is apart from the server's and is measured
on its own) and obeys commands from the harness over a ``multiprocessing`` pipe: ``(name, *args)`` in,
``("ok", value)`` or ``("error", traceback)`` out. :class:`WorkerHandle` is the harness's side.

Latency is measured against the *scheduled* send time that the sender writes into each frame (``sentAt``,
``time.monotonic_ns()``; CLOCK_MONOTONIC is system-wide on Linux, so it is comparable across processes). A
sender that falls behind still stamps the schedule, so its lateness shows up as latency (no coordinated
omission), and it never waits for replies.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
import traceback
from array import array
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any, Self

import msgspec
from wsclient import WsClient, connect

#: Connections opened at once: enough to be quick, few enough not to overflow the server's accept backlog.
CONNECT_CONCURRENCY = 64


# --- the delivery recogniser -------------------------------------------------------------------------------
class _Envelope(msgspec.Struct):
    type: str = ""
    payload: msgspec.Raw = msgspec.Raw(b"null")


class _Changes(msgspec.Struct):
    sentAt: int | float | None = None


class _Payload(msgspec.Struct):
    changes: _Changes | None = None


class DeliveryRecorder:
    """Recognises deliveries (frames of ``delivery_type`` carrying ``payload.changes.sentAt``) and times them.

    Only the envelope's ``type`` is decoded for every frame (the payload stays raw); other frame types
    (``session.welcome``, ``ack``, ...) are skipped. Latencies are kept only for updates scheduled inside the
    measurement window, so warm-up traffic and stragglers from it never count.
    """

    def __init__(self, delivery_type: str) -> None:
        self.delivery_type = delivery_type
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

    def on_text(self, client: WsClient, frame: bytes, now: int) -> None:
        try:
            envelope = self._envelope.decode(frame)
            if envelope.type != self.delivery_type:
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
        client.deliveries += 1
        self.total += 1
        if self.window[0] <= sent_at < self.window[1]:
            self.latencies.append(now - sent_at)


async def open_all(urls: list[str], on_text: Any) -> tuple[list[WsClient], list[str]]:
    """Open every URL, CONNECT_CONCURRENCY at a time; return the clients and the error messages."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(url: str) -> WsClient | str:
        async with gate:
            try:
                return await connect(url, on_text)
            except Exception as exc:  # noqa: BLE001 -- reported to the harness, which decides
                return f"{type(exc).__name__}: {exc}"

    results = await asyncio.gather(*(one(url) for url in urls))
    clients = [r for r in results if isinstance(r, WsClient)]
    errors = [r for r in results if isinstance(r, str)]
    return clients, errors


def _close_codes(clients: list[WsClient]) -> dict[str, int]:
    return dict(Counter(str(c.close_code) for c in clients if c.closed))


# --- the workers -------------------------------------------------------------------------------------------
class ReceiverWorker:
    """Holds receiving connections and records the latency of every delivery they get."""

    def __init__(self, urls: list[str], delivery_type: str) -> None:
        self.urls = urls
        self.recorder = DeliveryRecorder(delivery_type)
        self.clients: list[WsClient] = []

    async def cmd_connect(self) -> dict[str, Any]:
        self.clients, errors = await open_all(self.urls, self.recorder.on_text)
        return {"connected": len(self.clients), "failed": len(errors), "errors": errors[:3]}

    async def cmd_status(self) -> dict[str, Any]:
        rec = self.recorder
        return {
            "open": sum(not c.closed for c in self.clients),
            "ready": sum(c.deliveries > 0 for c in self.clients),  # have seen at least one delivery
            "total": rec.total,
            "in_window": len(rec.latencies),
            "other_frames": rec.other_frames,
            "undecodable": rec.undecodable,
            "close_codes": _close_codes(self.clients),
        }

    async def cmd_window(self, start_ns: int, end_ns: int) -> None:
        self.recorder.set_window(start_ns, end_ns)

    async def cmd_finish(self) -> dict[str, Any]:
        status = await self.cmd_status()
        status["latencies"] = self.recorder.latencies.tobytes()
        for client in self.clients:
            client.close()
        await asyncio.sleep(0.2)  # let the close frames go out
        return status


class SenderWorker:
    """Holds sender connections and sends ``task.update`` frames open-loop on a fixed schedule."""

    def __init__(self, urls_by_workspace: dict[str, list[str]]) -> None:
        self.urls_by_workspace = urls_by_workspace
        self.clients: dict[str, list[WsClient]] = {}

    async def cmd_connect(self) -> dict[str, Any]:
        connected, errors = 0, []
        for workspace, urls in self.urls_by_workspace.items():
            # Senders drain what they receive (their own echoes, acks) without looking at it.
            self.clients[workspace], errs = await open_all(urls, None)
            connected += len(self.clients[workspace])
            errors += errs
        return {"connected": connected, "failed": len(errors), "errors": errors[:3]}

    async def cmd_send(self, start_ns: int, rate: float, count: int) -> dict[str, Any]:
        """Send ``count`` updates at ``rate``/s from ``start_ns``, round-robin over workspaces, then over the
        senders of each workspace; report what was sent where and how late the loop ran behind schedule."""
        workspaces = list(self.clients)
        prefixes = {
            ws: f'{{"type":"task.update","workspaceId":"{ws}","payload":{{"taskId":"t1",'
            f'"changes":{{"title":"x","sentAt":'.encode()
            for ws in workspaces
        }
        interval_ns = round(1e9 / rate)
        per_workspace: Counter[str] = Counter()
        dropped, late_max = 0, 0
        for i in range(count):
            scheduled = start_ns + i * interval_ns
            delay = scheduled - time.monotonic_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            late_max = max(late_max, time.monotonic_ns() - scheduled)
            ws = workspaces[i % len(workspaces)]
            senders = self.clients[ws]
            client = senders[(i // len(workspaces)) % len(senders)]
            if client.send_text(prefixes[ws] + b"%d}}}" % scheduled):
                per_workspace[ws] += 1
            else:
                dropped += 1
        return {
            "sent": sum(per_workspace.values()),
            "per_workspace": dict(per_workspace),
            "dropped": dropped,
            "late_max_ms": late_max / 1e6,
            "end_ns": start_ns + count * interval_ns,
        }

    async def cmd_status(self) -> dict[str, Any]:
        clients = [c for group in self.clients.values() for c in group]
        return {"open": sum(not c.closed for c in clients), "close_codes": _close_codes(clients)}

    async def cmd_finish(self) -> dict[str, Any]:
        status = await self.cmd_status()
        for group in self.clients.values():
            for client in group:
                client.close()
        await asyncio.sleep(0.2)
        return status


# --- the command loop (child side) and the handle (harness side) ------------------------------------------
def worker_main(pipe: Connection, kind: str, args: tuple[Any, ...]) -> None:
    """Entry point of a worker process."""
    worker = {"receiver": ReceiverWorker, "sender": SenderWorker}[kind](*args)
    asyncio.run(_serve(pipe, worker))


async def _serve(pipe: Connection, worker: Any) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def readable() -> None:
        try:
            commands.put_nowait(pipe.recv())
        except (EOFError, OSError):  # the harness is gone: finish and exit rather than linger
            loop.remove_reader(pipe.fileno())
            commands.put_nowait(("finish",))

    loop.add_reader(pipe.fileno(), readable)
    while True:
        name, *args = await commands.get()
        try:
            reply: tuple[str, Any] = ("ok", await getattr(worker, f"cmd_{name}")(*args))
        except Exception:  # noqa: BLE001 -- any failure goes back to the harness, with its traceback
            reply = ("error", traceback.format_exc())
        try:
            pipe.send(reply)
        except (BrokenPipeError, OSError):
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
        status, value = self._pipe.recv()
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
