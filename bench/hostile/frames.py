"""Seeded hostile frames, each tagged with its input class; the expected outcome of a class is in ``CLASSES``.

``CLASSES`` is the contract table of ``docs/protocol.md`` ("Hostile input: what each input class gets"), in code;
a test checks that the two agree row by row. :func:`generate` draws ``n`` frames from a ``random.Random(seed)``
only, so a seed reproduces the same frames byte for byte (the WebSocket masking keys are random, but they do not
change what the server receives).
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, field

from bench.hostile.classes import CLASSES, WEIGHTS
from bench.hostile.wire import OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT

__all__ = ["CLASSES", "Frame", "Probe", "generate", "is_json"]

MAX_FRAME = 65536  # the server's default --max-frame-bytes
CLIENT_TYPES = ["task.update", "task.get", "presence.join", "presence.heartbeat", "presence.leave"]
BAD_IDS = ["", "T 1", "T:1", "T-1\n", "T-1\r\n", "\nT-1", "T\x00", "T\x1f1", "T\x7f", "T\u00e9", "T\u00a0",
           "\u0422-1", "T\u2028", "\uff341", "\U0001f600", "T/1", "T*", "x" * 129, "T-1\t", "T-1\n\n"]
GOOD_IDS = ["x" * 128, "a", "A.b_c-9", "-", ".", "_"]
BAD_FIELDS = ["", "9a", "a-b", "a.b", "a\n", "\na", "a b", "\u00e9t\u00e9", "a" + "b" * 64, "a\x00", "$set", "a\r\n"]
GOOD_FIELDS = ["_", "a" * 64, "A9_", "__proto__", "constructor"]
BAD_WORKSPACES = ["ws-a\n", "WS-A", "ws-a ", "", "ws-a\x00", "ws-\u00e1", "*", "ws-a\r\n", "ws-b"]
UNKNOWN_TYPES = ["task.delete", "task.updated", "", "TASK.UPDATE", "task.update\n", "error", "ack",
                 "session.welcome", "presence.list", "task.update ", "\u0000"]
INVALID_UTF8 = [b"\xc0\xaf", b"\xff", b"\xfe", b"\xed\xa0\x80", b"\xf5\x80\x80\x80", b"\x80", b"\xe2\x82",
                b"\xf0\x9f\x98", b"\xc3\x28", b"\xe0\x80\xaf", b"\xf8\x88\x80\x80\x80"]
MALFORMED = [b"1x", b"01", b"[1,", b"[1,2", b"[", b"{", b"12 34", b"NaN", b"Infinity", b"-", b"{'type': 1}",
             b'{"a":1,}', b"[1,]", b"// c\n{}", b"", b"   ", b"\n", b"tru", b"nul", b'{"type"}', b'"abc',
             b'{"a" 1}', b"{}{}", b"[]]", b"0x10", b"1e", b"+1", b".5", b'{"a":"\x01"}', b'{"a":"\n"}']


@dataclass(frozen=True)
class Frame:
    """One WebSocket frame as the harness writes it (rsv/masked break the protocol on purpose)."""

    opcode: int
    data: bytes
    fin: bool = True
    rsv: int = 0
    masked: bool = True


@dataclass
class Probe:
    """One hostile input: its class, its frames, and what the reply must carry."""

    n: int
    cls: str
    frames: list[Frame]
    ref: str | None = None  # expected echoed ref in an error (when the contract says it is echoed)
    task: str | None = None  # task id of an accepted request, to check what comes back
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def expect(self) -> str:
        return CLASSES[self.cls][0]

    @property
    def size(self) -> int:
        return sum(len(f.data) for f in self.frames)


def is_json(data: bytes) -> bool:
    """Strict JSON (RFC 8259: no NaN/Infinity), UTF-8; the random classes redraw until this is False."""
    def bad_constant(_: str) -> None:
        raise ValueError

    try:
        json.loads(data.decode("utf-8"), parse_constant=bad_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return True


class _Gen:
    """The drawing context of one frame: the seeded rng, the connection's workspace, a canary and names."""

    def __init__(self, rng: random.Random, n: int, seed: int) -> None:
        self.rng, self.n = rng, n
        self.ws = "ws-a"
        self.task = f"h{n}"
        self.canary = f"CANARY{seed}x{n}"
        self.ref = f"r{n}"

    def env(self, type_: str, payload: object, ws: str | None = None, **extra: object) -> bytes:
        text = json.dumps({"type": type_, "workspaceId": self.ws if ws is None else ws, "payload": payload, **extra},
                          ensure_ascii=self.rng.random() < 0.5, separators=(",", ":"))
        return text.encode("utf-8")

    def update(self, changes: object | None = None, **payload: object) -> dict[str, object]:
        return {"taskId": self.task, "changes": changes if changes is not None else {"note": self.canary},
                "ref": self.ref, **payload}

    def text(self, data: bytes) -> list[Frame]:
        return [Frame(OP_TEXT if self.rng.random() < 0.5 else OP_BINARY, data)]


def _deep(rng: random.Random, levels: int) -> str:
    """A JSON value nested ``levels`` deep (arrays and objects mixed)."""
    opens, closes = [], []
    for _ in range(levels):
        if rng.random() < 0.5:
            opens.append("[")
            closes.append("]")
        else:
            opens.append('{"k":')
            closes.append("}")
    return "".join(opens) + "1" + "".join(reversed(closes))


def _random_text(rng: random.Random, k: int) -> str:
    pool = string.printable + "\u00e9\u4e2d\U0001f600\u2028\ufffd"
    return "".join(rng.choice(pool) for _ in range(k))


# Each maker returns (frames, probe fields); every class named here must be a row of CLASSES.
def _make(g: _Gen, cls: str) -> tuple[list[Frame], dict[str, object]]:  # noqa: C901 - one flat table of cases
    rng, ok = g.rng, {"task": g.task}
    if cls == "random-bytes":
        while True:
            data = rng.randbytes(rng.randint(1, 300))
            if not is_json(data):
                return [Frame(OP_BINARY, data)], {}
    if cls == "random-text":
        while True:
            data = _random_text(rng, rng.randint(1, 200)).encode()
            if not is_json(data):
                return [Frame(OP_TEXT, data)], {}
    if cls == "truncated-envelope":
        whole = g.env("task.update", g.update())
        return g.text(whole[:rng.randint(0, len(whole) - 1)]), {}
    if cls == "malformed-json":
        return g.text(rng.choice(MALFORMED)), {}
    if cls in ("binary-invalid-utf8-in-value", "binary-invalid-utf8-elsewhere", "text-invalid-utf8"):
        bad = rng.choice(INVALID_UTF8)
        if cls == "binary-invalid-utf8-in-value":  # the stored-poison frame of issue 7
            data = g.env("task.update", g.update({"note": "@@BAD@@"})).replace(b"@@BAD@@", b"x" + bad + b"y")
            return [Frame(OP_BINARY, data)], {}
        where = rng.choice(["key", "task", "ref", "type", "ws", "top", "tail", "userId"])
        if where == "key":
            data = g.env("task.update", g.update({"@@BAD@@": 1}))
        elif where in ("task", "ref"):
            data = g.env("task.update", g.update(**{("taskId" if where == "task" else "ref"): "@@BAD@@"}))
        elif where == "type":
            data = g.env("@@BAD@@", {"taskId": g.task})
        elif where == "ws":
            data = g.env("task.get", {"taskId": g.task}, ws="@@BAD@@")
        elif where == "userId":
            data = g.env("task.get", {"taskId": g.task}, userId="@@BAD@@")
        else:
            data = (bad + b"{}") if where == "top" else g.env("task.get", {"taskId": g.task}) + bad
        data = data.replace(b"@@BAD@@", b"a" + bad)
        return [Frame(OP_TEXT if cls == "text-invalid-utf8" else OP_BINARY, data)], {}
    if cls == "raw-control-char-in-string":
        data = g.env("task.update", g.update({"note": "@@C@@"})).replace(b"@@C@@", bytes([rng.randint(0, 31)]))
        return g.text(data), {}
    if cls == "deep-json-at-limit":  # envelope 1, payload 2, changes 3, then 29 more levels: 32 in all
        data = g.env("task.update", g.update({"deep": "@@D@@"})).replace(b'"@@D@@"', _deep(rng, 29).encode())
        return g.text(data), ok
    if cls == "deep-json-over-limit":
        total = rng.choice([33, 34, 40, 100, 1000, rng.randint(33, 9000)])  # the envelope object is level 1
        where = rng.choice(["changes", "userId", "top", "unknown-type"])
        if where == "top":
            data = _deep(rng, total).encode()
        else:
            ph = b'"@@D@@"'
            base, outer = {"changes": (g.env("task.update", g.update({"deep": "@@D@@"})), 3),
                           "userId": (g.env("task.get", {"taskId": g.task}, userId="@@D@@"), 1),
                           "unknown-type": (g.env("task.nope", {"x": "@@D@@"}), 2)}[where]
            data = base.replace(ph, _deep(rng, total - outer).encode())
        return g.text(data[:MAX_FRAME]), {}
    if cls == "deep-json-huge-arrays":  # 30,000 levels in under 64 KiB
        levels = rng.randint(20000, MAX_FRAME // 2 - 10)
        return g.text(b"[" * levels + b"]" * levels), {}
    if cls == "huge-valid-update":
        size = rng.randint(30000, MAX_FRAME - 300)
        return g.text(g.env("task.update", g.update({"blob": g.canary + "x" * size}))), ok
    if cls == "frame-at-size-limit":
        data = g.env("task.update", g.update({"blob": g.canary + "@@P@@"}))
        return g.text(data.replace(b"@@P@@", b"y" * (MAX_FRAME - len(data) + len(b"@@P@@")))), ok
    if cls == "frame-over-size-limit":
        data = g.env("task.update", g.update({"blob": g.canary + "@@P@@"}))
        extra = rng.choice([1, 2, 100, rng.randint(1, 60000)])
        return g.text(data.replace(b"@@P@@", b"y" * (MAX_FRAME - len(data) + len(b"@@P@@") + extra))), {}
    if cls == "huge-invalid-payload":
        return g.text(g.env("task.get", {"taskId": g.task, "ref": g.ref, "pad": "x" * rng.randint(20000, 60000)})), \
            {"ref": g.ref}
    if cls == "huge-array":
        return g.text(b"[" + b",".join([b"0"] * rng.randint(5000, 30000)) + b"]"), {}
    if cls == "changes-256-fields":
        return g.text(g.env("task.update", g.update({f"f{i}": i for i in range(256)}))), ok
    if cls == "changes-257-fields":
        return g.text(g.env("task.update", g.update({f"f{i}": i for i in range(257)}))), {"ref": g.ref}
    if cls == "not-an-object":
        value = rng.choice(["1", "-2.5e3", '"task.update"', "null", "true", "[]", '[{"type":"task.get"}]', "{}"])
        return g.text(value.encode()), {}
    if cls == "envelope-bad-shape":
        full = {"type": "task.get", "workspaceId": g.ws, "payload": {"taskId": g.task, "ref": g.ref}}
        variant = rng.choice(["no-type", "no-ws", "no-payload", "extra", "type-num", "type-null", "type-list",
                              "ws-num", "ws-obj", "ws-null"])
        env = dict(full)
        if variant.startswith("no-"):
            del env[{"no-type": "type", "no-ws": "workspaceId", "no-payload": "payload"}[variant]]
        elif variant == "extra":
            env["admin"] = True
        else:
            key = "type" if variant.startswith("type") else "workspaceId"
            env[key] = {"num": 7, "null": None, "list": ["task.get"], "obj": {"id": g.ws}}[variant.split("-")[1]]
        return g.text(json.dumps(env).encode()), {}
    if cls == "payload-bad-shape":
        type_ = rng.choice(CLIENT_TYPES)
        variant = rng.choice(["not-object", "no-task", "task-type", "unknown-key", "ref-type", "ref-long",
                              "changes-missing", "changes-empty", "changes-type"])
        if variant == "not-object":
            return g.text(g.env(type_, rng.choice([[g.task], g.task, 5, None, True]))), {}
        payload: dict[str, object] = g.update() if type_ == "task.update" else {"taskId": g.task, "ref": g.ref}
        ref: str | None = g.ref
        if variant == "no-task":
            del payload["taskId"]
        elif variant == "task-type":
            payload["taskId"] = rng.choice([1, None, ["a"], {"id": "a"}, True])
        elif variant == "unknown-key":
            payload[rng.choice(["userId", "version", "bogus", "taskid"])] = 1
        elif variant == "ref-type":
            payload["ref"], ref = rng.choice([1, ["r"], {"r": 1}, True]), None
        elif variant == "ref-long":
            payload["ref"], ref = "r" * 129, None
        elif type_ != "task.update":
            payload["changes"] = {"a": 1}  # changes on a type that has none: an unknown key
        elif variant == "changes-missing":
            del payload["changes"]
        else:
            payload["changes"] = {} if variant == "changes-empty" else rng.choice([[["a", 1]], "a=1", 3, None])
        return g.text(g.env(type_, payload)), {"ref": ref}
    if cls in ("bad-task-id", "bad-field-name"):
        bad = rng.choice(BAD_IDS if cls == "bad-task-id" else BAD_FIELDS)
        type_ = "task.update" if cls == "bad-field-name" else rng.choice(CLIENT_TYPES)
        if cls == "bad-field-name":
            payload = g.update({"ok": 1, bad: g.canary})
        else:
            payload = g.update(taskId=bad) if type_ == "task.update" else {"taskId": bad, "ref": g.ref}
        return g.text(g.env(type_, payload)), {"ref": g.ref}
    if cls == "edge-valid-ids":
        task, name = rng.choice(GOOD_IDS), rng.choice(GOOD_FIELDS)
        return g.text(g.env("task.update", g.update({name: g.canary}, taskId=task))), {"task": task}
    if cls == "unknown-type":
        return g.text(g.env(rng.choice(UNKNOWN_TYPES), {"taskId": g.task, "ref": g.ref}, ws=rng.choice(
            [g.ws, "ws-b"]))), {"ref": g.ref}
    if cls == "foreign-workspace":
        type_ = rng.choice(CLIENT_TYPES)
        payload = g.update() if type_ == "task.update" else {"taskId": g.canary, "ref": g.ref}
        return g.text(g.env(type_, payload, ws=rng.choice(BAD_WORKSPACES))), {"ref": g.ref}
    if cls == "foreign-workspace-bad-payload":  # check order: the payload is judged before the workspace
        return g.text(g.env("task.update", {"taskId": g.task, "changes": {}, "ref": g.ref}, ws="ws-b")), \
            {"ref": g.ref}
    if cls == "forged-user-and-time":
        forged = {"userId": rng.choice(["admin", "nbr-a", "", 0, None, {"id": "x"}]),
                  "timestamp": rng.choice(["1970-01-01T00:00:00Z", 0, "tomorrow", None])}
        return g.text(g.env("task.update", g.update(), **forged)), ok
    if cls == "valid-update":
        return g.text(g.env("task.update", g.update())), ok
    if cls == "valid-update-whitespace":
        return g.text(b" \n\t" + g.env("task.update", g.update()) + b"\r\n "), ok
    if cls == "valid-update-fragmented":
        data = (g.env("task.update", g.update({"note": g.canary + "\u00e9\u4e2d"})))
        cuts = sorted(rng.sample(range(1, len(data)), 3))  # may split a UTF-8 sequence: legal across fragments
        parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        op = OP_TEXT if rng.random() < 0.5 else OP_BINARY
        return [Frame(op if i == 0 else OP_CONT, p, fin=i == len(parts) - 1) for i, p in enumerate(parts)], ok
    if cls == "valid-get":
        return g.text(g.env("task.get", {"taskId": g.task, "ref": g.ref})), ok
    if cls in ("valid-join", "heartbeat-not-joined"):
        type_ = "presence.join" if cls == "valid-join" else "presence.heartbeat"
        return g.text(g.env(type_, {"taskId": g.task})), ok
    if cls == "leave-not-joined":
        return g.text(g.env("presence.leave", {"taskId": g.task, "ref": g.ref})), ok
    if cls == "presence-pong":
        return g.text(g.env("presence.pong", {"seq": rng.choice([0, 1, rng.randint(2, 2**53 - 1), 2**53 - 1])})), ok
    if cls == "presence-pong-bad-seq":
        payload = rng.choice([{}, {"seq": -1}, {"seq": 2**53}, {"seq": 1.5}, {"seq": "1"}, {"seq": None},
                              {"seq": 1, "taskId": g.task}])
        return g.text(g.env("presence.pong", payload)), {}
    if cls == "ping-pong":
        return [Frame(rng.choice([OP_PING, OP_PONG]), rng.randbytes(rng.randint(0, 125)))], {}
    if cls == "protocol-violation":
        variant = rng.choice(["opcode", "rsv", "unmasked", "cont-first", "big-control"])
        data = g.env("task.get", {"taskId": g.task})
        frame = {"opcode": Frame(rng.choice([3, 4, 5, 6, 7, 11, 12, 15]), data),
                 "rsv": Frame(OP_TEXT, data, rsv=rng.randint(1, 7)),
                 "unmasked": Frame(OP_TEXT, data, masked=False),
                 "cont-first": Frame(OP_CONT, data),
                 "big-control": Frame(OP_PING, b"p" * 126)}[variant]
        return [frame], {}
    raise KeyError(cls)


def generate(seed: int, n: int, start: int = 0) -> list[Probe]:
    """``n`` probes numbered from ``start``, drawn by class weight from ``random.Random(seed)`` alone."""
    rng = random.Random(seed)
    names = list(WEIGHTS)
    weights = [WEIGHTS[c] for c in names]
    probes = []
    for i in range(start, start + n):
        cls = rng.choices(names, weights)[0]
        g = _Gen(random.Random(rng.getrandbits(64)), i, seed)
        frames, extra = _make(g, cls)
        probes.append(Probe(i, cls, frames, **extra))  # type: ignore[arg-type]
    return probes

