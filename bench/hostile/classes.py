"""The hostile-input contract as data: every input class, what a server must answer, and how often frames are drawn.

This is the table of ``docs/protocol.md`` section 10, "Hostile input: what each input class gets", in code
(``tests/server/test_hostile.py`` checks that the two agree). Outcomes are written the way the harness compares them:

* ``error CODE``: exactly one direct reply, an ``error`` event with that code; the connection stays open;
* ``ack`` / ``task.snapshot`` / ``presence.state``: exactly one direct reply of that type (an accepted request);
  for ``ack`` the sender's own ``task.updated`` must also arrive, stamped with the sender's ``userId``;
* ``no reply``: no direct reply at all, and the connection stays open;
* ``close CODE``: the server closes the connection with that code (``close 1008 rate limit exceeded`` also
  checks the reason);
* ``HTTP STATUS message``: the handshake is refused with that status and a body starting with ``message``.
"""

from __future__ import annotations

__all__ = ["CLASSES", "DOC_SECTION", "WEIGHTS", "doc_rows"]

#: class -> (expected outcome, what the input is)
CLASSES: dict[str, tuple[str, str]] = {
    # --- frames: not JSON ---------------------------------------------------------------------------------
    "random-bytes": ("error invalid_json", "binary frame of 1-300 random bytes that are not JSON"),
    "random-text": ("error invalid_json", "text frame of random printable and non-ASCII text that is not JSON"),
    "truncated-envelope": ("error invalid_json", "a valid envelope cut short at a random byte"),
    "malformed-json": ("error invalid_json", "`1x`, `01`, `[1,`, `NaN`, `{'a':1}`, trailing commas, comments, "
                       "`{}{}`, an empty frame, only whitespace, ..."),
    "raw-control-char-in-string": ("error invalid_json", "an unescaped control character (U+0000-U+001F) inside a "
                                   "JSON string"),
    "binary-invalid-utf8-in-value": ("error invalid_json", "binary frame, a `task.update` whose `changes` value "
                                     "holds invalid UTF-8 bytes (`\"x\\xc0\\xafy\"`); never stored or broadcast"),
    "binary-invalid-utf8-elsewhere": ("error invalid_json", "binary frame with invalid UTF-8 in a key, `taskId`, "
                                      "`ref`, `type`, `workspaceId`, `userId`, before or after the JSON"),
    "text-invalid-utf8": ("close 1007", "text frame with invalid UTF-8 anywhere (the `websockets` library)"),
    "deep-json-over-limit": ("error invalid_json", "JSON nested deeper than 32 levels (33 to 9,000) anywhere: in "
                             "`changes`, in `userId`, at the top, under an unknown type"),
    "deep-json-huge-arrays": ("error invalid_json", "`[[[...]]]` 20,000-32,000 levels deep, under 64 KiB"),
    "deep-json-at-limit": ("ack", "JSON exactly 32 levels deep (the envelope object is level 1)"),
    # --- frames: JSON, but not an envelope or not a valid request -----------------------------------------
    "not-an-object": ("error invalid_envelope", "valid JSON that is not an object: number, string, null, true, "
                      "array, or `{}`"),
    "huge-array": ("error invalid_envelope", "a JSON array of 5,000-30,000 numbers"),
    "envelope-bad-shape": ("error invalid_envelope", "missing `type`/`workspaceId`/`payload`, an extra envelope "
                           "key, a non-string `type` or `workspaceId`"),
    "unknown-type": ("error unknown_type", "`task.delete`, a server type (`task.updated`, `ack`, `error`), `\"\"`, "
                     "`TASK.UPDATE`, `\"task.update\\n\"`; echoes a valid `ref`"),
    "payload-bad-shape": ("error invalid_payload", "payload not an object, `taskId` missing or not a string, an "
                          "unknown payload key, `ref` not a string or over 128, `changes` missing/empty/not an "
                          "object"),
    "bad-task-id": ("error invalid_payload", "`taskId` empty, over 128 chars, with a space, `:`, `/`, a trailing "
                    "`\\n` or `\\r\\n`, a control character, non-ASCII (`é`, Cyrillic `Т`, fullwidth, emoji, "
                    "U+2028)"),
    "bad-field-name": ("error invalid_payload", "a `changes` key that is empty, starts with a digit, has `-`, `.`, "
                       "a space, a trailing `\\n`, non-ASCII, or is over 64 chars"),
    "changes-257-fields": ("error invalid_payload", "`changes` with 257 fields"),
    "huge-invalid-payload": ("error invalid_payload", "a `task.get` padded to 20-60 KB with an unknown key"),
    "foreign-workspace": ("error forbidden_workspace", "envelope `workspaceId` not the connection's: another "
                          "workspace, `\"ws-a\\n\"`, another case, `\"\"`, `*`; echoes a valid `ref`"),
    "foreign-workspace-bad-payload": ("error invalid_payload", "a foreign `workspaceId` and a bad payload: the "
                                      "payload is checked first"),
    # --- frames: accepted -----------------------------------------------------------------------------------
    "valid-update": ("ack", "a valid `task.update` (text or binary frame)"),
    "valid-update-whitespace": ("ack", "a valid envelope with JSON whitespace before and after it"),
    "valid-update-fragmented": ("ack", "a valid envelope in 4 fragments, possibly splitting a UTF-8 character"),
    "forged-user-and-time": ("ack", "`userId`/`timestamp` forged (another user, wrong types): ignored, the "
                             "broadcast carries the sender's `userId`"),
    "edge-valid-ids": ("ack", "`taskId` of exactly 128 chars, `-`, `.`; field names `_`, 64 chars, `__proto__`"),
    "changes-256-fields": ("ack", "`changes` with exactly 256 fields"),
    "huge-valid-update": ("ack", "a valid `task.update` of 30-64 KB (broadcast to the whole workspace)"),
    "frame-at-size-limit": ("ack", "a valid `task.update` of exactly 65,536 bytes"),
    "valid-get": ("task.snapshot", "a valid `task.get`"),
    "valid-join": ("presence.state", "a valid `presence.join`"),
    "heartbeat-not-joined": ("presence.state", "`presence.heartbeat` of a task not joined: re-joins"),
    "leave-not-joined": ("no reply", "`presence.leave` of a task not joined: a silent no-op"),
    "ping-pong": ("no reply", "a ping (answered by a pong) or an unsolicited pong"),
    "presence-pong": ("no reply", "an unsolicited `presence.pong` (seq 0 to 2^53-1): refreshes what the "
                      "connection views, replies nothing"),
    "presence-pong-bad-seq": ("error invalid_payload", "`presence.pong` with `seq` missing, negative, over "
                              "2^53-1, fractional, a string or null, or with an extra `taskId`"),
    # --- frames: the connection ends -------------------------------------------------------------------------
    "frame-over-size-limit": ("close 1009", "a frame of 65,537 bytes or more"),
    "protocol-violation": ("close 1002", "reserved opcode, RSV bits, an unmasked frame, a continuation first, "
                           "a control frame over 125 bytes (the `websockets` library)"),
    # --- load and connection behaviour ------------------------------------------------------------------------
    "frame-flood": ("close 1008 rate limit exceeded", "small frames as fast as the socket takes them: `error "
                    "rate_limited` per dropped frame, closed after more than 50 refusals in a row"),
    "byte-flood": ("close 1008 rate limit exceeded", "60 KB frames far over 256 KiB/s (burst 512 KiB) but under "
                   "the frame rate: `rate_limited`, then the same close"),
    "big-broadcast-paced": ("ack", "60 KB updates inside both inbound budgets whose fan-out exceeds "
                                    "the sender's `--fanout-rate`: all accepted and broadcast; the server "
                                    "reads the sender more slowly"),
    "slow-reader": ("close 1013", "a connection that stops reading while more than `--max-write-buffer` is "
                    "broadcast to its workspace"),
    "token-expires-while-open": ("close 1008 token expired", "the token's `exp` passes while connected"),
    "connection-storm": ("session.welcome", "hundreds of connections opened at once, up to the per-user cap; "
                         "paced by `--handshake-rate`, each is welcomed within seconds"),
    "connections-over-user-cap": ("HTTP 429 too many connections", "a user's 21st connection on one instance "
                                  "(or, after a race, close 1008 `too many connections`)"),
    "half-open": ("no effect", "TCP connections that send nothing, half an HTTP request, or half a frame; the "
                  "server keeps serving everyone else"),
    # --- handshakes -----------------------------------------------------------------------------------------------
    "hs-wrong-path": ("HTTP 404 no endpoint", "a path other than `/ws`"),
    "hs-missing-token": ("HTTP 401 missing token", "no `token` parameter, or an empty one"),
    "hs-invalid-token": ("HTTP 401 invalid token", "garbage, tampered signature, another secret, `alg: none`, "
                         "no `exp`, no `sub`"),
    "hs-not-yet-valid": ("HTTP 401 token not yet valid", "`nbf` in the future"),
    "hs-expired-token": ("HTTP 401 token expired", "`exp` in the past"),
    "hs-bad-claims": ("HTTP 401 invalid token claims", "`sub` or a `workspaces` entry with a trailing `\\n`, a "
                      "control character, non-ASCII, over 128 chars, not a string; `workspaces` not a list"),
    "hs-missing-workspace": ("HTTP 403 missing workspace parameter", "no `workspace` parameter, or an empty one"),
    "hs-foreign-workspace": ("HTTP 403 user is not a member", "a workspace not in the token, incl. `ws-a%0A`"),
    "hs-bad-origin": ("HTTP 403 origin", "an `Origin` not in `--allowed-origin`"),
    "hs-future-iat": ("HTTP 101", "`iat` in the future: never checked (issuer clock skew), the connection opens"),
    "hs-allowed-origin": ("HTTP 101", "the allowed `Origin`, or no `Origin` header at all: the connection opens"),
    "hs-not-websocket": ("HTTP 426", "a plain GET of `/ws` with a valid token and no Upgrade header"),
    "hs-garbage-request": ("HTTP 4xx or closed", "bytes that are not HTTP, or 200 KB of headers"),
}

#: Relative draw weights of the frame classes (per 10,000 frames, roughly).
WEIGHTS: dict[str, float] = {
    "random-bytes": 1100, "random-text": 600, "truncated-envelope": 500, "malformed-json": 500,
    "raw-control-char-in-string": 150, "binary-invalid-utf8-in-value": 500, "binary-invalid-utf8-elsewhere": 500,
    "text-invalid-utf8": 120, "deep-json-over-limit": 350, "deep-json-huge-arrays": 20, "deep-json-at-limit": 100,
    "not-an-object": 300, "huge-array": 15, "envelope-bad-shape": 500, "unknown-type": 450,
    "payload-bad-shape": 800, "bad-task-id": 700, "bad-field-name": 400, "changes-257-fields": 15,
    "huge-invalid-payload": 25, "foreign-workspace": 450, "foreign-workspace-bad-payload": 80,
    "valid-update": 250, "valid-update-whitespace": 60, "valid-update-fragmented": 100,
    "forged-user-and-time": 250, "edge-valid-ids": 120, "changes-256-fields": 15, "huge-valid-update": 15,
    "frame-at-size-limit": 5, "valid-get": 150, "valid-join": 100, "heartbeat-not-joined": 60,
    "leave-not-joined": 60, "ping-pong": 80, "presence-pong": 40, "presence-pong-bad-seq": 60,
    "frame-over-size-limit": 20, "protocol-violation": 40,
}

DOC_SECTION = "### Hostile input: what each input class gets"


def doc_rows(markdown: str) -> dict[str, tuple[str, str]]:
    """The doc's hostile-input table as class -> (outcome, input), from rows ``| `class` | input | `outcome` |``."""
    start = markdown.index(DOC_SECTION)
    end = markdown.find("\n## ", start)
    rows = {}
    for line in markdown[start:end if end != -1 else None].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[2].startswith("`"):
            rows[cells[0].strip("`")] = (cells[2].strip("`"), cells[1])
    return rows


def doc_section() -> str:
    """The markdown of the doc's section, rendered from ``CLASSES`` (paste it when a class changes)."""
    rows = "\n".join(f"| `{cls}` | {what} | `{outcome}` |" for cls, (outcome, what) in CLASSES.items())
    return f"""{DOC_SECTION}

What a server answers to each class of hostile input, as `bench/hostile/` sends it (seeded, over real
sockets, while a neighbour edits in the same workspace and a member of another workspace listens). Outcomes:
`error CODE` is exactly one `error` reply and the connection stays open; `ack`, `task.snapshot` and
`presence.state` are an accepted request (nothing refused is ever stored: the task stays at version 0); `no
reply` means nothing comes back; `close CODE` ends the connection; `HTTP STATUS message` refuses the handshake.
For every class, whatever the frame: never a close 1011, no traceback in the server log, every frame the server
sends is valid UTF-8, and nothing reaches another workspace. `tests/server/test_hostile.py` checks that this table
and the harness's (`bench/hostile/classes.py`) are the same.

| input class | input | outcome |
|---|---|---|
{rows}
"""
