"""Workspace history and resume, sans-I/O: offsets, epochs and the rule that decides a recovery.

Every event published to a workspace is also appended to a bounded per-workspace history (a Redis Stream,
trimmed by length and age) by the same atomic script that publishes it, and goes out carrying its
``offset`` (the stream entry id, ``"<ms>-<seq>"``) and the history's ``epoch`` (which changes when the
history is lost, e.g. Redis restarted without persistence). A reconnecting client presents the last
``offset`` and ``epoch`` it saw; :func:`decide_resume` says whether the events it missed can be replayed
(``recovered``) or it must resync with ``task.get``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "EPOCH_RE",
    "OFFSET_RE",
    "Resume",
    "decide_resume",
    "offset_key",
    "offset_of",
    "with_offset",
    "without_offset",
]

#: A stream entry id as the wire carries it; ``0-0`` means "before the first event".
OFFSET_RE = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
EPOCH_RE = re.compile(r"[0-9]{1,32}")
_MARK = b',"offset":"'


def offset_key(offset: str) -> tuple[int, int]:
    """Sort key of an offset: ``"1700000000000-3"`` -> ``(1700000000000, 3)``."""
    ms, _, seq = offset.partition("-")
    return int(ms), int(seq)


def with_offset(event: bytes, offset: str, epoch: str) -> bytes:
    """The event as delivered: its JSON object with ``offset`` and ``epoch`` appended (what the Redis scripts
    do before publishing, and what a replay does to a stored event)."""
    return b'%s,"offset":"%s","epoch":"%s"}' % (event[:-1], offset.encode(), epoch.encode())


def without_offset(delivered: bytes) -> bytes:
    """The event as stored in the history (a delivered event less its ``offset`` and ``epoch``)."""
    head, found, _ = delivered.rpartition(_MARK)
    return head + b"}" if found else delivered


def offset_of(delivered: bytes) -> str | None:
    """The offset a delivered event carries, or None (events of the ``split`` study mode carry none)."""
    _, found, tail = delivered.rpartition(_MARK)
    return tail[: tail.index(b'"')].decode() if found else None


@dataclass(frozen=True)
class Resume:
    """The outcome of a resume request: ``recovered`` and, if so, how many events are replayed."""

    recovered: bool
    reason: str
    replay: int = 0


def decide_resume(client_offset: str, client_epoch: str, epoch: str, first: str | None, last: str | None,
                  after: int, max_replay: int) -> Resume:
    """Can a client that saw everything up to ``client_offset`` (in ``client_epoch``) be caught up?

    ``first``/``last`` are the history's oldest and newest entry ids (None when it is empty), ``after`` how
    many entries follow ``client_offset`` (counted up to ``max_replay + 1``). Recovery needs the same epoch
    and an unbroken history after the offset: the offset is not older than the oldest entry kept (else
    entries right after it may have been trimmed), and not newer than the newest.
    """
    if client_epoch != epoch:
        return Resume(False, "epoch changed: the history was lost")
    if last is None:
        return Resume(client_offset == "0-0", "history empty")  # nothing was ever written, or it was evicted
    key = offset_key(client_offset)
    if key > offset_key(last):
        return Resume(False, "offset is newer than the history")
    if key != offset_key(last) and first is not None and key < offset_key(first):
        # Entries right after the offset may have been trimmed (a client that saw "0-0", an empty history,
        # lands here too once anything was written: safe, it resyncs).
        return Resume(False, "offset is older than the history kept")
    if after > max_replay:
        return Resume(False, f"more than {max_replay} events missed")
    return Resume(True, "recovered", after)
