"""The board in a real browser: Playwright for Python driving Debian's chromium (never a downloaded browser).

Servers are real ``rtlib serve`` processes on the session's real Redis, so one can be SIGKILLed and restarted
on the same port. Edits and checks from Python use the wire protocol directly. With ``RTLIB_RECORD=1`` it
rewrites the README's screenshot (``docs/img/board.png``) and the observed edit-to-display latency
(``bench/results/web_edit_latency.json``); otherwise both go to a temporary folder and the clone stays clean.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SECRET, missing, token
from websockets.asyncio.client import connect

from rtlib.server.demo import SAMPLE_TASKS
from rtlib.server.redis_process import free_port

ROOT = Path(__file__).resolve().parents[2]


def recorded(tracked: Path, tmp_path: Path) -> Path:
    """Where a measurement or a screenshot goes: the tracked file only when re-recording on purpose
    (``RTLIB_RECORD=1``); otherwise a scratch file, so running the tests changes nothing tracked."""
    return tracked if os.environ.get("RTLIB_RECORD") == "1" else tmp_path / tracked.name
CHROMIUM = os.environ.get("RTLIB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # pragma: no cover - the dev extra installs it
    missing("playwright is not installed (pip install -e '.[dev]')")
if CHROMIUM is None:  # pragma: no cover - .ci/run installs Debian's chromium
    missing("no Chromium binary: apt-get install chromium (or set RTLIB_CHROMIUM); browser tests skipped")

WS = "w1"
# Presence compressed so a killed instance's entries expire within the test, yet heartbeats are unhurried.
SERVE_ARGS = ["--heartbeat-interval", "1", "--presence-timeout", "3", "--sweep-interval", "0.2"]


class ServeProcess:
    """One ``rtlib serve`` process on a fixed port; kill() is SIGKILL (no goodbye to its clients)."""

    def __init__(self, redis_url: str, port: int | None = None) -> None:
        self.redis_url, self.port = redis_url, port or free_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> ServeProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rtlib.cli", "serve", "--redis", self.redis_url, "--port", str(self.port),
            "--secret", SECRET, "--log-level", "WARNING", *SERVE_ARGS,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        assert b"serving" in line, line
        return self

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                await self.kill()

    def board_url(self, user: str) -> str:
        return f"http://127.0.0.1:{self.port}/app/#workspace={WS}&token={token(user, WS)}"


class PyClient:
    """A protocol client in Python, to edit and seed the board from outside the browser."""

    def __init__(self, port: int, user: str = "py") -> None:
        self.url = f"ws://127.0.0.1:{port}/ws?token={token(user, WS)}&workspace={WS}"

    async def update(self, task_id: str, **changes: Any) -> int:
        async with connect(self.url, compression=None) as ws:
            assert json.loads(await ws.recv())["type"] == "session.welcome"
            await ws.send(json.dumps({"type": "task.update", "workspaceId": WS,
                                      "payload": {"taskId": task_id, "changes": changes, "ref": "r"}}))
            while (frame := json.loads(await asyncio.wait_for(ws.recv(), 5)))["type"] != "ack":
                pass
            return frame["payload"]["version"]


@pytest.fixture
async def server(redis_url: str) -> AsyncIterator[ServeProcess]:
    proc = await ServeProcess(redis_url).start()
    client = PyClient(proc.port, "seed")
    for i, fields in enumerate(SAMPLE_TASKS, start=1):  # the demo's board: T-001 ... T-008
        await client.update(f"T-{i:03d}", **fields)
    yield proc
    await proc.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        await b.close()


async def open_board(browser: Browser, server: ServeProcess, user: str, **context_kw: Any
                     ) -> tuple[Page, list[str]]:
    """A board page in its own browser context (its own user); the console errors it logs are collected."""
    context = await browser.new_context(**{"viewport": {"width": 1280, "height": 800}, **context_kw})
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(server.board_url(user))
    await expect(page.locator("#conn")).to_have_attribute("data-status", "connected")
    await expect(page.locator(".card")).to_have_count(len(SAMPLE_TASKS))
    return page, errors


def card(page: Page, task_id: str):
    return page.locator(f'.card[data-task-id="{task_id}"]')


async def test_an_edit_in_one_browser_appears_in_the_other_within_a_second(browser: Browser, server: ServeProcess,
                                                                            tmp_path: Path) -> None:
    alice, alice_errors = await open_board(browser, server, "alice")
    bob, bob_errors = await open_board(browser, server, "bob")
    await expect(bob.locator('.column[data-status="doing"] .card')).to_have_count(3)
    # Alice's Enter keypress and Bob's DOM change are both stamped with the same machine clock.
    await alice.evaluate("""() => addEventListener('keydown', (e) => {
        if (e.key === 'Enter') window.sentAt = Date.now(); }, true)""")
    latencies = []
    for n in range(5):
        title = f"Fix login redirect loop #{n}"
        await bob.evaluate("""(title) => { window.seenAt = null; new MutationObserver((_, obs) => {
            if (document.querySelector('.card[data-task-id="T-002"] .title').textContent === title) {
                window.seenAt = Date.now(); obs.disconnect(); } }).observe(document.body,
                {subtree: true, childList: true, characterData: true}); }""", title)
        await card(alice, "T-002").click()
        await alice.fill("#f-title", title)
        await alice.press("#f-title", "Enter")
        await expect(card(bob, "T-002").locator(".title")).to_have_text(title, timeout=1000)
        latencies.append(await bob.evaluate("window.seenAt") - await alice.evaluate("window.sentAt"))
        await alice.keyboard.press("Escape")
    await expect(card(bob, "T-002")).to_have_class("card flash")  # a change from someone else is highlighted
    # A status change moves the card to its column on the other side.
    await card(bob, "T-003").click()
    await bob.select_option("#f-status", "done")
    await bob.keyboard.press("Escape")
    await expect(alice.locator('.column[data-status="done"] .card[data-task-id="T-003"]')).to_be_visible()
    # Creating a task inline shows it everywhere.
    await alice.fill("#new-title", "Brand new task")
    await alice.press("#new-title", "Enter")
    await expect(bob.locator(".card .title", has_text="Brand new task")).to_be_visible(timeout=1000)
    assert max(latencies) < 1000, latencies
    result = {"edits": len(latencies), "latencyMs": latencies, "medianMs": statistics.median(latencies),
              "maxMs": max(latencies), "browser": browser.version,
              "what": "Enter in one browser context -> the other context's DOM shows the new title (same machine)"}
    recorded(ROOT / "bench" / "results" / "web_edit_latency.json", tmp_path).write_text(
        json.dumps(result, indent=2) + "\n")
    print(f"edit-to-display latency ms: {latencies}")
    assert alice_errors == [] and bob_errors == []


async def test_the_detail_view_shows_who_views_this_task_and_only_this_task(browser: Browser, server: ServeProcess,
                                                                          tmp_path: Path) -> None:
    alice, alice_errors = await open_board(browser, server, "alice")
    bob, bob_errors = await open_board(browser, server, "bob")
    await card(alice, "T-002").click()
    await expect(alice.locator("#viewers .viewer")).to_have_text(["alice (you)"])
    await card(bob, "T-002").click()
    await expect(bob.locator("#viewers .viewer")).to_have_text(["alice", "bob (you)"])
    await expect(alice.locator("#viewers .viewer")).to_have_text(["alice (you)", "bob"])
    await bob.screenshot(path=str(recorded(ROOT / "docs" / "img" / "board.png", tmp_path)))
    # Closing the view (Esc) removes the viewer on the other side; so does closing the tab.
    await alice.keyboard.press("Escape")
    await expect(bob.locator("#viewers .viewer")).to_have_text(["bob (you)"])
    await card(alice, "T-002").click()
    await expect(bob.locator("#viewers .viewer")).to_have_text(["alice", "bob (you)"])
    await bob.keyboard.press("Escape")
    await card(bob, "T-001").click()  # another task: Alice, who views T-002, is not listed
    await expect(bob.locator("#viewers .viewer")).to_have_text(["bob (you)"])
    await bob.keyboard.press("Escape")
    await card(bob, "T-002").click()
    await expect(bob.locator("#viewers .viewer")).to_have_text(["alice", "bob (you)"])
    await alice.context.close()
    await expect(bob.locator("#viewers .viewer")).to_have_text(["bob (you)"])
    # Nothing on the page lists who is merely connected.
    await bob.keyboard.press("Escape")
    assert "alice" not in await bob.locator("header").inner_text()
    assert alice_errors == [] and bob_errors == []


async def test_after_a_killed_server_the_board_reconnects_and_converges(browser: Browser, server: ServeProcess,
                                                                       redis_url: str) -> None:
    alice, _ = await open_board(browser, server, "alice")
    other = await ServeProcess(redis_url).start()  # a second instance on the same Redis stays up
    try:
        await server.kill()
        await expect(alice.locator("#conn")).to_have_attribute("data-status", "reconnecting")
        py = PyClient(other.port)
        await py.update("T-001", title="Edited while you were away", status="doing")
        await py.update("T-099", title="Created while you were away", status="todo")
        await server.start()  # same port: the page's own backoff brings it back
        await expect(alice.locator("#conn")).to_have_attribute("data-status", "connected", timeout=20_000)
        await expect(card(alice, "T-001").locator(".title")).to_have_text("Edited while you were away")
        await expect(card(alice, "T-001")).to_have_class("card flash")  # changed while away: highlighted
        await expect(alice.locator('.column[data-status="doing"] .card[data-task-id="T-001"]')).to_be_visible()
        await expect(card(alice, "T-099").locator(".title")).to_have_text("Created while you were away")
        # And it is live again: an edit through the other instance shows up at once.
        await py.update("T-099", status="done")
        await expect(alice.locator('.column[data-status="done"] .card[data-task-id="T-099"]')).to_be_visible()
    finally:
        await other.stop()


async def test_phone_width_and_keyboard_only(browser: Browser, server: ServeProcess) -> None:
    page, errors = await open_board(browser, server, "carol", viewport={"width": 390, "height": 844},
                                    is_mobile=True, has_touch=True)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    boxes = [await c.bounding_box() for c in await page.locator(".column").all()]
    assert len({round(b["x"]) for b in boxes}) == 1, "columns stack in one column at phone width"
    # Tab from the top reaches the new-task field, then the cards; Enter opens a card, Esc closes it.
    await page.locator("body").focus()
    for _ in range(6):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.classList.contains('card')"):
            break
    assert await page.evaluate("document.activeElement.classList.contains('card')")
    task_id = await page.evaluate("document.activeElement.dataset.taskId")
    await page.keyboard.press("Enter")
    await expect(page.locator("#detail")).to_be_visible()
    await expect(page.locator("#detail-id")).to_have_text(task_id)
    await expect(page.locator("#viewers .viewer")).to_have_text(["carol (you)"])
    await page.keyboard.press("Escape")
    await expect(page.locator("#detail")).to_be_hidden()
    assert await page.evaluate("document.activeElement.dataset.taskId") == task_id, "focus returns to the card"
    assert errors == []
