"""Fire-and-forget tasks that cannot vanish mid-run.

The event loop keeps only a weak reference to a task: one whose result nobody holds can be garbage-collected
before it finishes (the ``asyncio.create_task`` documentation's warning). :func:`spawn` keeps a strong
reference until the task is done, and logs its failure instead of "Task exception was never retrieved".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["spawn"]

log = logging.getLogger("rtlib.tasks")
_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
    """Schedule ``coro`` on the running loop, holding it until it finishes."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("background task %s failed", task.get_name(), exc_info=exc)
