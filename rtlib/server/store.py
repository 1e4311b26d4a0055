"""The Redis layer: tasks, versions and presence entries, each change one atomic Lua script.

It carries out decisions, it does not make them: the version rule (bump by exactly one, per task) is the
script's single ``INCR``; presence facts go back to :mod:`rtlib.protocol.presence`, which turns them into events.

Keys (ids never contain ``:``; see :data:`rtlib.protocol.schema.Id`):

* ``rt:{ws}:ver:{task}`` (string) the task's version; ``rt:{ws}:task:{task}`` (hash) field -> JSON value
* ``rt:{ws}:pres:{task}`` (sorted set) member ``conn:user``, score = last heartbeat (Unix seconds)
* ``rt:{ws}:pres:{task}:n`` (hash) user -> number of that user's entries on the task
* ``rt:presence:due`` (sorted set) member ``ws:task``, score = oldest heartbeat on that task (sweep index)
* channel ``rt:chan:{ws}``: messages are ``exclude_conn_id + "\\n" + event JSON`` (see :mod:`rtlib.server.fanout`)
"""

from __future__ import annotations

from typing import Any

import msgspec
from redis.asyncio import Redis

from rtlib.protocol.presence import EntryFact, member
from rtlib.protocol.presence_protocol import Expire, Remove, Upsert
from rtlib.server.resp import RespConnection, script_sha

__all__ = ["KEY_PREFIX", "RedisStore", "channel"]

KEY_PREFIX = "rt:"
DUE_KEY = "rt:presence:due"


def channel(ws: str) -> str:
    return f"rt:chan:{ws}"


def _task_keys(ws: str, task: str) -> list[str]:
    return [f"rt:{ws}:ver:{task}", f"rt:{ws}:task:{task}"]


def _presence_keys(ws: str, task: str) -> list[str]:
    zset = f"rt:{ws}:pres:{task}"
    return [zset, zset + ":n", DUE_KEY]


# KEYS: ver, fields. ARGV: channel, message prefix, message suffix, publish (1/0), field, value, ...
_UPDATE = """
local v = redis.call('INCR', KEYS[1])
if #ARGV > 4 then redis.call('HSET', KEYS[2], unpack(ARGV, 5)) end
if ARGV[4] == '1' then redis.call('PUBLISH', ARGV[1], ARGV[2] .. v .. ARGV[3]) end
return v
"""

# KEYS: ver, fields.
_GET = """
return {redis.call('GET', KEYS[1]) or '0', redis.call('HGETALL', KEYS[2])}
"""

# Keep the sweep index's score = the oldest heartbeat of the task (or drop it when the task has none).
_REINDEX = """
local function reindex(zset, due, due_member)
  local first = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
  if #first == 0 then redis.call('ZREM', due, due_member) else redis.call('ZADD', due, first[2], due_member) end
end
"""

# Presence scripts publish their own event (rtlib.protocol.presence_protocol): the change and its announcement
# are one atomic step, so observers see a user's joins and leaves of a task in the order the store made them.

# KEYS: zset, counts, due. ARGV: member, user, now, due member, channel, message. Join and heartbeat are one
# upsert; the message (presence.joined) goes out when the user's first entry on the task was added.
_UPSERT = _REINDEX + """
local added = redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
local n
if added == 1 then n = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
else n = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') end
reindex(KEYS[1], KEYS[3], ARGV[4])
if added == 1 and n == 1 then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return {added, n, redis.call('HKEYS', KEYS[2])}
"""

# KEYS: zset, counts, due. ARGV: member, user, due member, channel, message. ZREM's result is the arbiter:
# one remover wins; the message (presence.left) goes out when the user's last entry was removed.
_REMOVE = _REINDEX + """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
local n
if removed == 1 then
  n = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
  if n <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]); n = 0 end
else n = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') end
reindex(KEYS[1], KEYS[3], ARGV[3])
if removed == 1 and n == 0 then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return {removed, n}
"""

# KEYS: due. ARGV: cutoff, max tasks, event template. Pops every entry with score <= cutoff on up to N due
# tasks; the keys of those tasks are derived from the index (single-node Redis: the workbench does not target
# Cluster). A user whose last entry expired gets the template's presence.left, {ws}/{task}/{user} filled in.
_EXPIRE = _REINDEX + """
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, dm in ipairs(due) do
  local sep = string.find(dm, ':', 1, true)
  local ws, task = string.sub(dm, 1, sep - 1), string.sub(dm, sep + 1)
  local zset = 'rt:' .. ws .. ':pres:' .. task
  local counts = zset .. ':n'
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', zset, '-inf', ARGV[1])) do
    redis.call('ZREM', zset, m)
    local user = string.sub(m, string.find(m, ':', 1, true) + 1)
    local n = redis.call('HINCRBY', counts, user, -1)
    if n <= 0 then
      redis.call('HDEL', counts, user); n = 0
      local event = string.gsub(ARGV[3], '{(%a+)}', {ws = ws, task = task, user = user})
      redis.call('PUBLISH', 'rt:chan:' .. ws, '\\n' .. event)
    end
    table.insert(out, ws); table.insert(out, task); table.insert(out, m); table.insert(out, n)
  end
  reindex(zset, KEYS[1], dm)
end
table.insert(out, 1, #due)
return out
"""


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

    def __init__(self, redis: Redis, fast: RespConnection | None = None) -> None:
        self.redis = redis
        # The hot path (update + publish) goes through the lean connection when there is one.
        self.fast = fast
        self._update_sha = script_sha(_UPDATE)
        self._update = redis.register_script(_UPDATE)
        self._get = redis.register_script(_GET)
        self._upsert = redis.register_script(_UPSERT)
        self._remove = redis.register_script(_REMOVE)
        self._expire = redis.register_script(_EXPIRE)

    # --- tasks --------------------------------------------------------------------------------------------
    async def update_task(self, ws: str, task: str, changes: dict[str, msgspec.Raw], prefix: bytes,
                          suffix: bytes, publish: bool = True) -> int:
        """Bump the task's version by one, write the changed fields and (if ``publish``) publish
        ``prefix + version + suffix`` to the workspace channel, atomically. Returns the new version."""
        args: list[Any] = [channel(ws), b"\n" + prefix, suffix, b"1" if publish else b"0"]
        for name, value in changes.items():
            args += [name, bytes(value)]
        if self.fast is not None:
            return int(await self.fast.evalsha(_UPDATE.encode(), self._update_sha, _task_keys(ws, task), args))
        return int(await self._update(keys=_task_keys(ws, task), args=args))

    async def publish(self, ws: str, event: bytes, exclude_conn: str = "") -> None:
        """Publish one event to every instance serving the workspace (``exclude_conn`` skips one connection)."""
        message = exclude_conn.encode() + b"\n" + event
        if self.fast is not None:
            await self.fast.call("PUBLISH", channel(ws), message)
        else:
            await self.redis.publish(channel(ws), message)

    async def get_task(self, ws: str, task: str) -> tuple[int, dict[str, msgspec.Raw]]:
        """The task's version (0 if it never existed) and all its fields, read atomically.

        Values are checked on the way out: one stored by rtlib before binary frames were validated may hold
        invalid UTF-8, which would make every compliant reader fail its connection (1007). Such bytes are
        replaced with U+FFFD, so a poisoned task stops breaking its readers.
        """
        version, flat = await self._get(keys=_task_keys(ws, task))
        fields = {_text(flat[i], "replace"): msgspec.Raw(_utf8(flat[i + 1])) for i in range(0, len(flat), 2)}
        return int(version), fields

    # --- presence: each operation is one script that also publishes its event ---------------------------------
    async def presence_upsert(self, op: Upsert) -> tuple[EntryFact, list[str]]:
        """Join or heartbeat one connection's entry; the fact and the task's viewers."""
        added, n, viewers = await self._upsert(keys=_presence_keys(op.workspace_id, op.task_id),
                                               args=self._upsert_args(op))
        fact = EntryFact(op.workspace_id, op.task_id, op.conn_id, op.user_id, added == 1, int(n))
        return fact, sorted(_text(v) for v in viewers)

    async def presence_remove(self, op: Remove) -> EntryFact:
        removed, n = await self._remove(keys=_presence_keys(op.workspace_id, op.task_id),
                                        args=self._remove_args(op))
        return EntryFact(op.workspace_id, op.task_id, op.conn_id, op.user_id, removed == 1, int(n))

    async def presence_remove_many(self, ops: list[Remove]) -> list[EntryFact]:
        """Run many removals in one round trip (each still one atomic script): a closing connection's entries."""
        pipe = self.redis.pipeline(transaction=False)
        for op in ops:
            await self._remove(keys=_presence_keys(op.workspace_id, op.task_id), args=self._remove_args(op),
                               client=pipe)
        results = await pipe.execute()
        return [EntryFact(op.workspace_id, op.task_id, op.conn_id, op.user_id, r[0] == 1, int(r[1]))
                for op, r in zip(ops, results, strict=True)]

    async def presence_expire(self, op: Expire, max_tasks: int = 500) -> list[EntryFact]:
        """Pop every entry whose last heartbeat is ``<= op.cutoff``.

        Works in scripts of at most ``max_tasks`` tasks each (so Redis is never blocked for long) until no due
        task is left. Safe to call from every instance at once: each entry is popped by exactly one call.
        """
        facts: list[EntryFact] = []
        while True:
            flat = await self._expire(keys=[DUE_KEY], args=[repr(op.cutoff), max_tasks, op.template])
            facts += self._facts(flat[1:])
            if int(flat[0]) < max_tasks:
                return facts

    @staticmethod
    def _upsert_args(op: Upsert) -> list[Any]:
        return [member(op.conn_id, op.user_id), op.user_id, repr(op.now), f"{op.workspace_id}:{op.task_id}",
                channel(op.workspace_id), op.conn_id.encode() + b"\n" + op.announce]

    @staticmethod
    def _remove_args(op: Remove) -> list[Any]:
        return [member(op.conn_id, op.user_id), op.user_id, f"{op.workspace_id}:{op.task_id}",
                channel(op.workspace_id), b"\n" + op.announce]

    @staticmethod
    def _facts(flat: list[Any]) -> list[EntryFact]:
        facts = []
        for i in range(0, len(flat), 4):
            ws, task, entry, n = _text(flat[i]), _text(flat[i + 1]), _text(flat[i + 2]), int(flat[i + 3])
            conn, _, user = entry.partition(":")
            facts.append(EntryFact(ws, task, conn, user, True, n))
        return facts
