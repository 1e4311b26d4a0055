"""docs/protocol.md cannot drift from the server: its examples are checked against what a real server sends.

* §7: every server event type, produced on a real two-instance cluster (and a probe-mode instance); the fields
  of its real frames and of the doc's example frames of that type must be the same set (a field the server
  sends must be shown, a field shown must be sent).
* §12: the example session is replayed line by line on two real instances named as in the doc; every frame a
  participant receives must carry exactly the doc's fields and values (timestamps, epochs and offsets differ
  from run to run: only their presence is compared), and nothing undocumented may arrive. The "other real
  replies" below it are replayed too and must match word for word.
* §2: the ``rtlib serve`` options table lists every option of the parser, with its default.
* §6 and §7 say how many types there are.

Adding a field to ``session.welcome`` (or any event) without showing it in the doc fails here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SECRET, token
from websockets.asyncio.client import ClientConnection, connect

from rtlib.cli import build_parser
from rtlib.protocol.config import ServerConfig
from rtlib.protocol.schema import CLIENT_TYPES, SERVER_PAYLOADS
from rtlib.server import keyspace
from rtlib.server.driver import RealtimeServer

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"
#: Values that differ from run to run: compared by presence only.
VOLATILE = {"timestamp", "epoch", "offset", "payload.epoch", "payload.offset"}
#: Keys whose value is user data (field name -> value), not protocol fields.
DATA_MAPS = {"changes", "fields"}


# --- reading the doc ------------------------------------------------------------------------------------------
def section(number: str) -> str:
    """The text of ``## {number}. ...`` up to the next ``## `` heading."""
    doc = DOC.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(number)}\. .*?$(.*?)(?=^## )", doc, flags=re.DOTALL | re.MULTILINE)
    assert m, f"docs/protocol.md has no section {number}"
    return m.group(1)


def doc_examples() -> dict[str, list[dict[str, Any]]]:
    """§7's example frames, by type."""
    out: dict[str, list[dict[str, Any]]] = {}
    for block in re.findall(r"```json\n(.*?)```", section("7"), flags=re.DOTALL):
        frame = json.loads(block)
        out.setdefault(frame["type"], []).append(frame)
    return out


def fields(value: Any, prefix: str = "") -> set[str]:
    """Every key path of a frame: ``type``, ``payload.taskId``, ``payload.tasks[].version``... (the keys inside
    ``changes``/``fields`` are data, not protocol fields)."""
    out: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            out.add(path)
            if key not in DATA_MAPS:
                out |= fields(item, path)
    elif isinstance(value, list):
        for item in value:
            out |= fields(item, f"{prefix}[]")
    return out


def values(frame: dict[str, Any]) -> dict[str, Any]:
    """The frame with its volatile values blanked (their keys stay)."""
    out = {k: ("*" if k in VOLATILE else v) for k, v in frame.items()}
    if isinstance(frame.get("payload"), dict):
        out["payload"] = {k: ("*" if f"payload.{k}" in VOLATILE else v) for k, v in frame["payload"].items()}
    return out


# --- a client that keeps every frame ----------------------------------------------------------------------------
class Tab:
    """One connection; every received frame is kept, in order, until taken by :meth:`take`."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pending: list[dict[str, Any]] = []
        self.seen: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, server: RealtimeServer, user: str, workspace: str = "acme", query: str = "") -> Tab:
        return cls(await connect(f"{server.url}?token={token(user, workspace)}&workspace={workspace}{query}",
                                 compression=None))

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            self.pending.append(frame)
            self.seen.append(frame)
            self._arrived.set()

    async def take(self, type_: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The first pending frame of ``type_`` whose payload contains ``match`` (others stay pending)."""
        async with asyncio.timeout(timeout):
            while True:
                for i, frame in enumerate(self.pending):
                    if frame["type"] == type_ and all(frame["payload"].get(k) == v for k, v in match.items()):
                        return self.pending.pop(i)
                self._arrived.clear()
                await self._arrived.wait()

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame, separators=(",", ":")))

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


def frame(type_: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": type_, "workspaceId": "acme", "payload": payload}


async def start(redis_url: str, *configs: ServerConfig) -> list[RealtimeServer]:
    return [await RealtimeServer(redis_url, SECRET, config).start() for config in configs]


@pytest.fixture
async def servers(redis_url: str) -> AsyncIterator[list[RealtimeServer]]:
    """srv-a and srv-b with presence timing compressed (a silent viewer times out in 0.6 s), and srv-p in
    presence mode probe."""
    fast = {"heartbeat_interval": 0.3, "presence_timeout": 0.6, "sweep_interval": 0.05}
    started = await start(redis_url, ServerConfig(server_id="srv-a", **fast), ServerConfig(server_id="srv-b", **fast),
                          ServerConfig(server_id="srv-p", presence_mode="probe", **fast))
    yield started
    for server in started:
        await server.stop()


@pytest.fixture
async def doc_servers(redis_url: str) -> AsyncIterator[list[RealtimeServer]]:
    """srv-a and srv-b exactly as §12 ran them: default settings."""
    started = await start(redis_url, ServerConfig(server_id="srv-a"), ServerConfig(server_id="srv-b"))
    yield started
    for server in started:
        await server.stop()


async def produce_every_event(servers: list[RealtimeServer]) -> list[dict[str, Any]]:
    """Make a real cluster send every server event type, in each variant §7 shows; returns every frame."""
    a, b, p = servers
    alice, bob = await Tab.open(a, "alice"), await Tab.open(b, "bob")
    await alice.take("session.welcome")
    await bob.take("session.welcome")
    await alice.send(frame("presence.join", {"taskId": "T-42"}))
    await alice.take("presence.state")
    await bob.take("presence.joined", userId="alice")
    await bob.send(frame("task.update", {"taskId": "T-42", "changes": {"title": "Fix login"}, "ref": "u-1"}))
    await bob.take("ack", ref="u-1")
    await bob.send(frame("task.update", {"taskId": "T-41", "changes": {"title": "Write docs"}}))
    await bob.take("ack", ref=None)
    await alice.send(frame("task.get", {"taskId": "T-42", "ref": "g-1"}))
    await alice.take("task.snapshot", ref="g-1")
    await alice.send(frame("task.get", {"taskId": "never"}))
    await alice.take("task.snapshot", taskId="never")
    await alice.send(frame("task.list", {"limit": 1, "ref": "l-1"}))
    page = await alice.take("task.page", ref="l-1")
    await alice.send(frame("task.list", {"cursor": page["payload"]["nextCursor"], "ref": "l-2"}))
    await alice.take("task.page", ref="l-2")
    await bob.send(frame("task.update", {"taskId": "T 42", "changes": {"x": 1}, "ref": "u-3"}))
    await bob.take("error", ref="u-3")
    await bob.send("{nope")
    await bob.take("error", code="invalid_json")
    await alice.send(frame("presence.leave", {"taskId": "T-42"}))
    await bob.take("presence.left", reason="leave")
    await bob.send(frame("presence.join", {"taskId": "T-1"}))  # ...and never beats: swept after 0.6 s
    await alice.take("presence.left", reason="timeout", userId="bob")
    carol = await Tab.open(a, "carol")
    await carol.send(frame("presence.join", {"taskId": "T-2"}))
    await alice.take("presence.joined", userId="carol")
    await carol.close()
    await alice.take("presence.left", reason="disconnect", userId="carol")
    last = [f for f in alice.seen if "offset" in f][-1]  # resume from the last event alice saw
    resumed = await Tab.open(a, "alice", query=f"&offset={last['offset']}&epoch={last['epoch']}")
    await resumed.take("session.welcome", recovered=True)
    # session.resync: srv-a loses its subscriber while the workspace's history is lost (as when Redis restarts
    # without persistence); its connections stay open and are told to resync (§11b).
    assert a.redis is not None
    await a.redis.delete(keyspace.epoch_key("acme"), keyspace.history_key("acme"))
    a.fanout.abandon()
    await resumed.take("session.resync")
    dave = await Tab.open(p, "dave")
    await dave.send(frame("presence.join", {"taskId": "T-42"}))
    await dave.take("presence.probe")
    everyone = [alice, bob, resumed, dave]
    for tab in everyone:
        await tab.close()
    return [f for tab in [*everyone, carol] for f in tab.seen]


async def test_section_7_shows_every_field_the_server_sends(servers: list[RealtimeServer]) -> None:
    real: dict[str, set[str]] = {}
    for f in await produce_every_event(servers):
        real.setdefault(f["type"], set()).update(fields(f))
    shown = {type_: set().union(*(fields(f) for f in frames)) for type_, frames in doc_examples().items()}
    assert set(real) == set(SERVER_PAYLOADS), "the scenario must produce every server type"
    assert set(shown) == set(SERVER_PAYLOADS), "§7 needs an example of every server type"
    problems = []
    for type_ in SERVER_PAYLOADS:
        if missing := sorted(real[type_] - shown[type_]):
            problems.append(f"{type_}: the server sends {missing}, not shown in any §7 example")
        if extra := sorted(shown[type_] - real[type_]):
            problems.append(f"{type_}: §7 shows {extra}, which the server never sent")
    assert not problems, "docs/protocol.md §7 drifted from the server:\n" + "\n".join(problems)


# --- §12 -----------------------------------------------------------------------------------------------------
LINE = re.compile(r"^(?P<who>\S+)\s+(?:(?P<dir>->|<-)\s+(?P<frame>\{.*\})|(?P<close>closes its socket))\s*$")


def session_lines() -> list[tuple[str, str, dict[str, Any] | None]]:
    """(participant, "->" / "<-" / "close", frame) of every line of §12's example session."""
    blocks = [b for b in re.findall(r"```text\n(.*?)```", section("12"), flags=re.DOTALL) if "session.welcome" in b]
    assert len(blocks) == 1
    out = []
    for line in blocks[0].strip().splitlines():
        m = LINE.match(line)
        assert m, f"§12: cannot read {line!r}"
        out.append((m["who"], "close", None) if m["close"] else (m["who"], m["dir"], json.loads(m["frame"])))
    return out


async def test_section_12_session_is_what_the_server_sends(doc_servers: list[RealtimeServer]) -> None:
    by_id = {s.server_id: s for s in doc_servers}
    tabs: dict[str, Tab] = {}
    problems = []
    for n, (who, direction, doc_frame) in enumerate(session_lines(), start=1):
        if direction == "close":
            await tabs[who].close()
            continue
        assert doc_frame is not None
        if who not in tabs:
            assert direction == "<-" and doc_frame["type"] == "session.welcome", f"§12 line {n}: {who} must connect"
            server = by_id[doc_frame["payload"]["serverId"]]
            tabs[who] = await Tab.open(server, doc_frame["userId"], doc_frame["workspaceId"])
        if direction == "->":
            await tabs[who].send(doc_frame)
            continue
        real = await tabs[who].take(doc_frame["type"], **{k: v for k, v in doc_frame["payload"].items()
                                                           if k in ("taskId", "ref", "userId", "reason")})
        if fields(real) != fields(doc_frame):
            problems.append(f"line {n} ({who} <- {doc_frame['type']}): the server sends "
                            f"{sorted(fields(real) - fields(doc_frame))} not shown, the doc shows "
                            f"{sorted(fields(doc_frame) - fields(real))} not sent")
        elif values(real) != values(doc_frame):
            problems.append(f"line {n} ({who} <- {doc_frame['type']}): the server sends {json.dumps(real)}")
    await asyncio.sleep(0.3)
    for who, tab in tabs.items():
        problems += [f"{who} also received {json.dumps(f)}, not in §12" for f in tab.pending]
        await tab.close()
    assert not problems, "docs/protocol.md §12 drifted from the server:\n" + "\n".join(problems)


REPLY = re.compile(r"^(?P<who>\w+)\s+(?:->\s+(?P<sent>.+)|<-\s+error\s+(?P<error>\{.*\})|\(no reply.*)$")


async def test_section_12_other_replies_are_word_for_word(doc_servers: list[RealtimeServer]) -> None:
    blocks = [b for b in re.findall(r"```text\n(.*?)```", section("12"), flags=re.DOTALL) if "<- error" in b]
    assert len(blocks) == 1
    bob = await Tab.open(doc_servers[0], "bob")
    await bob.take("session.welcome")
    checked = 0
    for line in (raw.strip() for raw in blocks[0].strip().splitlines()):
        if line.startswith("(no reply"):
            await asyncio.sleep(0.3)
            assert not bob.pending, f"§12 says no reply, the server sent {bob.pending}"
            continue
        m = REPLY.match(line)
        assert m, f"§12: cannot read {line!r}"
        if m["sent"]:
            await bob.send(m["sent"])
        else:
            shown = json.loads(m["error"])
            real = (await bob.take("error"))["payload"]
            assert real == shown, f"§12 shows {shown}, the server sends {real}"
            checked += 1
    assert checked >= 6
    await bob.close()


# --- §2, §6, §7: options and counts ------------------------------------------------------------------------------
def serve_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["serve"]


def options_table() -> dict[str, str]:
    """``--option`` -> the default column of §2's ``rtlib serve`` table (``a / b`` cells split per option)."""
    text = section("2")
    table = text[text.index("| option | default | meaning |"):].split("\n\n")[0]
    out = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        names = re.findall(r"`(--[a-z-]+)[^`]*`", cells[0])
        defaults = [d.strip() for d in cells[1].split(" / ")] if len(names) > 1 else [cells[1]]
        assert len(defaults) == len(names), f"§2 row {row!r}: one default per option"
        out.update(zip(names, defaults, strict=True))
    return out


def test_section_2_lists_every_serve_option_with_its_default() -> None:
    table = options_table()
    options = {a.option_strings[-1]: a for a in serve_parser()._actions if a.option_strings[-1] != "--help"}
    assert sorted(set(options) - set(table)) == [], "options of `rtlib serve` missing from §2's table"
    assert sorted(set(table) - set(options)) == [], "§2's table lists options `rtlib serve` does not have"
    for name, action in options.items():
        shown = table[name].strip("`")
        if action.default is None or action.default == "":  # described in words (embedded, any, random...)
            assert not re.fullmatch(r"[0-9.]+", shown), f"{name}: no default, but §2 shows {shown!r}"
        elif action.default is False:
            assert shown == "off", f"{name}: a flag, off by default; §2 shows {shown!r}"
        elif isinstance(action.default, (int, float)):
            assert float(shown) == float(action.default), f"{name}: default {action.default}, §2 shows {shown!r}"
        else:
            assert shown == str(action.default), f"{name}: default {action.default!r}, §2 shows {shown!r}"


WORDS = {5: "Five", 6: "Six", 7: "Seven", 8: "Eight", 9: "Nine", 10: "Ten", 11: "Eleven", 12: "Twelve"}


def test_sections_6_and_7_count_the_types() -> None:
    assert section("6").strip().startswith(f"{WORDS[len(CLIENT_TYPES)]} types."), "§6's count of client types"
    assert section("7").strip().startswith(f"{WORDS[len(SERVER_PAYLOADS)]} types."), "§7's count of server types"
