"""The Redis keyspace (:mod:`rtlib.server.keyspace`): the exact layout, the pub/sub framing, the Lua side
agreeing with the Python side, and no key spelled out anywhere else.

The exact strings below pin the storage and wire layout: data written by one version is read by the next, and
every instance of a cluster must agree, so a change here has to be deliberate (and migrated), never a side
effect of a refactor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from rtlib.server import keyspace, scripts

ROOT = Path(__file__).resolve().parents[2]


def test_every_builder_spells_the_documented_layout() -> None:
    """Issue 22 changed this layout on purpose: every key of a workspace carries the workspace as a hash tag
    (literal braces), the sweep index is per workspace plus a partitioned registry, the channel is tagged too."""
    assert keyspace.workspace_prefix("w1") == "rt:{w1}:"
    assert keyspace.task_keys("w1", "t1") == ["rt:{w1}:ver:t1", "rt:{w1}:task:t1"]
    assert keyspace.index_key("w1") == "rt:{w1}:tasks"
    assert keyspace.ref_key("w1", "u1", "0123abcd", "r7") == "rt:{w1}:ref:u1:0123abcd:r7"
    assert keyspace.epoch_key("w1") == "rt:{w1}:epoch"
    assert keyspace.history_key("w1") == "rt:{w1}:hist"
    assert keyspace.history_keys("w1") == ["rt:{w1}:epoch", "rt:{w1}:hist"]
    assert keyspace.presence_key("w1", "t1") == "rt:{w1}:pres:t1"
    assert keyspace.presence_counts_key("w1", "t1") == "rt:{w1}:pres:t1:n"
    assert keyspace.due_key("w1") == "rt:{w1}:due"
    assert keyspace.presence_keys("w1", "t1") == [
        "rt:{w1}:pres:t1", "rt:{w1}:pres:t1:n", "rt:{w1}:due", "rt:{w1}:epoch", "rt:{w1}:hist"]
    assert keyspace.presence_pattern() == "rt:{*}:pres:*"
    assert keyspace.due_pattern() == "rt:{*}:due"
    assert keyspace.sweep_keys(7) == ["rt:{sweep:7}:workspaces", "rt:{sweep:7}:gens"]
    assert keyspace.sweep_partition("w1") == 12  # CRC16 ("w1") % 16: the same in every process
    assert keyspace.sweep_keys_of("w1") == keyspace.sweep_keys(12)
    assert keyspace.conns_key("w1") == "rt:{w1}:conns"
    assert keyspace.alive_key("i1.ab12cd34") == "rt:instance:i1.ab12cd34"
    assert keyspace.channel("w1") == "rt:chan:{w1}"
    assert keyspace.probe_channel("s1") == "rt:probe:s1"
    assert (keyspace.PREFIX, keyspace.CHANNEL_PREFIX, keyspace.RESP3_PROBE_KEY, keyspace.SWEEP_PARTITIONS) == (
        "rt:", "rt:chan:", "rt:resp3-probe", 16)
    assert keyspace.SEPARATOR == b"\n"


def _hash_tag(key: str) -> str:
    """What Redis Cluster hashes: the part between the first ``{`` and the next ``}`` if not empty, else the key."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    return key[start + 1:end] if start >= 0 and end > start + 1 else key


@pytest.mark.parametrize("ws", ["w1", "Workspace-42", "w_x.y", "sweep-3"])
def test_every_key_of_a_workspace_is_in_the_workspace_slot(ws: str) -> None:
    keys = [*keyspace.task_keys(ws, "t1"), keyspace.index_key(ws), keyspace.ref_key(ws, "u", "ab", "r"),
            *keyspace.history_keys(ws), *keyspace.presence_keys(ws, "t1"), keyspace.conns_key(ws),
            keyspace.channel(ws)]
    assert {_hash_tag(k) for k in keys} == {ws}
    # No workspace (ids never contain ':') can share a tag with a sweep partition or an instance's alive key.
    assert {_hash_tag(k) for p in range(keyspace.SWEEP_PARTITIONS) for k in keyspace.sweep_keys(p)} == {
        f"sweep:{p}" for p in range(keyspace.SWEEP_PARTITIONS)}
    assert _hash_tag(keyspace.alive_key("i1.ab")) == keyspace.alive_key("i1.ab")


def test_the_sweep_partitions_spread_workspaces() -> None:
    counts = [0] * keyspace.SWEEP_PARTITIONS
    for i in range(1600):
        counts[keyspace.sweep_partition(f"ws-{i}")] += 1
    assert min(counts) > 50 and max(counts) < 150


def test_every_exported_name_exists() -> None:
    assert sorted(keyspace.__all__) == keyspace.__all__
    for name in keyspace.__all__:
        assert hasattr(keyspace, name), name


def test_the_task_keys_are_under_the_workspace_prefix() -> None:
    """``task.list``'s script reads ``prefix .. 'ver:' .. id`` and ``prefix .. 'task:' .. id``."""
    prefix = keyspace.workspace_prefix("w1")
    assert keyspace.task_keys("w1", "t1") == [prefix + "ver:t1", prefix + "task:t1"]


@pytest.mark.parametrize(("event", "exclude"), [
    (b'{"type":"task.updated"}', "c1"),
    (b'{"type":"task.updated"}', ""),  # no connection excluded
    (b'{"type":"x","text":"line 1\\nline 2"}', "c1"),  # an escaped newline in the JSON
    (b"line 1\nline 2\n\nline 4", "c1"),  # raw newlines in the event: only the first one separates
    (b"\nstarts with a newline", ""),
    (b"", "c1"),
])
def test_frame_and_split_frame_round_trip(event: bytes, exclude: str) -> None:
    message = keyspace.frame(event, exclude)
    assert message == exclude.encode() + b"\n" + event  # the wire format other instances read
    assert keyspace.split_frame(message) == ((exclude or None), event)


def test_frame_excludes_no_one_by_default() -> None:
    assert keyspace.frame(b"{}") == b"\n{}"
    assert keyspace.split_frame(b"\n{}") == (None, b"{}")


@pytest.mark.parametrize("ws", ["w1", "Workspace-42", "w_x.y"])  # ids: A-Z a-z 0-9 _ . -
def test_workspace_of_channel_inverts_channel(ws: str) -> None:
    assert keyspace.workspace_of_channel(keyspace.channel(ws).encode()) == ws


def test_the_lua_expressions_build_the_same_names_as_python(redis_url: str) -> None:
    """Each :data:`keyspace.LUA` expression, evaluated by Redis's Lua, equals its Python builder."""
    names = sorted(keyspace.LUA)
    body = "local ws = ARGV[1]\nreturn {" + ", ".join(keyspace.LUA[name] for name in names) + "}"
    with redis.Redis.from_url(redis_url) as r:
        got = dict(zip(names, (v.decode() for v in r.eval(body, 0, "w1")), strict=True))
    assert got == {"channel": keyspace.channel("w1"), "separator": keyspace.SEPARATOR.decode(),
                   "history_field": keyspace.HISTORY_FIELD}


def test_history_event_reads_an_entry_as_xrange_returns_it(redis_url: str) -> None:
    event = {"type": "task.updated", "workspaceId": "w1", "payload": {"taskId": "t1", "version": 3}}
    with redis.Redis.from_url(redis_url) as r:
        r.delete(keyspace.history_key("w1"))
        r.xadd(keyspace.history_key("w1"), {keyspace.HISTORY_FIELD: json.dumps(event)})
        ((_, fields),) = r.xrange(keyspace.history_key("w1"))
        r.delete(keyspace.history_key("w1"))
    assert keyspace.history_event(fields) == event


def test_the_scripts_are_formatted_from_the_keyspace_and_build_no_key() -> None:
    """Every placeholder was filled in, every script that emits publishes on the keyspace's channel, and no
    script builds a key: every key comes in ``KEYS`` (``tests/server/test_cluster_keyspace.py`` checks each call
    touches only what it declared, on one Redis and on a cluster)."""
    texts = {name: getattr(scripts, name) for name in scripts.__all__ if isinstance(getattr(scripts, name), str)}
    for name, text in texts.items():
        assert "$" not in text, name
        assert keyspace.PREFIX not in text.replace(keyspace.LUA["channel"], ""), name
    for name in ("UPDATE", "UPSERT", "REMOVE", "EXPIRE"):  # every script that emits
        for part in ("channel", "separator", "history_field"):
            assert keyspace.LUA[part] in texts[name], (name, part)


# --- no key spelled out elsewhere ----------------------------------------------------------------------------
#: A quote followed by the prefix starts a string literal building a key: Python and Lua ('"rt:', "'rt:"), a
#: JavaScript template literal or Markdown/reST (backtick). 'rt:chan' also catches a channel built mid-string.
#: Nothing is exempt, prose included: a docstring or notebook text that copies a key instead of pointing at
#: rtlib.server.keyspace (whose docstring is the one table) goes stale when the layout changes (hash tags).
SPELLED = ('"rt:', "'rt:", "`rt:", "rt:chan")
KEYSPACE = ROOT / "rtlib" / "server" / "keyspace.py"


def _sources() -> dict[Path, str]:
    """Every text file under rtlib/ (Python, the web client, anything else) and every notebook cell's source."""
    found: dict[Path, str] = {}
    for path in sorted((ROOT / "rtlib").rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path == KEYSPACE:
            continue
        try:
            found[path] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # a binary asset (an icon, say): no code in it
            continue
    for path in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        # Cell sources only (code and markdown): outputs are what a run printed, not code that builds keys.
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        found[path] = "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                                for c in cells)
    return found


def _spelled(text: str) -> list[tuple[int, str]]:
    """The lines of ``text`` that spell a key: ``(line number, line)``."""
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)
            if any(pattern in line for pattern in SPELLED)]


def test_the_search_finds_spelled_keys() -> None:
    """The search itself works: it flags keys built in Python, bytes, Lua, JavaScript and notebook JSON, and it
    reads the server's modules, the web client and every notebook."""
    spelled = ['f"rt:{ws}:ver:{task}"', "b\"rt:chan:\"", "local zset = 'rt:' .. ws", "`rt:${ws}:conns`",
               'reply[1][len(b"rt:chan:"):]', 'r.scan_iter(\\"rt:*:pres:*\\")',
               "* ``rt:{ws}:conns`` (hash): prose copying the layout"]
    assert [n for n, _ in _spelled("\n".join(spelled))] == list(range(1, len(spelled) + 1))
    assert _spelled("the start: rtlib.server.keyspace.conns_key('w1'), port: 6379") == []
    sources = _sources()
    assert ROOT / "rtlib" / "server" / "store.py" in sources
    assert ROOT / "rtlib" / "web" / "rtlib-client.js" in sources
    assert len([p for p in sources if p.suffix == ".ipynb"]) >= 6


def test_no_key_is_spelled_outside_the_keyspace_module() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{n}: {line}" for path, text in _sources().items()
                 for n, line in _spelled(text)]
    assert not offenders, "build these with rtlib.server.keyspace:\n" + "\n".join(offenders)
