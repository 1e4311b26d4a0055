"""rtlib's Redis keyspace: every key, channel, member format and pub/sub message framing, built here only.

The server (:mod:`rtlib.server.store`, :mod:`rtlib.server.scripts`, :mod:`rtlib.server.fanout`,
:mod:`rtlib.server.members`), the lab, the benchmarks and the notebooks import these builders instead of
spelling ``"rt:..."`` themselves, so a change of layout (hash-tagged keys for Redis Cluster, a later issue) is a
change of this module. The Lua scripts are formatted from the same constants (:data:`LUA`).

Ids never contain ``:`` (:data:`rtlib.protocol.schema.Id`), so every key below parses back unambiguously.

============================  ===========  ===============================================================
key / channel                 type         holds
============================  ===========  ===============================================================
``rt:{ws}:ver:{task}``        string       the task's version
``rt:{ws}:task:{task}``       hash         field -> JSON value
``rt:{ws}:tasks``             sorted set   the workspace's task ids (all scores 0), for ``task.list``
``rt:{ws}:ref:{user}:{h}:{r}``  string     an idempotent update's version, for ``idempotency_ttl`` seconds
``rt:{ws}:epoch``             string       the history's epoch (a new one after Redis lost the stream)
``rt:{ws}:hist``              stream       the workspace's bounded event history
``rt:{ws}:pres:{task}``       sorted set   member ``conn:user``, score = last heartbeat (Unix seconds)
``rt:{ws}:pres:{task}:n``     hash         user -> that user's entries on the task
``rt:presence:due``           sorted set   member ``ws:task``, score = the task's oldest heartbeat (sweep index)
``rt:{ws}:conns``             hash         instance member -> its open connections in the workspace
``rt:instance:{member}``      string       an instance's alive key (TTL)
``rt:chan:{ws}``              channel      ``exclude_conn + "\\n" + event JSON`` (:func:`frame`)
``rt:probe:{server}``         channel      the pub/sub check's probes of one instance
============================  ===========  ===============================================================
"""

from __future__ import annotations

__all__ = [
    "CHANNEL_PREFIX",
    "DUE_KEY",
    "LUA",
    "PREFIX",
    "RESP3_PROBE_KEY",
    "SEPARATOR",
    "alive_key",
    "channel",
    "conns_key",
    "due_member",
    "epoch_key",
    "frame",
    "history_key",
    "index_key",
    "presence_counts_key",
    "presence_key",
    "presence_keys",
    "presence_pattern",
    "probe_channel",
    "ref_key",
    "split_frame",
    "task_keys",
    "workspace_of_channel",
    "workspace_prefix",
]

PREFIX = "rt:"
CHANNEL_PREFIX = "rt:chan:"
DUE_KEY = "rt:presence:due"
#: A key no rtlib data uses: written once to check that the server speaks RESP3 (:mod:`rtlib.server.resp`).
RESP3_PROBE_KEY = "rt:resp3-probe"
#: Between the excluded connection id and the event in a pub/sub message (ids contain no newline).
SEPARATOR = b"\n"


def workspace_prefix(ws: str) -> str:
    """The prefix of every key of one workspace (``task.list`` reads task keys under it)."""
    return f"{PREFIX}{ws}:"


def task_keys(ws: str, task: str) -> list[str]:
    """The task's version key and its fields hash, in the order the scripts take them."""
    return [f"{PREFIX}{ws}:ver:{task}", f"{PREFIX}{ws}:task:{task}"]


def index_key(ws: str) -> str:
    return f"{PREFIX}{ws}:tasks"


def ref_key(ws: str, user: str, digest: str, ref: str) -> str:
    return f"{PREFIX}{ws}:ref:{user}:{digest}:{ref}"


def epoch_key(ws: str) -> str:
    return f"{PREFIX}{ws}:epoch"


def history_key(ws: str) -> str:
    return f"{PREFIX}{ws}:hist"


def presence_key(ws: str, task: str) -> str:
    return f"{PREFIX}{ws}:pres:{task}"


def presence_counts_key(ws: str, task: str) -> str:
    return presence_key(ws, task) + ":n"


def presence_keys(ws: str, task: str) -> list[str]:
    """The keys a presence script takes: the task's entries, its per-user counts, the sweep index."""
    return [presence_key(ws, task), presence_counts_key(ws, task), DUE_KEY]


def presence_pattern() -> str:
    """A ``SCAN`` pattern matching every presence key (entries and counts) of every workspace."""
    return f"{PREFIX}*:pres:*"


def due_member(ws: str, task: str) -> str:
    """The sweep index's member for one task."""
    return f"{ws}:{task}"


def conns_key(ws: str) -> str:
    return f"{PREFIX}{ws}:conns"


def alive_key(member: str) -> str:
    return f"{PREFIX}instance:{member}"


def channel(ws: str) -> str:
    return f"{CHANNEL_PREFIX}{ws}"


def probe_channel(server_id: str) -> str:
    return f"{PREFIX}probe:{server_id}"


def workspace_of_channel(chan: bytes) -> str:
    """Inverse of :func:`channel`, on the bytes a subscriber receives."""
    return chan[len(CHANNEL_PREFIX):].decode()


def frame(event: bytes, exclude_conn: str = "") -> bytes:
    """A pub/sub message: the connection that must not receive it ('' for none), a newline, the event."""
    return exclude_conn.encode() + SEPARATOR + event


def split_frame(message: bytes) -> tuple[str | None, bytes]:
    """Inverse of :func:`frame`: ``(excluded connection or None, event)``."""
    exclude, _, event = message.partition(SEPARATOR)
    return (exclude.decode() if exclude else None), event


#: The same layout for the Lua scripts (:mod:`rtlib.server.scripts` formats its texts with these): each value
#: is a Lua expression building the key from the script's local variables ``ws``, ``task``, ``instance``.
LUA: dict[str, str] = {
    "channel": f"'{CHANNEL_PREFIX}' .. ws",
    "epoch": f"'{PREFIX}' .. ws .. ':epoch'",
    "history": f"'{PREFIX}' .. ws .. ':hist'",
    "presence": f"'{PREFIX}' .. ws .. ':pres:' .. task",
    "presence_counts": f"'{PREFIX}' .. ws .. ':pres:' .. task .. ':n'",
    "alive": f"'{PREFIX}instance:' .. instance",
    "separator": "'\\n'",
}
