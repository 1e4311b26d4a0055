"""``/app/query.html`` (rtlib-query.js + TanStack Query, no framework) in Debian's Chromium, driven by Playwright.

Two users on a real ``rtlib serve`` (on the session's Redis): an edit saved by one appears on the other's
page; an edit the server refuses (a field name that is not one, protocol.md §5) is shown at once, then rolled
back on screen, and never reaches the other page. Without Playwright or Chromium the test skips, except with
``CI=true``, where that is a failure. Writes nothing into the repository.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import SECRET, token
from websockets.asyncio.client import connect

from rtlib.server.demo import SAMPLE_TASKS
from rtlib.server.redis_process import free_port


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(f"{reason}; browser test skipped", allow_module_level=True)


CHROMIUM = os.environ.get("RTLIB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # pragma: no cover - the dev extra installs it
    _missing("playwright is not installed (pip install -e '.[dev]')")
if CHROMIUM is None:  # pragma: no cover - .ci/run installs Debian's chromium
    _missing("there is no Chromium binary (apt-get install chromium, or set RTLIB_CHROMIUM)")

WS = "w1"


class Serve:
    """One ``rtlib serve`` process on a free port."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url, self.port = redis_url, free_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Serve:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rtlib.cli", "serve", "--redis", self.redis_url, "--port", str(self.port),
            "--secret", SECRET, "--log-level", "WARNING",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        assert b"serving" in line, line
        return self

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def page_url(self, user: str) -> str:
        return f"http://127.0.0.1:{self.port}/app/query.html#workspace={WS}&token={token(user, WS)}"

    async def seed(self) -> None:
        """The demo's tasks T-001 ... T-008, written through the wire protocol."""
        url = f"ws://127.0.0.1:{self.port}/ws?token={token('seed', WS)}&workspace={WS}"
        async with connect(url, compression=None) as ws:
            assert json.loads(await ws.recv())["type"] == "session.welcome"
            for i, fields in enumerate(SAMPLE_TASKS, start=1):
                await ws.send(json.dumps({"type": "task.update", "workspaceId": WS, "payload": {
                    "taskId": f"T-{i:03d}", "changes": fields, "ref": f"seed-{i}"}}))
                while (json.loads(await asyncio.wait_for(ws.recv(), 5)))["type"] != "ack":
                    pass


@pytest.fixture
async def server(redis_url: str) -> AsyncIterator[Serve]:
    proc = await Serve(redis_url).start()
    try:
        await proc.seed()
        yield proc
    finally:
        await proc.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        await b.close()


async def open_page(browser: Browser, server: Serve, user: str) -> tuple[Page, list[str]]:
    context = await browser.new_context(viewport={"width": 1100, "height": 800})
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(server.page_url(user))
    await expect(page.locator("#conn")).to_have_attribute("data-status", "connected")
    await expect(page.locator(".task")).to_have_count(len(SAMPLE_TASKS))
    return page, errors


def title(page: Page, task_id: str) -> Any:
    return page.locator(f'.task[data-task-id="{task_id}"] .title')


RECORD_TITLES = """(taskId) => { window.titles = []; const el = () =>
    document.querySelector(`.task[data-task-id="${taskId}"] .title`);
    new MutationObserver(() => { const t = el().textContent; if (window.titles.at(-1) !== t) window.titles.push(t); })
      .observe(el(), {subtree: true, childList: true, characterData: true}); }"""


async def test_two_users_an_edit_shows_on_the_other_page_and_a_refused_one_rolls_back(
        browser: Browser, server: Serve) -> None:
    alice, alice_errors = await open_page(browser, server, "alice")
    bob, bob_errors = await open_page(browser, server, "bob")
    await expect(title(bob, "T-002")).to_have_text("Fix login redirect loop")

    # Both open T-002: each sees the other in the task's viewer list (a query fed by presence).
    await alice.locator('.task[data-task-id="T-002"]').click()
    await bob.locator('.task[data-task-id="T-002"]').click()
    await expect(alice.locator("#viewers .viewer")).to_have_text(["alice (you)", "bob"])
    await expect(bob.locator("#viewers .viewer")).to_have_text(["alice", "bob (you)"])

    # An edit saved by Alice appears in Bob's list and in his open task.
    await alice.fill("#f-title", "Fix the login redirect loop")
    await alice.click("#save")
    await expect(title(bob, "T-002")).to_have_text("Fix the login redirect loop", timeout=2000)
    await expect(bob.locator("#f-title")).to_have_value("Fix the login redirect loop")
    await expect(alice.locator("#detail-state")).to_have_text("Version 2")  # confirmed: no "saving…"
    await expect(alice.locator("#notice")).to_be_hidden()

    # A refused edit: shown at once (optimistic), rolled back when the server's error arrives.
    await alice.locator('.task[data-task-id="T-003"]').click()
    for page in (alice, bob):
        await page.evaluate(RECORD_TITLES, "T-003")
    await alice.fill("#f-title", "Release notes, done")
    await alice.fill("#f-field", "due date")  # not a field name: the whole update is refused
    await alice.fill("#f-value", "Friday")
    await alice.click("#save")
    await expect(alice.locator("#notice")).to_contain_text("Not saved, rolled back")
    await expect(alice.locator("#notice")).to_contain_text("invalid task.update payload")
    await expect(title(alice, "T-003")).to_have_text("Write release notes for 2.4")
    await expect(alice.locator("#f-title")).to_have_value("Write release notes for 2.4")
    await expect(alice.locator("#extra")).not_to_contain_text("due date")
    assert await alice.evaluate("window.titles") == ["Release notes, done", "Write release notes for 2.4"]
    assert await alice.evaluate("window.rtlibQuery.client.tasks.get('T-003').version") == 1
    # Bob's page never showed it. (An accepted edit after it shows that Bob's page is still listening.)
    await alice.fill("#f-title", "Write release notes for 2.5")
    await alice.click("#save")
    await expect(title(bob, "T-003")).to_have_text("Write release notes for 2.5", timeout=2000)
    assert await bob.evaluate("window.titles") == ["Write release notes for 2.5"]
    assert alice_errors == [] and bob_errors == []
