"""Test helper: move one slot of a real Redis Cluster between masters, the way ``redis-cli --cluster reshard`` does
(``SETSLOT IMPORTING``/``MIGRATING``, ``MIGRATE`` of its keys, ``SETSLOT NODE`` on every master)."""

from __future__ import annotations

import redis

__all__ = ["begin_move", "finish_move", "move_slot", "owner_port"]


def _id(port: int) -> str:
    with redis.Redis(port=port) as r:
        node_id = r.execute_command("CLUSTER MYID")
    return node_id.decode() if isinstance(node_id, bytes) else node_id


def owner_port(ports: list[int], slot: int) -> int:
    with redis.Redis(port=ports[0]) as r:
        for lo, hi, master, *_ in r.execute_command("CLUSTER SLOTS"):
            if lo <= slot <= hi:
                return int(master[1])
    raise LookupError(slot)


def begin_move(slot: int, src: int, dst: int) -> None:
    """Mark the slot migrating from ``src`` to ``dst`` and move every key it has (``ASK`` from now on)."""
    with redis.Redis(port=src) as s, redis.Redis(port=dst) as d:
        d.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", _id(src))
        s.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", _id(dst))
        while keys := s.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            s.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)


def finish_move(ports: list[int], slot: int, dst: int) -> None:
    """Give the slot to ``dst`` on every master (``MOVED`` from now on; the old owner drops its subscribers)."""
    dst_id = _id(dst)
    for port in [dst, *(p for p in ports if p != dst)]:
        with redis.Redis(port=port) as r:
            r.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)


def move_slot(ports: list[int], slot: int, dst: int) -> None:
    begin_move(slot, owner_port(ports, slot), dst)
    finish_move(ports, slot, dst)
