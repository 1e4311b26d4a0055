"""The Redis Lua scripts of :mod:`rtlib.server.store`: each change to tasks, presence and history is one of them.

Each script runs atomically in Redis. A script that changes what a workspace sees also publishes the event
itself (``emit``), so the change and its announcement are one step: observers see changes in the order the store
made them. ``HIST_LEN`` and ``HIST_AGE_MS`` are written into the texts by :func:`sized` (they are constants of
the scripts, the same on every instance of a cluster).

Every script takes every key it touches in ``KEYS``, built by :mod:`rtlib.server.keyspace` (the comment above
each script gives their order; :func:`update_keys` builds the hot path's). No script builds a key: Redis
documents that as unsupported even on one server, and on Redis Cluster every key of one call must be in one
slot, which the workspace hash tag guarantees for a workspace's scripts. A script whose keys depend on what it
reads (the tasks of a ``task.list`` page, the due tasks of a sweep) is preceded by a plain read of those ids.
Only the workspace channel, the pub/sub framing and the history entry's field are built in Lua, from
:data:`rtlib.server.keyspace.LUA` (``$channel``, ``$separator``, ``$history_field``, filled in by :func:`_keyed`
when this module is imported).
"""

from __future__ import annotations

from string import Template

from rtlib.protocol.config import HistoryConfig
from rtlib.server import keyspace

__all__ = ["EXPIRE", "GET", "HISTORY", "HOLD", "REGISTER", "REMOVE", "SETTLE", "UPDATE", "UPSERT", "sized",
           "update_keys", "update_script"]


def _keyed(text: str) -> str:
    """``text`` with each ``$name`` replaced by the Lua expression ``keyspace.LUA[name]``.

    ``string.Template`` rather than ``str.format``: Lua is full of braces (tables), and has no ``$``, so an
    unknown or mistyped placeholder fails here, at import, instead of reaching Redis."""
    return Template(text).substitute(keyspace.LUA)


# The history's epoch, created from the server clock the first time it is needed (after Redis lost it, a new
# one: no old offset can then be resumed). One definition for emit() and the history read.
_EPOCH = """
local function epoch_of(key)
  local epoch = redis.call('GET', key)
  if not epoch then
    local t = redis.call('TIME')
    epoch = t[1] .. string.format('%06d', tonumber(t[2]))
    redis.call('SET', key, epoch)
  end
  return epoch
end
"""

# Every workspace event goes out through emit(): appended to the workspace's history stream (trimmed by length
# and age) and published with its offset (the entry id) and the history's epoch, in the calling script, so
# history order is publish order and a resuming client can be caught up without a gap or a duplicate
# (rtlib.protocol.history). HIST_LEN 0 turns history off: events are published as they are. The epoch and
# stream keys are the caller's KEYS (keyspace.history_keys).
_EMIT = _EPOCH + _keyed("""
local function emit(ws, epoch_key, stream, exclude, event)
  if HIST_LEN == 0 then
    redis.call('PUBLISH', $channel, exclude .. $separator .. event)
    return
  end
  local epoch = epoch_of(epoch_key)
  local id = redis.call('XADD', stream, 'MAXLEN', '~', HIST_LEN, '*', $history_field, event)
  if HIST_AGE_MS > 0 then
    local ms = tonumber(string.match(id, '^(%d+)'))
    redis.call('XTRIM', stream, 'MINID', '~', string.format('%d', ms - HIST_AGE_MS))
  end
  redis.call('PUBLISH', $channel,
             exclude .. $separator .. string.sub(event, 1, -2) .. ',"offset":"' .. id .. '","epoch":"' .. epoch .. '"}')
end
""")

# KEYS (update_keys): ver, fields, index, epoch, stream, and the ref key only when there is one (an empty key
# name would hash to slot 0, another slot). ARGV: workspace, event prefix, event suffix, publish (1/0), ref TTL
# (s), task id, field, value, ... With a ref key, the update is idempotent per (user, ref) for the TTL: a retry
# (after a dropped connection, say) gets the version of the first attempt and bumps nothing. The task index is
# written by the same script that creates the task (version 0 -> 1), so a task is listed exactly when it
# exists, on every instance, with one ZADD per task lifetime rather than per update. Returns {version, retry}.
UPDATE = _EMIT + """
local ref = KEYS[6]
if ref then
  local prior = redis.call('GET', ref)
  if prior then return {tonumber(prior), 1} end
end
local v = redis.call('INCR', KEYS[1])
if v == 1 then redis.call('ZADD', KEYS[3], 0, ARGV[6]) end
if #ARGV > 6 then redis.call('HSET', KEYS[2], unpack(ARGV, 7)) end
if ref then redis.call('SET', ref, v, 'EX', ARGV[5]) end
if ARGV[4] == '1' then emit(ARGV[1], KEYS[4], KEYS[5], '', ARGV[2] .. v .. ARGV[3]) end
return {v, 0}
"""

# KEYS: epoch, stream. ARGV: offset ('' for none), count. The epoch (created here if missing, so a client
# always has one), the oldest and newest entry ids, and up to count entries after the offset.
HISTORY = _EPOCH + """
local epoch = epoch_of(KEYS[1])
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local after = {}
if ARGV[1] ~= '' then after = redis.call('XRANGE', KEYS[2], '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2])) end
return {epoch, first[1] and first[1][1] or false, last[1] and last[1][1] or false, after}
"""

# KEYS: ver, fields of one task, or of each task of a task.list page (ver1, fields1, ver2, fields2...).
# Returns {version, fields, version, fields...}: every task's pair read in one script, so a page is one
# consistent snapshot. task.list reads the page's ids first (ZRANGEBYLEX on the workspace's index, all scores 0,
# after the last id seen: stable while tasks are created concurrently, which SCAN over the version keys is not).
GET = """
local out = {}
for i = 1, #KEYS, 2 do
  table.insert(out, redis.call('GET', KEYS[i]) or '0')
  table.insert(out, redis.call('HGETALL', KEYS[i + 1]))
end
return out
"""

# Keep the workspace's sweep index (KEYS[3] of a presence script) scored by each task's oldest heartbeat (or
# drop the task when it has none); wsmin() is the workspace's oldest heartbeat (a string: a Lua number would be
# truncated to an integer in the reply), or false.
_REINDEX = """
local function reindex(zset, due, task)
  local first = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
  if #first == 0 then redis.call('ZREM', due, task) else redis.call('ZADD', due, first[2], task) end
end
local function wsmin(due)
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if #first == 0 then return false end
  return first[2]
end
local function lowered(before, after)
  if after and (not before or tonumber(after) < tonumber(before)) then return 1 end
  return 0
end
"""

# Presence scripts publish their own event (rtlib.protocol.presence_protocol): the change and its announcement
# are one atomic step, so observers see a user's joins and leaves of a task in the order the store made them.
# UPSERT and HOLD also report whether they lowered the workspace's oldest heartbeat (a first entry, a back-dated
# one): the store then registers the workspace for the sweep again (rtlib.server.sweep).

# KEYS (keyspace.presence_keys): zset, counts, due, epoch, stream. ARGV: member, user, now, task, workspace,
# exclude conn, event. Join and heartbeat are one upsert; the event (presence.joined) goes out when the user's
# first entry was added. Returns {added, n, viewers, lowered}. Only an added entry can lower the workspace's
# oldest heartbeat (the others keep their scores): exactly when now is older than it (or there was none). A
# heartbeat moves its entry's score forward unless the instance's clock went back; the sweep then reaches that
# entry late by at most the step back (reading the oldest on every heartbeat cost 3 µs a call: 12 µs, not 9).
UPSERT = _EMIT + _REINDEX + """
local added = redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
local n, low = 0, 0
if added == 1 then
  n = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  low = lowered(wsmin(KEYS[3]), ARGV[3])
else n = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') end
reindex(KEYS[1], KEYS[3], ARGV[4])
if added == 1 and n == 1 then emit(ARGV[5], KEYS[4], KEYS[5], ARGV[6], ARGV[7]) end
return {added, n, redis.call('HKEYS', KEYS[2]), low}
"""

# KEYS: as UPSERT. ARGV: member, user, task, workspace, event. ZREM's result is the arbiter: one remover wins;
# the message (presence.left) goes out when the user's last entry was removed. Returns {removed, n}.
REMOVE = _EMIT + _REINDEX + """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
local n
if removed == 1 then
  n = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
  if n <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]); n = 0 end
else n = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') end
reindex(KEYS[1], KEYS[3], ARGV[3])
if removed == 1 and n == 0 then emit(ARGV[4], KEYS[4], KEYS[5], '', ARGV[5]) end
return {removed, n}
"""

# KEYS: as UPSERT (epoch and stream unused). ARGV: member, score, task. Back-date an entry that is still there
# (an unclean disconnect under a leave grace): never adds one back, never makes one younger. Returns lowered.
HOLD = _REINDEX + """
local before = wsmin(KEYS[3])
redis.call('ZADD', KEYS[1], 'XX', 'LT', ARGV[2], ARGV[1])
reindex(KEYS[1], KEYS[3], ARGV[3])
return lowered(before, wsmin(KEYS[3]))
"""

# One workspace's share of a sweep. KEYS: due, epoch, stream, then zset and counts of each task in ARGV.
# ARGV: cutoff, event template, workspace, task ids (the due tasks the sweep read from the index just before).
# Pops every entry with score <= cutoff of those tasks: ZREM in this script is the arbiter, so with every
# instance sweeping, each entry is popped exactly once (a task another sweep emptied meanwhile has nothing left).
# A user whose last entry expired gets the template's presence.left, {ws}/{task}/{user} filled in.
# Returns {oldest heartbeat left in the workspace or false, task, member, n, task, member, n...}.
EXPIRE = _EMIT + _REINDEX + """
local out = {}
local ws = ARGV[3]
for i = 4, #ARGV do
  local task = ARGV[i]
  local zset, counts = KEYS[2 * i - 4], KEYS[2 * i - 3]
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', zset, '-inf', ARGV[1])) do
    redis.call('ZREM', zset, m)
    local user = string.sub(m, string.find(m, ':', 1, true) + 1)
    local n = redis.call('HINCRBY', counts, user, -1)
    if n <= 0 then
      redis.call('HDEL', counts, user); n = 0
      local event = string.gsub(ARGV[2], '{(%a+)}', {ws = ws, task = task, user = user})
      emit(ws, KEYS[2], KEYS[3], '', event)
    end
    table.insert(out, task); table.insert(out, m); table.insert(out, n)
  end
  reindex(zset, KEYS[1], task)
end
table.insert(out, 1, wsmin(KEYS[1]))
return out
"""

# The sweep registry, one partition per call (KEYS: keyspace.sweep_keys: workspaces, gens); rtlib.server.sweep
# explains the protocol. REGISTER, ARGV: workspace, score. Lower the workspace's score to at most score (adding
# it if missing) and give the registration a new generation, unique in the partition (a counter, so a
# generation never comes back after the workspace left and returned).
REGISTER = """
redis.call('ZADD', KEYS[1], 'LT', ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], redis.call('HINCRBY', KEYS[2], '', 1))
return 1
"""

# ARGV: workspace, generation the sweep read before EXPIRE ('0' if none), the workspace's oldest heartbeat after
# the sweep ('' if none left).
# Unless a registration came since (another generation: a writer lowered the workspace's oldest heartbeat after
# the sweep read it), drop the workspace (nothing left) or raise its score to its oldest heartbeat. Returns 1 if
# settled, 0 if the generation changed (the workspace is left as it is: visited again by the next sweep).
SETTLE = """
if (redis.call('HGET', KEYS[2], ARGV[1]) or '0') ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1]); redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
end
return 1
"""


def sized(text: str, history: HistoryConfig, publish: str = "PUBLISH") -> str:
    """A script with the history bounds written in (they are constants of the scripts, the same on every
    instance of a cluster). ``publish="SPUBLISH"``: the script publishes to the workspace's shard channel
    (sharded pub/sub, on Redis Cluster: :mod:`rtlib.server.cluster_fanout`); the channel is in the slot of the
    script's keys (the workspace hash tag), as Redis Cluster requires."""
    text = text.replace("HIST_LEN", str(history.length)).replace("HIST_AGE_MS", str(int(history.max_age * 1000)))
    return text if publish == "PUBLISH" else text.replace("redis.call('PUBLISH',", f"redis.call('{publish}',")


def update_script(history: HistoryConfig | None = None) -> str:
    """The text of ``task.update``'s script (the hot path's one Redis call), e.g. for a benchmark's floor."""
    return sized(UPDATE, history or HistoryConfig())


def update_keys(ws: str, task: str, ref_key: str = "") -> list[str]:
    """The KEYS of :data:`UPDATE`, in its order (the ref key, from :func:`keyspace.ref_key`, only if given)."""
    return [*keyspace.task_keys(ws, task), keyspace.index_key(ws), *keyspace.history_keys(ws),
            *([ref_key] if ref_key else [])]
