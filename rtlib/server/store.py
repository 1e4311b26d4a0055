"""The Redis layer: tasks, versions and presence entries, each change one atomic Lua script
(the scripts' texts are in :mod:`rtlib.server.scripts`).

It carries out decisions, it does not make them: the version rule (bump by exactly one, per task) is the
script's single ``INCR``; presence facts go back to :mod:`rtlib.protocol.presence`, which turns them into events.

Every key, channel and the pub/sub message framing are built by :mod:`rtlib.server.keyspace` (its docstring
is the table of keys). The task index (``keyspace.index_key``) holds only tasks created since the index exists:
a Redis that kept tasks from an older rtlib (the embedded one keeps nothing) needs them added once, e.g.
``ZADD <index key> 0 {task}`` per task version key of the workspace.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from redis.asyncio import Redis

from rtlib.protocol.config import HistoryConfig
from rtlib.protocol.presence import EntryFact, member
from rtlib.protocol.presence_protocol import Expire, Hold, Remove, Upsert
from rtlib.server import keyspace, scripts
from rtlib.server.resp import RespConnection, script_sha

__all__ = ["RedisStore"]


def _text(value: bytes | str, errors: str = "strict") -> str:
    return value.decode("utf-8", errors) if isinstance(value, bytes) else value


def _utf8(value: bytes) -> bytes:
    """``value`` if it is valid UTF-8, else a copy with each invalid sequence replaced by U+FFFD."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("utf-8", "replace").encode("utf-8")
    return value


class RedisStore:
    """Atomic task and presence operations on one Redis database (shared by every server instance)."""

    def __init__(self, redis: Redis, fast: RespConnection | None = None, history: HistoryConfig | None = None,
                 idempotency_ttl: float = 300.0) -> None:
        self.redis = redis
        # The hot path (update + publish) goes through the lean connection when there is one.
        self.fast = fast
        self.history = history or HistoryConfig()
        self.idempotency_ttl = idempotency_ttl
        sized = {name: scripts.sized(text, self.history) for name, text in
                 {"update": scripts.UPDATE, "upsert": scripts.UPSERT, "remove": scripts.REMOVE,
                  "expire": scripts.EXPIRE}.items()}
        self._update_text = sized["update"].encode()
        self._update_sha = script_sha(sized["update"])
        self._update = redis.register_script(sized["update"])
        self._get = redis.register_script(scripts.GET)
        self._list = redis.register_script(scripts.LIST)
        self._upsert = redis.register_script(sized["upsert"])
        self._remove = redis.register_script(sized["remove"])
        self._expire = redis.register_script(sized["expire"])
        self._hold = redis.register_script(scripts.HOLD)
        self._history = redis.register_script(scripts.HISTORY)
        self._history_text, self._history_sha = scripts.HISTORY.encode(), script_sha(scripts.HISTORY)

    async def load_scripts(self) -> None:
        """Load every script into Redis up front, so no first call pays a ``NOSCRIPT`` round trip (and the
        fakeredis fallback, whose TCP server drops the connection on ``NOSCRIPT``, works)."""
        for script in (self._update, self._get, self._list, self._upsert, self._remove, self._expire, self._hold,
                       self._history):
            await self.redis.script_load(script.script)

    # --- tasks --------------------------------------------------------------------------------------------
    async def update_task(self, ws: str, task: str, changes: dict[str, msgspec.Raw], prefix: bytes,
                          suffix: bytes, publish: bool = True, user: str = "", ref: str | None = None
                          ) -> tuple[int, bool]:
        """Bump the task's version by one, write the changed fields and (if ``publish``) publish
        ``prefix + version + suffix`` to the workspace (and its history), atomically.

        With a ``ref``, the update is idempotent per ``(user, ref)`` for ``idempotency_ttl`` seconds: a retry
        (the same task and changes again) changes nothing and returns the first attempt's version.
        Returns ``(version, was_a_retry)``.
        """
        ref_key = ""
        if ref is not None and self.idempotency_ttl > 0:
            # Only a true retry (same user, ref, task and changes) is deduplicated: a client that reuses a ref
            # for another update (a counter restarted by a page reload, say) must not have it dropped.
            digest = hashlib.blake2b(task.encode(), digest_size=8)
            for name, value in changes.items():
                digest.update(b"\0" + name.encode() + b"\0" + bytes(value))
            ref_key = keyspace.ref_key(ws, user, digest.hexdigest(), ref)
        args: list[Any] = [ws, prefix, suffix, b"1" if publish else b"0", max(1, round(self.idempotency_ttl)), task]
        for name, value in changes.items():
            args += [name, bytes(value)]
        keys = [*keyspace.task_keys(ws, task), ref_key, keyspace.index_key(ws)]
        if self.fast is not None:
            version, retry = await self.fast.evalsha(self._update_text, self._update_sha, keys, args)
        else:
            version, retry = await self._update(keys=keys, args=args)
        return int(version), bool(retry)

    async def history_since(self, ws: str, offset: str | None, max_replay: int
                            ) -> tuple[str, str | None, str | None, list[tuple[str, bytes]]]:
        """The workspace history's epoch (created if missing), oldest and newest entry ids, and up to
        ``max_replay + 1`` entries after ``offset`` (none if ``offset`` is None): ``(id, stored event)``."""
        keys, args = [keyspace.epoch_key(ws), keyspace.history_key(ws)], [offset or "", max_replay + 1]
        # Every handshake runs this: on the lean connection, a storm of handshakes neither waits for pool
        # connections nor makes new ones (redis-py builds each new connection slowly: it reads package
        # metadata), which profiling showed as a sixth of the server's busy time in a 400-connection storm.
        if self.fast is not None:
            epoch, first, last, flat = await self.fast.evalsha(self._history_text, self._history_sha, keys, args)
        else:
            epoch, first, last, flat = await self._history(keys=keys, args=args)
        entries = [(_text(entry[0]), entry[1][1]) for entry in flat]
        return _text(epoch), _text(first) if first else None, _text(last) if last else None, entries

    async def publish(self, ws: str, event: bytes, exclude_conn: str = "") -> None:
        """Publish one event to every instance serving the workspace (``exclude_conn`` skips one connection)."""
        message = keyspace.frame(event, exclude_conn)
        if self.fast is not None:
            await self.fast.call("PUBLISH", keyspace.channel(ws), message)
        else:
            await self.redis.publish(keyspace.channel(ws), message)

    async def get_task(self, ws: str, task: str) -> tuple[int, dict[str, msgspec.Raw]]:
        """The task's version (0 if it never existed) and all its fields, read atomically.

        Values are checked on the way out: one stored by rtlib before binary frames were validated may hold
        invalid UTF-8, which would make every compliant reader fail its connection (1007). Such bytes are
        replaced with U+FFFD, so a poisoned task stops breaking its readers.
        """
        version, flat = await self._get(keys=keyspace.task_keys(ws, task))
        fields = {_text(flat[i], "replace"): msgspec.Raw(_utf8(flat[i + 1])) for i in range(0, len(flat), 2)}
        return int(version), fields

    async def list_tasks(self, ws: str, cursor: str | None, limit: int
                         ) -> tuple[list[tuple[str, int, dict[str, msgspec.Raw]]], str | None]:
        """Up to ``limit`` tasks after ``cursor`` (exclusive) in task id order, each ``(id, version, fields)``,
        and the cursor of the next page (``None`` on the last page). Works on any instance: the index is in Redis.
        Values are repaired on the way out exactly as in :meth:`get_task`: one poisoned task must not break a
        whole page for every reader."""
        flat = await self._list(keys=[keyspace.index_key(ws)],
                                args=[keyspace.workspace_prefix(ws), cursor or "", limit])
        tasks = []
        for i in range(1, len(flat), 3):
            pairs = flat[i + 2]
            fields = {_text(pairs[j], "replace"): msgspec.Raw(_utf8(pairs[j + 1])) for j in range(0, len(pairs), 2)}
            tasks.append((_text(flat[i]), int(flat[i + 1]), fields))
        return tasks, (tasks[-1][0] if int(flat[0]) and tasks else None)

    # --- presence: each operation is one script that also publishes its event ---------------------------------
    async def presence_upsert(self, op: Upsert) -> tuple[EntryFact, list[str]]:
        """Join or heartbeat one connection's entry; the fact and the task's viewers."""
        added, n, viewers = await self._upsert(keys=keyspace.presence_keys(op.workspace_id, op.task_id),
                                               args=self._upsert_args(op))
        fact = EntryFact(op.workspace_id, op.task_id, op.conn_id, op.user_id, added == 1, int(n))
        return fact, sorted(_text(v) for v in viewers)

    async def presence_remove(self, op: Remove) -> EntryFact:
        removed, n = await self._remove(keys=keyspace.presence_keys(op.workspace_id, op.task_id),
                                        args=self._remove_args(op))
        return EntryFact(op.workspace_id, op.task_id, op.conn_id, op.user_id, removed == 1, int(n))

    async def presence_upsert_many(self, ops: list[Upsert]) -> list[tuple[EntryFact, list[str]]]:
        """Run many joins/heartbeats in one round trip (each still one atomic script): a ``presence.pong`` for
        every task a connection views costs one round trip, not one per task."""
        if len(ops) == 1:
            return [await self.presence_upsert(ops[0])]
        pipe = self.redis.pipeline(transaction=False)
        for op in ops:
            await self._upsert(keys=keyspace.presence_keys(op.workspace_id, op.task_id), args=self._upsert_args(op),
                               client=pipe)
        results = await pipe.execute()
        return [(EntryFact(op.workspace_id, op.task_id, op.conn_id, op.user_id, r[0] == 1, int(r[1])),
                 sorted(_text(v) for v in r[2])) for op, r in zip(ops, results, strict=True)]

    async def presence_remove_many(self, ops: list[Remove]) -> list[EntryFact]:
        """Run many removals in one round trip (each still one atomic script): a closing connection's entries."""
        pipe = self.redis.pipeline(transaction=False)
        for op in ops:
            await self._remove(keys=keyspace.presence_keys(op.workspace_id, op.task_id), args=self._remove_args(op),
                               client=pipe)
        results = await pipe.execute()
        return [EntryFact(op.workspace_id, op.task_id, op.conn_id, op.user_id, r[0] == 1, int(r[1]))
                for op, r in zip(ops, results, strict=True)]

    async def presence_hold_many(self, ops: list[Hold]) -> None:
        """Back-date a lost connection's entries (leave grace), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for op in ops:
            await self._hold(keys=keyspace.presence_keys(op.workspace_id, op.task_id),
                             args=[member(op.conn_id, op.user_id), repr(op.score),
                                   keyspace.due_member(op.workspace_id, op.task_id)],
                             client=pipe)
        await pipe.execute()

    async def presence_expire(self, op: Expire, max_tasks: int = 500) -> list[EntryFact]:
        """Pop every entry whose last heartbeat is ``<= op.cutoff``.

        Works in scripts of at most ``max_tasks`` tasks each (so Redis is never blocked for long) until no due
        task is left. Safe to call from every instance at once: each entry is popped by exactly one call.
        """
        facts: list[EntryFact] = []
        while True:
            flat = await self._expire(keys=[keyspace.DUE_KEY], args=[repr(op.cutoff), max_tasks, op.template])
            facts += self._facts(flat[1:])
            if int(flat[0]) < max_tasks:
                return facts

    @staticmethod
    def _upsert_args(op: Upsert) -> list[Any]:
        return [member(op.conn_id, op.user_id), op.user_id, repr(op.now),
                keyspace.due_member(op.workspace_id, op.task_id), op.workspace_id, op.conn_id, op.announce]

    @staticmethod
    def _remove_args(op: Remove) -> list[Any]:
        return [member(op.conn_id, op.user_id), op.user_id, keyspace.due_member(op.workspace_id, op.task_id),
                op.workspace_id, op.announce]

    @staticmethod
    def _facts(flat: list[Any]) -> list[EntryFact]:
        facts = []
        for i in range(0, len(flat), 4):
            ws, task, entry, n = _text(flat[i]), _text(flat[i + 1]), _text(flat[i + 2]), int(flat[i + 3])
            conn, _, user = entry.partition(":")
            facts.append(EntryFact(ws, task, conn, user, True, n))
        return facts
