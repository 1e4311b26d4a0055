"""rtlib's Redis keyspace: every key, channel, member format and pub/sub message framing, built here only.

The server (:mod:`rtlib.server.store`, :mod:`rtlib.server.scripts`, :mod:`rtlib.server.fanout`,
:mod:`rtlib.server.members`), the lab, the benchmarks and the notebooks import these builders instead of
spelling ``"rt:..."`` themselves, so a change of layout is a change of this module.

**A keyspace that shards** (issue 22). Every key of a workspace carries the workspace id as a Redis Cluster hash
tag: braces in a key are literal, and Redis Cluster hashes only what is between the first ``{`` and the next
``}``, so every key of workspace ``w1`` (``rt:{w1}:ver:t1``, ``rt:{w1}:hist``...) is in one slot and one Lua script
may touch them all. Every script takes every key it touches in ``KEYS`` (:mod:`rtlib.server.scripts`; Redis
documents a key built inside a script as unsupported even on one server, and a cluster refuses one of another
slot). The workspace channel carries the same tag, so a later sharded ``SPUBLISH`` from a script stays in the
workspace's slot. What spans workspaces is restated per slot:

* the presence sweep: each workspace has its own sweep index (``due`` below), and the workspaces that may have
  entries to expire are found in :data:`SWEEP_PARTITIONS` partitions (``sweep`` below, each its own slot), kept
  by the store outside the workspace scripts (:mod:`rtlib.server.sweep` says why that is exact);
* the cluster's connection counts: each workspace's hash, with instances' alive keys read by the instance
  outside any script (:mod:`rtlib.server.members`).

Ids never contain ``:`` (:data:`rtlib.protocol.schema.Id`), so every key below parses back unambiguously, and a
partition's tag (``sweep:N``) can never be a workspace's. In the table ``<ws>``, ``<task>``... stand for ids;
braces are literal.

=====================================  ===========  ======================================================
key / channel                          type         holds
=====================================  ===========  ======================================================
``rt:{<ws>}:ver:<task>``               string       the task's version
``rt:{<ws>}:task:<task>``              hash         field -> JSON value
``rt:{<ws>}:tasks``                    sorted set   the workspace's task ids (all scores 0), for ``task.list``
``rt:{<ws>}:ref:<user>:<h>:<r>``       string       an idempotent update's version, for ``idempotency_ttl`` s
``rt:{<ws>}:epoch``                    string       the history's epoch (a new one after Redis lost the stream)
``rt:{<ws>}:hist``                     stream       the workspace's bounded event history
``rt:{<ws>}:pres:<task>``              sorted set   member ``conn:user``, score = last heartbeat (Unix seconds)
``rt:{<ws>}:pres:<task>:n``            hash         user -> that user's entries on the task
``rt:{<ws>}:due``                      sorted set   member ``task``, score = the task's oldest heartbeat
``rt:{sweep:<n>}:workspaces``          sorted set   member ``ws``, score <= the workspace's oldest heartbeat
``rt:{sweep:<n>}:gens``                hash         ws -> the generation of its last registration; ``""``
                                                    -> the partition's counter
``rt:{<ws>}:conns``                    hash         instance member -> its open connections in the workspace
``rt:instance:<member>``               string       an instance's alive key (TTL)
``rt:chan:{<ws>}``                     channel      ``exclude_conn + "\\n" + event JSON`` (:func:`frame`)
``rt:probe:<server>``                  channel      the pub/sub check's probes of one instance
``rt:probe:<server>:{<n>}``            channel      the same on Redis Cluster, one per node (sharded)
=====================================  ===========  ======================================================

**Migration** from the layout before issue 22 (``rt:<ws>:ver:<task>``... without braces, one global sweep index
``rt:presence:due`` of ``ws:task`` members, channels ``rt:chan:<ws>``): old keys are **not read**. An rtlib of
this layout on a Redis written by an older one sees no tasks, no history (a resuming client gets a new epoch and
resyncs) and no presence (old entries are never swept); the old keys stay until deleted, e.g. ``redis-cli --scan
--pattern 'rt:*'`` and delete every key whose name does not start with ``rt:{`` (except ``rt:instance:*``).
Instances of both layouts must not share a Redis: their channels differ, so they would not hear each other.
The embedded Redis (``rtlib serve`` without ``--redis``) keeps nothing, so it needs nothing.
"""

from __future__ import annotations

import json
from binascii import crc_hqx
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CHANNEL_PREFIX",
    "HISTORY_FIELD",
    "LUA",
    "PREFIX",
    "RESP3_PROBE_KEY",
    "SEPARATOR",
    "SWEEP_PARTITIONS",
    "alive_key",
    "channel",
    "conns_key",
    "due_key",
    "due_pattern",
    "epoch_key",
    "frame",
    "history_event",
    "history_key",
    "history_keys",
    "index_key",
    "node_probe_channel",
    "presence_counts_key",
    "presence_key",
    "presence_keys",
    "presence_pattern",
    "probe_channel",
    "ref_key",
    "split_frame",
    "sweep_keys",
    "sweep_keys_of",
    "sweep_partition",
    "task_keys",
    "workspace_of_channel",
    "workspace_prefix",
]

PREFIX = "rt:"
CHANNEL_PREFIX = "rt:chan:"
#: A key no rtlib data uses: written once to check that the server speaks RESP3 (:mod:`rtlib.server.resp`).
RESP3_PROBE_KEY = "rt:resp3-probe"
#: Between the excluded connection id and the event in a pub/sub message (ids contain no newline).
SEPARATOR = b"\n"
#: The field of a history stream entry that holds the event (the update scripts' ``XADD ... e <event>``).
HISTORY_FIELD = "e"
#: How many partitions the sweep's workspace registry has: each is one key pair in a slot of its own, so on a
#: cluster registrations spread over the shards, and a sweep reads every partition (a constant of the layout:
#: every instance sharing a Redis must agree on it).
SWEEP_PARTITIONS = 16


def workspace_prefix(ws: str) -> str:
    """The prefix of every key of one workspace: ``rt:`` and the workspace as the hash tag."""
    return f"{PREFIX}{{{ws}}}:"


def task_keys(ws: str, task: str) -> list[str]:
    """The task's version key and its fields hash, in the order the scripts take them."""
    prefix = workspace_prefix(ws)
    return [f"{prefix}ver:{task}", f"{prefix}task:{task}"]


def index_key(ws: str) -> str:
    return workspace_prefix(ws) + "tasks"


def ref_key(ws: str, user: str, digest: str, ref: str) -> str:
    return f"{workspace_prefix(ws)}ref:{user}:{digest}:{ref}"


def epoch_key(ws: str) -> str:
    return workspace_prefix(ws) + "epoch"


def history_key(ws: str) -> str:
    return workspace_prefix(ws) + "hist"


def history_keys(ws: str) -> list[str]:
    """The history's epoch and stream: what every script that publishes (``emit``) takes after its own keys."""
    return [epoch_key(ws), history_key(ws)]


def presence_key(ws: str, task: str) -> str:
    return f"{workspace_prefix(ws)}pres:{task}"


def presence_counts_key(ws: str, task: str) -> str:
    return presence_key(ws, task) + ":n"


def due_key(ws: str) -> str:
    """The workspace's sweep index: each task with entries, scored by its oldest heartbeat."""
    return workspace_prefix(ws) + "due"


def presence_keys(ws: str, task: str) -> list[str]:
    """The keys a presence script takes: the task's entries, its per-user counts, the workspace's sweep index,
    and the history's epoch and stream (a presence change is published and kept like any event)."""
    return [presence_key(ws, task), presence_counts_key(ws, task), due_key(ws), *history_keys(ws)]


def presence_pattern() -> str:
    """A ``SCAN`` pattern matching every presence key (entries and counts) of every workspace."""
    return f"{PREFIX}{{*}}:pres:*"


def due_pattern() -> str:
    """A ``SCAN`` pattern matching every workspace's sweep index."""
    return f"{PREFIX}{{*}}:due"


def sweep_partition(ws: str) -> int:
    """The sweep registry partition of a workspace: CRC16 (the one Redis Cluster uses), the same in every
    process (Python's ``hash`` of a str is salted per process)."""
    return crc_hqx(ws.encode(), 0) % SWEEP_PARTITIONS


def sweep_keys(partition: int) -> list[str]:
    """One registry partition: the workspaces that may have entries to expire, and their registrations'
    generations (``:`` in the tag: no workspace id can have this slot's tag)."""
    prefix = f"{PREFIX}{{sweep:{partition}}}:"
    return [prefix + "workspaces", prefix + "gens"]


def sweep_keys_of(ws: str) -> list[str]:
    return sweep_keys(sweep_partition(ws))


def conns_key(ws: str) -> str:
    return workspace_prefix(ws) + "conns"


def alive_key(member: str) -> str:
    return f"{PREFIX}instance:{member}"


def channel(ws: str) -> str:
    return f"{CHANNEL_PREFIX}{{{ws}}}"


def probe_channel(server_id: str) -> str:
    return f"{PREFIX}probe:{server_id}"


def node_probe_channel(probe: bytes, tag: int) -> bytes:
    """The pub/sub check's shard channel of one instance (its :func:`probe_channel` ``probe``) on one Redis
    Cluster node: hash tag ``{tag}``, a number chosen (:mod:`rtlib.server.cluster_fanout`) so that its slot is
    one the node owns."""
    return probe + b":{%d}" % tag


def workspace_of_channel(chan: bytes) -> str:
    """Inverse of :func:`channel`, on the bytes a subscriber receives."""
    return chan[len(CHANNEL_PREFIX) + 1:-1].decode()


def frame(event: bytes, exclude_conn: str = "") -> bytes:
    """A pub/sub message: the connection that must not receive it ('' for none), a newline, the event."""
    return exclude_conn.encode() + SEPARATOR + event


def history_event(fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    """The event of one history stream entry, as ``XRANGE`` returns its fields (for tools reading a history
    directly: the lab, the benchmarks)."""
    return json.loads(fields[HISTORY_FIELD.encode()])


def split_frame(message: bytes) -> tuple[str | None, bytes]:
    """Inverse of :func:`frame`: ``(excluded connection or None, event)``."""
    exclude, _, event = message.partition(SEPARATOR)
    return (exclude.decode() if exclude else None), event


#: What the Lua scripts still build themselves (:mod:`rtlib.server.scripts` formats its texts with these): no
#: key (every key is passed in ``KEYS``), only the workspace channel, from the script's local variable ``ws``,
#: the pub/sub framing and the history entry's field.
LUA: dict[str, str] = {
    "channel": f"'{CHANNEL_PREFIX}{{' .. ws .. '}}'",
    "separator": "'\\n'",
    "history_field": f"'{HISTORY_FIELD}'",
}
