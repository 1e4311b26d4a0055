"""``rtlib demo --dev``: one process with a server, a seeded board, demo tokens and optional bots.

Development only. It signs tokens with a throwaway secret made for this run and prints them in URLs, so anyone
who can read the terminal (or reach the port) can act as the demo users. ``rtlib demo`` refuses to start
without ``--dev`` and says so in a banner; it listens on loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from rtlib.protocol import events
from rtlib.protocol.config import ServerConfig
from rtlib.server.auth import issue_token
from rtlib.server.driver import RealtimeServer
from rtlib.server.static import APP_PATH
from rtlib.server.store import RedisStore

__all__ = ["BANNER", "SAMPLE_TASKS", "DemoOptions", "board_url", "run_demo", "seed_tasks"]

BANNER = """\
################################################################################################
#  rtlib demo: DEVELOPMENT ONLY. Tokens below are signed with a throwaway secret and printed    #
#  in plain text; anyone with a link (or access to this port) acts as that user. Do not expose. #
################################################################################################"""

SAMPLE_TASKS: list[dict[str, str]] = [
    {"title": "Sketch the onboarding flow", "status": "done", "assignee": "alice", "description": "Three screens."},
    {"title": "Fix login redirect loop", "status": "doing", "assignee": "bob", "description": "Safari only."},
    {"title": "Write release notes for 2.4", "status": "todo", "assignee": "carol", "description": ""},
    {"title": "Rate-limit the export endpoint", "status": "doing", "assignee": "alice", "description": ""},
    {"title": "Invite the design partners", "status": "todo", "assignee": "", "description": "Five teams."},
    {"title": "Dark mode contrast audit", "status": "todo", "assignee": "bob", "description": ""},
    {"title": "Archive stale projects", "status": "done", "assignee": "carol", "description": "Older than a year."},
    {"title": "Mobile board layout", "status": "doing", "assignee": "carol", "description": "One column < 640px."},
]


@dataclass(frozen=True)
class DemoOptions:
    """What ``rtlib demo`` runs; ``port=0`` picks a free port."""

    host: str = "127.0.0.1"
    port: int = 8765
    workspace: str = "demo"
    users: tuple[str, ...] = ("alice", "bob", "carol")
    bots: int = 0
    ttl: float = 2 * 3600.0  # short-lived: the demo links stop working two hours later
    bot_interval: float = 2.0  # mean seconds between a bot's actions
    seed: int | None = None
    config: ServerConfig = field(default_factory=ServerConfig)


def board_url(host: str, port: int, workspace: str, token: str) -> str:
    """The board page for one user; the token rides in the fragment, which browsers never send to servers."""
    return f"http://{host}:{port}{APP_PATH}#workspace={workspace}&token={token}"


async def seed_tasks(store: RedisStore, workspace: str, tasks: list[dict[str, str]] = SAMPLE_TASKS) -> list[str]:
    """Create the sample tasks (ids ``T-001`` ...) through the normal update script; returns their ids."""
    ids = []
    for i, fields in enumerate(tasks, start=1):
        task_id = f"T-{i:03d}"
        changes = {k: msgspec.Raw(json.dumps(v).encode()) for k, v in fields.items()}
        prefix, suffix = events.task_updated_parts(workspace, "seed", task_id, changes, time.time())
        await store.update_task(workspace, task_id, changes, prefix, suffix)
        ids.append(task_id)
    return ids


async def run_demo(opts: DemoOptions, redis_url: str, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set: seed the board, print one URL per user, run the bots."""
    secret = secrets.token_hex(32)  # this run only: its tokens die with it
    server = await RealtimeServer(redis_url, secret, opts.config, opts.host, opts.port).start()
    try:
        assert server.store is not None
        await seed_tasks(server.store, opts.workspace)
        print(BANNER, flush=True)
        print(f"rtlib demo: serving {server.url} and the board at http://{opts.host}:{server.port}{APP_PATH}")
        print(f"tokens expire in {opts.ttl / 60:g} minutes; open one link per browser (or private window):")
        for user in opts.users:
            token = issue_token(secret, user, [opts.workspace], opts.ttl)
            print(f"  {user:>8}  {board_url(opts.host, server.port, opts.workspace, token)}")
        if opts.bots:
            print(f"{opts.bots} bot(s) edit and view tasks every ~{opts.bot_interval:g} s. Ctrl-C stops the demo.")
        else:
            print("Ctrl-C stops the demo.")
        print(flush=True)
        rng = random.Random(opts.seed)
        bots = [asyncio.create_task(_bot(server.url, opts, secret, f"bot-{i + 1}", random.Random(rng.random())))
                for i in range(opts.bots)]
        await stop.wait()
        for bot in bots:
            bot.cancel()
        await asyncio.gather(*bots, return_exceptions=True)
    finally:
        await server.stop()


async def _bot(url: str, opts: DemoOptions, secret: str, user: str, rng: random.Random) -> None:
    """A simulated user: moves tasks between columns, reassigns them, and views one now and then."""
    while True:
        try:
            token = issue_token(secret, user, [opts.workspace], opts.ttl)
            async with connect(f"{url}?token={token}&workspace={opts.workspace}", compression=None) as ws:
                await _bot_session(ws, opts, user, rng)
        except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
            await asyncio.sleep(1.0 + rng.random())  # the server restarts, refuses (503) or goes: come back later


async def _bot_session(ws: ClientConnection, opts: DemoOptions, user: str, rng: random.Random) -> None:
    frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    collecting = [True]  # only the welcome and the task list are of interest; later frames are dropped

    async def read() -> None:  # always drain: a bot that stops reading would become a slow consumer
        async for raw in ws:
            if collecting[0]:
                await frames.put(json.loads(raw))

    reader = asyncio.create_task(read())
    try:
        welcome = await asyncio.wait_for(frames.get(), 5)
        heartbeat = float(welcome["payload"]["heartbeatInterval"])

        async def send(type_: str, payload: dict[str, Any]) -> None:
            await ws.send(json.dumps({"type": type_, "workspaceId": opts.workspace, "payload": payload}))

        await send("task.list", {"limit": 200})
        while (frame := await asyncio.wait_for(frames.get(), 5))["type"] != "task.page":
            pass
        collecting[0] = False
        tasks = [t["taskId"] for t in frame["payload"]["tasks"]] or ["T-001"]
        while True:
            await asyncio.sleep(rng.expovariate(1.0 / opts.bot_interval))
            task = rng.choice(tasks)
            if rng.random() < 0.7:
                field_, value = rng.choice([("status", rng.choice(["todo", "doing", "done"])),
                                            ("assignee", rng.choice([*opts.users, user, ""]))])
                await send("task.update", {"taskId": task, "changes": {field_: value}})
            else:  # view a task for a while, heartbeating on the server's schedule
                await send("presence.join", {"taskId": task})
                end = time.monotonic() + rng.uniform(3, 10) * opts.bot_interval
                while (left := end - time.monotonic()) > 0:
                    await asyncio.sleep(min(left, heartbeat))
                    if end - time.monotonic() > 0:
                        await send("presence.heartbeat", {"taskId": task})
                await send("presence.leave", {"taskId": task})
    finally:
        reader.cancel()
