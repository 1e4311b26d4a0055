"""The Redis Lua scripts of :mod:`rtlib.server.store`: each change to tasks, presence and history is one of them.

Each script runs atomically in Redis. A script that changes what a workspace sees also publishes the event
itself (``emit``), so the change and its announcement are one step: observers see changes in the order the store
made them. ``HIST_LEN`` and ``HIST_AGE_MS`` are written into the texts by :func:`sized` (they are constants of
the scripts, the same on every instance of a cluster). Every key and channel a script builds itself, and the
pub/sub framing, come from :data:`rtlib.server.keyspace.LUA` (``$channel``, ``$epoch``... below, filled in by
:func:`_keyed` when this module is imported), so the scripts and the Python side cannot disagree on the layout.
"""

from __future__ import annotations

from string import Template

from rtlib.protocol.config import HistoryConfig
from rtlib.server import keyspace

__all__ = ["COUNT", "EXPIRE", "GET", "HISTORY", "HOLD", "LIST", "REMOVE", "UPDATE", "UPSERT", "sized", "update_script"]


def _keyed(text: str) -> str:
    """``text`` with each ``$name`` replaced by the Lua expression ``keyspace.LUA[name]``.

    ``string.Template`` rather than ``str.format``: Lua is full of braces (tables), and has no ``$``, so an
    unknown or mistyped placeholder fails here, at import, instead of reaching Redis."""
    return Template(text).substitute(keyspace.LUA)


# Every workspace event goes out through emit(): appended to the workspace's history stream (trimmed by length
# and age) and published with its offset (the entry id) and the history's epoch, in the calling script, so
# history order is publish order and a resuming client can be caught up without a gap or a duplicate
# (rtlib.protocol.history). HIST_LEN 0 turns history off: events are published as they are.
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

_EMIT = _EPOCH + _keyed("""
local function emit(ws, exclude, event)
  if HIST_LEN == 0 then
    redis.call('PUBLISH', $channel, exclude .. $separator .. event)
    return
  end
  local epoch = epoch_of($epoch)
  local stream = $history
  local id = redis.call('XADD', stream, 'MAXLEN', '~', HIST_LEN, '*', 'e', event)
  if HIST_AGE_MS > 0 then
    local ms = tonumber(string.match(id, '^(%d+)'))
    redis.call('XTRIM', stream, 'MINID', '~', string.format('%d', ms - HIST_AGE_MS))
  end
  redis.call('PUBLISH', $channel,
             exclude .. $separator .. string.sub(event, 1, -2) .. ',"offset":"' .. id .. '","epoch":"' .. epoch .. '"}')
end
""")

# KEYS: ver, fields, ref key (or ''), index. ARGV: workspace, event prefix, event suffix, publish (1/0), ref TTL
# (s), task id, field, value, ... With a ref key, the update is idempotent per (user, ref) for the TTL: a retry
# (after a dropped connection, say) gets the version of the first attempt and bumps nothing. The task index is
# written by the same script that creates the task (version 0 -> 1), so a task is listed exactly when it
# exists, on every instance, with one ZADD per task lifetime rather than per update. Returns {version, retry}.
UPDATE = _EMIT + """
if KEYS[3] ~= '' then
  local prior = redis.call('GET', KEYS[3])
  if prior then return {tonumber(prior), 1} end
end
local v = redis.call('INCR', KEYS[1])
if v == 1 then redis.call('ZADD', KEYS[4], 0, ARGV[6]) end
if #ARGV > 6 then redis.call('HSET', KEYS[2], unpack(ARGV, 7)) end
if KEYS[3] ~= '' then redis.call('SET', KEYS[3], v, 'EX', ARGV[5]) end
if ARGV[4] == '1' then emit(ARGV[1], '', ARGV[2] .. v .. ARGV[3]) end
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

# KEYS: index. ARGV: the workspace's key prefix (keyspace.workspace_prefix), cursor ('' = from the start), limit.
# Why a sorted set of ids (all scores 0, so ZRANGEBYLEX orders them by id) and not SCAN over the version keys:
# SCAN walks the whole keyspace of every workspace, may return a key twice and pages by hash slot, so a cursor
# would be neither stable nor cheap. Lexicographic paging after the last id seen is stable while tasks are
# created concurrently (a new id lands either before the cursor, and was never promised, or after it, and is
# listed). Each task's (version, fields) is read in the same script, so every entry is a consistent snapshot.
LIST = """
local from = '-'
if ARGV[2] ~= '' then from = '(' .. ARGV[2] end
local limit = tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYLEX', KEYS[1], from, '+', 'LIMIT', 0, limit + 1)
local more = 0
if #ids > limit then more = 1; table.remove(ids) end
local out = {more}
for _, id in ipairs(ids) do
  table.insert(out, id)
  table.insert(out, redis.call('GET', ARGV[1] .. 'ver:' .. id) or '0')
  table.insert(out, redis.call('HGETALL', ARGV[1] .. 'task:' .. id))
end
return out
"""

# KEYS: ver, fields.
GET = """
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

# KEYS: zset, counts, due. ARGV: member, user, now, due member, workspace, exclude conn, event. Join and
# heartbeat are one upsert; the event (presence.joined) goes out when the user's first entry was added.
UPSERT = _EMIT + _REINDEX + """
local added = redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
local n
if added == 1 then n = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
else n = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') end
reindex(KEYS[1], KEYS[3], ARGV[4])
if added == 1 and n == 1 then emit(ARGV[5], ARGV[6], ARGV[7]) end
return {added, n, redis.call('HKEYS', KEYS[2])}
"""

# KEYS: zset, counts, due. ARGV: member, user, due member, workspace, event. ZREM's result is the arbiter:
# one remover wins; the message (presence.left) goes out when the user's last entry was removed.
REMOVE = _EMIT + _REINDEX + """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
local n
if removed == 1 then
  n = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
  if n <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]); n = 0 end
else n = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') end
reindex(KEYS[1], KEYS[3], ARGV[3])
if removed == 1 and n == 0 then emit(ARGV[4], '', ARGV[5]) end
return {removed, n}
"""

# KEYS: zset, counts, due. ARGV: member, score, due member. Back-date an entry that is still there (an
# unclean disconnect under a leave grace): never adds one back, never makes one younger.
HOLD = _REINDEX + """
redis.call('ZADD', KEYS[1], 'XX', 'LT', ARGV[2], ARGV[1])
reindex(KEYS[1], KEYS[3], ARGV[3])
return 1
"""

# KEYS: due. ARGV: cutoff, max tasks, event template. Pops every entry with score <= cutoff on up to N due
# tasks; the keys of those tasks are derived from the index (single-node Redis: the workbench does not target
# Cluster). A user whose last entry expired gets the template's presence.left, {ws}/{task}/{user} filled in.
EXPIRE = _EMIT + _REINDEX + _keyed("""
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, dm in ipairs(due) do
  local sep = string.find(dm, ':', 1, true)
  local ws, task = string.sub(dm, 1, sep - 1), string.sub(dm, sep + 1)
  local zset = $presence
  local counts = $presence_counts
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', zset, '-inf', ARGV[1])) do
    redis.call('ZREM', zset, m)
    local user = string.sub(m, string.find(m, ':', 1, true) + 1)
    local n = redis.call('HINCRBY', counts, user, -1)
    if n <= 0 then
      redis.call('HDEL', counts, user); n = 0
      local event = string.gsub(ARGV[3], '{(%a+)}', {ws = ws, task = task, user = user})
      emit(ws, '', event)
    end
    table.insert(out, ws); table.insert(out, task); table.insert(out, m); table.insert(out, n)
  end
  reindex(zset, KEYS[1], dm)
end
table.insert(out, 1, #due)
return out
""")


# KEYS: workspaces' connection counts (hashes: instance -> open connections on that instance). ARGV: the
# calling instance. Returns each workspace's count on the *other* live instances: a field whose instance key
# (keyspace.alive_key, kept alive with a TTL) is gone belongs to an instance that died without cleaning up,
# and is deleted here (rtlib.server.members). One call reads every workspace an instance has connections in.
COUNT = _keyed("""
local totals = {}
for k = 1, #KEYS do
  local total = 0
  local fields = redis.call('HGETALL', KEYS[k])
  for i = 1, #fields, 2 do
    local instance = fields[i]
    if instance == ARGV[1] then
      -- the caller's own count: it knows it exactly
    elseif redis.call('EXISTS', $alive) == 1 then
      total = total + tonumber(fields[i + 1])
    else
      redis.call('HDEL', KEYS[k], instance)
    end
  end
  totals[k] = total
end
return totals
""")

def sized(text: str, history: HistoryConfig) -> str:
    """A script with the history bounds written in (they are constants of the scripts, the same on every
    instance of a cluster)."""
    return text.replace("HIST_LEN", str(history.length)).replace("HIST_AGE_MS", str(int(history.max_age * 1000)))


def update_script(history: HistoryConfig | None = None) -> str:
    """The text of ``task.update``'s script (the hot path's one Redis call), e.g. for a benchmark's floor."""
    return sized(UPDATE, history or HistoryConfig())
