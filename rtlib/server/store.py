"""The Redis layer: tasks, versions and presence entries, each change one atomic Lua script
(the scripts' texts are in :mod:`rtlib.server.scripts`).

It carries out decisions, it does not make them: the version rule (bump by exactly one, per task) is the
script's single ``INCR``; presence facts go back to :mod:`rtlib.protocol.presence`, which turns them into events.

Every key, channel and the pub/sub message framing are built by :mod:`rtlib.server.keyspace` (its docstring is the
table of keys, and says how the layout shards: every script takes every key it touches, all in its workspace's
slot). Presence writes also keep the sweep's workspace registry, and the sweep itself runs per workspace
(:mod:`rtlib.server.sweep`). The task index (``keyspace.index_key``) holds only tasks created since the index
exists: a Redis that kept tasks from an older rtlib (the embedded one keeps nothing) needs them added once, e.g.
``ZADD <index key> 0 {task}`` per task version key of the workspace.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import msgspec
from redis.asyncio import Redis

from rtlib.protocol.config import HistoryConfig
from rtlib.protocol.presence import EntryFact, member
from rtlib.protocol.presence_protocol import Expire, Hold, Remove, Upsert
from rtlib.server import keyspace, scripts
from rtlib.server.resp import RespConnection, script_sha
from rtlib.server.sweep import Sweep, evalsha, pipelined

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
                 idempotency_ttl: float = 300.0, publish: str = "PUBLISH", updates: Any = None) -> None:
        self.redis = redis
        self._publish = publish
        # The hot path (update + publish) goes through the lean connection when there is one.
        self.fast = fast
        # Where the update script runs: the lean connection, or (--durability replica) a
        # rtlib.server.durability.ReplicaAcks that also WAITs for a replica; chosen once, so async costs nothing.
        self._updates = updates or fast
        self.history = history or HistoryConfig()
        self.idempotency_ttl = idempotency_ttl
        # publish: "SPUBLISH" on Redis Cluster (sharded pub/sub, rtlib.server.cluster_client), for every event
        # the scripts publish; self.fast then sends publish() as SPUBLISH too.
        sized = {name: scripts.sized(text, self.history, publish) for name, text in
                 {"update": scripts.UPDATE, "upsert": scripts.UPSERT, "remove": scripts.REMOVE,
                  "expire": scripts.EXPIRE}.items()}
        self._update_text = sized["update"].encode()
        self._update_sha = script_sha(sized["update"])
        self._update = redis.register_script(sized["update"])
        self._get = redis.register_script(scripts.GET)
        self._upsert = redis.register_script(sized["upsert"])
        self._remove = redis.register_script(sized["remove"])
        self.sweep = Sweep(redis, sized["expire"], self.load_scripts)
        self._hold = redis.register_script(scripts.HOLD)
        self._history = redis.register_script(scripts.HISTORY)
        self._history_text, self._history_sha = scripts.HISTORY.encode(), script_sha(scripts.HISTORY)

    async def load_scripts(self) -> None:
        """Load every script into Redis up front, so no first call pays a ``NOSCRIPT`` round trip (and the
        fakeredis fallback, whose TCP server drops the connection on ``NOSCRIPT``, works)."""
        for script in (self._update, self._get, self._upsert, self._remove, self._hold, self._history,
                       *self.sweep.scripts):
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
        keys = scripts.update_keys(ws, task, ref_key)
        if self.fast is not None:
            version, retry = await self._updates.evalsha(self._update_text, self._update_sha, keys, args)
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
            await self.fast.call(self._publish, keyspace.channel(ws), message)
        else:
            await self.redis.execute_command(self._publish, keyspace.channel(ws), message)

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
        whole page for every reader. Two steps (the page's ids, then every task of the page in one script): the
        script must be given the keys of the tasks it reads (:data:`rtlib.server.scripts.GET`)."""
        ids = [_text(i) for i in await self.redis.zrangebylex(keyspace.index_key(ws), f"({cursor}" if cursor else "-",
                                                             "+", start=0, num=limit + 1)]
        more, ids = len(ids) > limit, ids[:limit]
        flat = await self._get(keys=[k for i in ids for k in keyspace.task_keys(ws, i)]) if ids else []
        tasks = []
        for n, task in enumerate(ids):
            pairs = flat[2 * n + 1]
            fields = {_text(pairs[j], "replace"): msgspec.Raw(_utf8(pairs[j + 1])) for j in range(0, len(pairs), 2)}
            tasks.append((task, int(flat[2 * n]), fields))
        return tasks, (tasks[-1][0] if more and tasks else None)

    # --- presence: each operation is one script that also publishes its event ---------------------------------
    # Joins, heartbeats and back-dates also keep the sweep's workspace registry (rtlib.server.sweep): a REGISTER
    # after the scripts for each workspace whose oldest heartbeat they lowered, and now and then a ZADD in the
    # same round trip. Every batch is one pipeline of EVALSHA (no SCRIPT EXISTS round trip per call).
    async def _pipeline(self, script: Any, calls: list[tuple[list[str], list[Any]]],
                        scores: dict[str, float] | None = None) -> list[Any]:
        """Run ``script`` once per ``(keys, args)`` in one round trip (after the registry's ZADDs, if
        ``scores``); the scripts' replies."""
        head = self.sweep.announce(scores or {})
        replies = await pipelined(self.redis, [*head, *(evalsha(script, k, a) for k, a in calls)], self.load_scripts)
        return replies[len(head):]

    async def presence_upsert(self, op: Upsert) -> tuple[EntryFact, list[str]]:
        """Join or heartbeat one connection's entry; the fact and the task's viewers."""
        return (await self.presence_upsert_many([op]))[0]

    async def presence_remove(self, op: Remove) -> EntryFact:
        return (await self.presence_remove_many([op]))[0]

    async def presence_upsert_many(self, ops: list[Upsert]) -> list[tuple[EntryFact, list[str]]]:
        """Run many joins/heartbeats in one round trip (each still one atomic script): a ``presence.pong`` for
        every task a connection views costs one round trip, not one per task."""
        results = await self._pipeline(self._upsert, [(keyspace.presence_keys(op.workspace_id, op.task_id),
                                                       self._upsert_args(op)) for op in ops],
                                       _earliest((op.workspace_id, op.now) for op in ops))
        await self.sweep.registered(_earliest((op.workspace_id, op.now) for op, r in zip(ops, results, strict=True)
                                              if int(r[3])))
        return [(EntryFact(op.workspace_id, op.task_id, op.conn_id, op.user_id, r[0] == 1, int(r[1])),
                 sorted(_text(v) for v in r[2])) for op, r in zip(ops, results, strict=True)]

    async def presence_remove_many(self, ops: list[Remove]) -> list[EntryFact]:
        """Run many removals in one round trip (each still one atomic script): a closing connection's entries."""
        results = await self._pipeline(self._remove, [(keyspace.presence_keys(op.workspace_id, op.task_id),
                                                       self._remove_args(op)) for op in ops])
        return [EntryFact(op.workspace_id, op.task_id, op.conn_id, op.user_id, r[0] == 1, int(r[1]))
                for op, r in zip(ops, results, strict=True)]

    async def presence_hold_many(self, ops: list[Hold]) -> None:
        """Back-date a lost connection's entries (leave grace), in one round trip."""
        results = await self._pipeline(self._hold, [(keyspace.presence_keys(op.workspace_id, op.task_id),
                                                     [member(op.conn_id, op.user_id), repr(op.score), op.task_id])
                                                    for op in ops],
                                       _earliest((op.workspace_id, op.score) for op in ops))
        await self.sweep.registered(_earliest((op.workspace_id, op.score) for op, r in zip(ops, results, strict=True)
                                              if int(r)))

    async def presence_expire(self, op: Expire, max_tasks: int = 500) -> list[EntryFact]:
        """Pop every entry whose last heartbeat is ``<= op.cutoff``.

        Works in scripts of at most ``max_tasks`` tasks each (so Redis is never blocked for long) until no due
        task is left. Safe to call from every instance at once: each entry is popped by exactly one call.
        """
        return await self.sweep.sweep(op.cutoff, op.template, max_tasks)

    @staticmethod
    def _upsert_args(op: Upsert) -> list[Any]:
        return [member(op.conn_id, op.user_id), op.user_id, repr(op.now), op.task_id, op.workspace_id, op.conn_id,
                op.announce]

    @staticmethod
    def _remove_args(op: Remove) -> list[Any]:
        return [member(op.conn_id, op.user_id), op.user_id, op.task_id, op.workspace_id, op.announce]


def _earliest(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Each workspace's earliest score among ``(workspace, score)`` pairs."""
    out: dict[str, float] = {}
    for ws, score in pairs:
        out[ws] = min(score, out.get(ws, score))
    return out
