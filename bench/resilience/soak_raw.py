"""The soak's raw records, and its table recomputed from them (issue 21 item 7: evidence that can be re-checked).

A soak's zeros ("0 lost", "0 cross-workspace") are only as good as the code that counted them. So the soak
writes what it observed, one JSON record a line, gzipped (``bench/results/soak_raw.jsonl.gz``), and
``soak.md``'s table is computed **from that file** by :func:`recompute` (the same function the soak calls):

* ``meta``: the run (parameters, commit and dirty files, warm-up window, incidents);
* ``update``: every sent ``task.update``: its index ``i``, ref, sender, workspace, task, scheduled send time, and
  if acked the version, ack time and who received the ack;
* ``client``: every simulated client: workspace, first connect, connection events, crashed or not, the updates
  it received (indices, sorted, delta-encoded), every frame it received counted by type, envelope workspace
  and content canary (``type|frame workspace|canary``), the users its presence events were about, and its
  final cache (version and a digest of the fields per task);
* ``truth``: each workspace's tasks as Redis holds them at the end (version, digest);
* ``rss``: the RSS samples; ``counts``: the cluster's connection counts read from Redis (sum over live
  instances, fields left by dead ones); ``left``: the presence keys left in Redis once everyone left.

    python -m bench.resilience.soak_raw bench/results/soak_raw.jsonl.gz   # the table, recomputed
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["build_records", "digest", "git_state", "read_raw", "recompute", "rss_growth", "table", "write_raw"]

ROOT = Path(__file__).resolve().parents[2]


def digest(fields: dict[str, Any]) -> str:
    """A short digest of a task's fields (equal digests: equal fields, as the lab's convergence check compares)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def git_state() -> dict[str, Any]:
    """The commit the run measured and whether the tree differed from it (tracked files; which ones)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    dirty = git("diff", "--name-only", "HEAD").splitlines()  # tracked files that differ from the commit
    return {"commit": git("rev-parse", "HEAD") or "unknown", "dirty": bool(dirty), "dirtyFiles": dirty}


def build_records(results: Any, meta: dict[str, Any], rss: pd.DataFrame, counts: list[dict[str, Any]],
                  left: dict[str, Any], truth: dict[str, dict[str, list[Any]]]) -> list[dict[str, Any]]:
    """The raw records of one soak (see the module docstring) from its :class:`rtlib.lab.results.Results`, RSS
    samples (``t``, ``process``, ``rss_mib``), connection-count samples, presence keys left and Redis's truth."""
    sends = results.sends.drop_duplicates("ref")
    index = {ref: i for i, ref in enumerate(sends["ref"])}
    acks = results.acks.groupby("ref").agg(version=("version", "first"), t_acked=("t_acked", "first"),
                                           acked_by=("sender", list))
    records: list[dict[str, Any]] = [{"kind": "meta", **meta}]
    for i, (sender, ws, task, ref, t_sent) in enumerate(sends[["sender", "workspace", "task", "ref", "t_sent"]]
                                                        .itertuples(index=False)):
        ack = acks.loc[ref] if ref in acks.index else None
        records.append({"kind": "update", "i": i, "ref": ref, "sender": sender, "workspace": ws, "task": task,
                        "tSent": round(float(t_sent), 4), "version": None if ack is None else int(ack["version"]),
                        "tAcked": None if ack is None else round(float(ack["t_acked"]), 4),
                        "ackedBy": [] if ack is None else list(ack["acked_by"])})
    got = results.deliveries[~results.deliveries["dropped"].astype(bool)]
    received = got.groupby("receiver")["ref"].agg(list).to_dict()
    frames: dict[str, dict[str, dict[str, int]]] = {}
    for receiver, kind, frame_ws, canary, n in results.frames.itertuples(index=False):
        cell = frames.setdefault(receiver, {}).setdefault(kind, {})
        cell[f"{frame_ws}|{canary}"] = cell.get(f"{frame_ws}|{canary}", 0) + int(n)
    subjects = results.presence.groupby("observer")["subject"].agg(lambda x: dict(Counter(x))).to_dict()
    conns = results.connections
    for user, g in conns.groupby("user", sort=False):
        refs = received.get(user, [])
        indices = sorted({index[r] for r in refs if r in index})
        cache = results.caches.get(user)
        joined = g.loc[g["event"] == "connected", "t"]
        records.append({
            "kind": "client", "user": user, "workspace": g["workspace"].iloc[0],
            "tJoined": round(float(joined.min()), 4) if len(joined) else None,
            "crashed": bool((g["event"] == "crashed").any()), "resynced": bool((g["event"] == "resynced").any()),
            "events": {str(k): int(v) for k, v in g["event"].value_counts().items()},
            "deliveries": len(refs), "receivedUnknown": sum(r not in index for r in refs),
            "received": [b - a for a, b in zip([0, *indices], indices, strict=False)],
            "frames": frames.get(user, {}), "presenceSubjects": subjects.get(user, {}),
            "cache": None if cache is None else {t: [v, digest(f)] for t, (v, f) in sorted(cache.items())}})
    records += [{"kind": "truth", "workspace": ws, "tasks": tasks} for ws, tasks in sorted(truth.items())]
    records += [{"kind": "rss", "t": round(float(t), 2), "process": p, "rss_mib": round(float(m), 2)}
                for t, p, m in rss.itertuples(index=False)]
    records += [{"kind": "counts", **c} for c in counts]
    records.append({"kind": "left", "presenceKeys": left["presenceKeys"], "entries": left["entries"],
                    "dueMembers": left["dueMembers"]})
    return records


def write_raw(records: Iterable[dict[str, Any]], path: Path) -> Path:
    """Records as gzipped JSON lines (mtime 0: the same records give the same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f, gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0, compresslevel=9) as gz, \
            io.TextIOWrapper(gz, encoding="utf-8") as text:
        for r in records:
            text.write(json.dumps(r, separators=(",", ":")) + "\n")
    return path


def read_raw(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def rss_growth(rss: pd.DataFrame, start: float, end: float) -> dict[str, dict[str, float]]:
    """Per process alive through [start, end] (seconds of the run): mean RSS of the first and last tenth of
    that window and the growth between them, in %. Samples after ``end`` (everyone leaving, the drain) are not
    the steady state: the leave burst buffers a presence.left per viewer for every other viewer at once (+4.8 MiB
    on i0 in the 2026-12-08 soak, once, at the end), and counting it made a flat 60.3 -> 61.0 MiB read +7 %."""
    out = {}
    window = max(end - start, 1e-9) / 10
    for proc, g in rss.groupby("process"):
        if g["t"].min() > start or g["t"].max() < end - window:
            continue  # not alive through the whole window (killed, or started after it began)
        first = g.loc[(g["t"] >= start) & (g["t"] < start + window), "rss_mib"].mean()
        last = g.loc[(g["t"] >= end - window) & (g["t"] <= end), "rss_mib"].mean()
        out[str(proc)] = {"from_mib": round(float(first), 1), "to_mib": round(float(last), 1),
                          "growth_pct": round(float((last - first) / first * 100), 2)}
    return out


def _undelta(deltas: list[int]) -> list[int]:
    out, x = [], 0
    for d in deltas:
        x += d
        out.append(x)
    return out


def _lost_updates(clients: list[dict[str, Any]], acked: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str]]:
    """(client, ref) of every acknowledged update a client that stayed does not have: for each client that did
    not crash, every update acked in its workspace and sent after it first connected must be among its
    deliveries, or, if it resynced at least once, in its final cache (that task at that version or later)."""
    lost = []
    for c in clients:
        if c["crashed"] or c["tJoined"] is None:
            continue
        got = set(_undelta(c["received"]))
        cache = c["cache"] or {}
        for u in acked.get(c["workspace"], ()):
            if u["tSent"] > c["tJoined"] and u["i"] not in got and not (
                    c["resynced"] and cache.get(u["task"], [0])[0] >= u["version"]):
                lost.append((c["user"], u["ref"]))
    return lost


def _cross(clients: list[dict[str, Any]], updates: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per event type: frames received, frames whose envelope workspace or content canary is another
    workspace's (``foreign``), and frames about another workspace's user or update (``foreignSubject``:
    presence events about a user of another workspace, task.updated of an update sent in another workspace,
    acks of an update someone else sent)."""
    ws_of = {c["user"]: c["workspace"] for c in clients}
    by_type: dict[str, Counter[str]] = {}
    for c in clients:
        for kind, cells in c["frames"].items():
            counts = by_type.setdefault(kind, Counter())
            for key, n in cells.items():
                frame_ws, canary = key.split("|")
                counts["frames"] += n
                counts["foreign"] += n * (frame_ws != c["workspace"] or canary not in ("", c["workspace"]))
        presence = by_type.setdefault("presence.joined/left (subjects)", Counter())
        for subject, n in c["presenceSubjects"].items():
            presence["frames"] += n
            presence["foreignSubject"] += n * (ws_of.get(subject) != c["workspace"])
        updated = by_type.setdefault("task.updated (by ref)", Counter())
        indices = _undelta(c["received"])
        updated["frames"] += len(indices) + c["receivedUnknown"]
        updated["foreignSubject"] += c["receivedUnknown"] + sum(updates[i]["workspace"] != c["workspace"]
                                                                for i in indices)
    acks = by_type.setdefault("ack (by ref)", Counter())
    for u in updates:
        for receiver in u.get("ackedBy", ()):
            acks["frames"] += 1
            acks["foreignSubject"] += receiver != u["sender"]
    return {k: {"frames": v["frames"], "foreign": v["foreign"], "foreignSubject": v["foreignSubject"]}
            for k, v in sorted(by_type.items())}


def recompute(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Every number of soak.md's table, from the raw records alone."""
    meta = next(r for r in records if r["kind"] == "meta")
    updates = sorted((r for r in records if r["kind"] == "update"), key=lambda r: r["i"])
    assert [u["i"] for u in updates] == list(range(len(updates))), "update indices must be 0..n-1"
    clients = [r for r in records if r["kind"] == "client"]
    acked: dict[str, list[dict[str, Any]]] = {}
    for u in updates:
        if u["version"] is not None:
            acked.setdefault(u["workspace"], []).append(u)
    lost = _lost_updates(clients, acked)
    # The protocol promises no duplicate (a resume replays only what was missed): every task.updated frame beyond
    # the first of its update, per client, is one.
    dups = {c["user"]: c["deliveries"] - len(c["received"]) - c["receivedUnknown"] for c in clients}
    cross = _cross(clients, updates)
    truth = {r["workspace"]: r["tasks"] for r in records if r["kind"] == "truth"}
    empty = [0, digest({})]
    diverged = sorted(c["user"] for c in clients if c["cache"] is not None and any(
        c["cache"].get(t, empty) != truth.get(c["workspace"], {}).get(t, empty)
        for t in set(c["cache"]) | set(truth.get(c["workspace"], {}))))
    rss = pd.DataFrame([r for r in records if r["kind"] == "rss"], columns=["t", "process", "rss_mib"])
    growth = rss_growth(rss, meta["warmupS"], meta["durationS"]) if len(rss) else {}
    left = next((r for r in records if r["kind"] == "left"), {"presenceKeys": [], "entries": 0, "dueMembers": 0})
    counts = [r for r in records if r["kind"] == "counts"]
    final_counts = counts[-1] if counts else None
    return {
        "updatesSent": len(updates), "acked": sum(len(v) for v in acked.values()),
        "deliveries": sum(c["deliveries"] for c in clients),
        "lostUpdates": len(lost), "lost": lost[:20],
        "duplicates": sum(dups.values()), "duplicatedClients": sum(n > 0 for n in dups.values()),
        "crossWorkspace": sum(v["foreign"] + v["foreignSubject"] for v in cross.values()),
        "frames": sum(v["frames"] for k, v in cross.items() if "(" not in k), "crossByType": cross,
        "presenceLeft": {"keys": len(left["presenceKeys"]), "entries": left["entries"],
                         "dueMembers": left["dueMembers"]},
        "rssGrowth": growth, "maxRssGrowthPct": max((g["growth_pct"] for g in growth.values()), default=float("nan")),
        "divergedClients": len(diverged), "converged": not diverged,
        "countsLeft": None if final_counts is None else {"live": final_counts["live"], "stale": final_counts["stale"]},
    }


def table(n: dict[str, Any]) -> list[str]:
    """soak.md's table (markdown lines) from :func:`recompute`'s numbers."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    growth = n["maxRssGrowthPct"]
    rows = [
        ("lost updates (acked, missing from a client that stayed)", f"{n['lostUpdates']:,} of {n['acked']:,} acked",
         "0", verdict(n["lostUpdates"] == 0)),
        ("cross-workspace frames (every event type: envelope, canary, subject)",
         f"{n['crossWorkspace']:,} of {n['frames']:,} frames ({n['deliveries']:,} task.updated)",
         "0 over ≥ 1,000,000", verdict(n["crossWorkspace"] == 0 and n["frames"] >= 1_000_000)),
        ("presence keys left after everyone left", f"{n['presenceLeft']['keys']} ({n['presenceLeft']['entries']} "
         "entries)", "0", verdict(n["presenceLeft"]["keys"] == 0)),
        ("RSS growth after warm-up (max over processes)", f"{growth:+.2f} %", "< 5 %", verdict(growth < 5)),
        ("caches equal to Redis at the end", f"{n['divergedClients']} clients diverged", "0",
         verdict(n["converged"])),
    ]
    if "duplicates" in n:  # (reports written before it was counted have no such row)
        rows.insert(1, ("duplicate deliveries (an update delivered twice to one client)",
                        f"{n['duplicates']:,} of {n['deliveries']:,} task.updated ({n['duplicatedClients']:,} "
                        "clients)", "0", verdict(n["duplicates"] == 0)))
    if n.get("countsLeft") is not None:
        live = n["countsLeft"]["live"]
        rows.append(("cluster connection counts after everyone left (live instances)",
                     f"{live} ({n['countsLeft']['stale']} fields of dead instances)", "0", verdict(live == 0)))
    return ["| measure | result | target | |", "|---|---|---|---|",
            *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw", type=Path, nargs="?", default=ROOT / "bench" / "results" / "soak_raw.jsonl.gz")
    ap.add_argument("--check", type=Path, metavar="SOAK_MD", help="exit 1 unless SOAK_MD holds this very table")
    args = ap.parse_args(argv)
    numbers = recompute(read_raw(args.raw))
    lines = table(numbers)
    print("\n".join(lines))
    print("\nby event type (frames, other workspace's envelope or canary, about another workspace's user/update):")
    for kind, v in numbers["crossByType"].items():
        print(f"  {kind}: {v['frames']:,} frames, {v['foreign']} foreign, {v['foreignSubject']} foreign subject")
    if args.check:
        return 0 if "\n".join(lines) in args.check.read_text() else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
