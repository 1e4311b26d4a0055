"""One Redis Cluster master lost while the others answer: only the workspaces in its slots wait (issue 22).

Before, a dropped subscriber connection to *any* master put the whole instance in broker outage
(:mod:`rtlib.server.outage`): every workspace answered ``unavailable`` until the killed master's replica was
promoted and every room re-subscribed and caught up, about 2 s with ``cluster-node-timeout`` 1 s, though two
thirds of the workspaces (3 masters) lived on masters that never stopped answering. Now
(:class:`~rtlib.server.cluster_fanout.ClusterFanout` with a :class:`LostMasters`):

1. A master's subscriber drops while another master's is still open (killed: at once; paused or partitioned: the
   pub/sub check drops it, ``ClusterFanout.drop_deaf``): that master is *lost* (:meth:`lose`); its
   rooms' channels are held (:attr:`Fanout.holding`), and requests for a workspace whose slot it owns are
   answered ``unavailable`` at once (:meth:`serves`, asked by :class:`~rtlib.server.effects.Executor`, and new
   connections to them refused 503 by :class:`~rtlib.server.handshake.Handshakes`); every
   other workspace carries on, and the pub/sub check probes the masters left.
2. :meth:`_retry` calls the fan-out's ``regain`` with rtlib's backoff: read the slot map; a lost master no longer
   in it (its replica was promoted) or answering again is forgotten, its rooms are subscribed on their slots' new
   owner and caught up from history (:mod:`rtlib.server.catchup`), as after a slot move.
3. If no master is left (the last subscriber dropped too) or every master falls silent at once, the
   whole-instance outage of :mod:`rtlib.server.outage` takes over (:meth:`clear`): it re-subscribes every room.

Not covered (measured in ``docs/operations.md``): presence operations are not scoped (redis-py's cluster client
retries one for the lost master's slots until the promotion, holding its connection's later frames and, for a
sweep, the presence timer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from rtlib.server.cluster_client import Node, Topology, slot_of
from rtlib.server.resp import RespError, backoff
from rtlib.server.tasks import spawn

__all__ = ["LostMasters"]

log = logging.getLogger("rtlib.server.lost_masters")


class LostMasters:
    """The masters this instance lost while it still reached others, each since when (``time.time()``)."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.since: dict[Node, float] = {}
        #: Each lost master once regained: ``(node, seconds it was lost)``, for operators and benchmarks.
        self.regained: list[tuple[Node, float]] = []
        self._task: asyncio.Task[None] | None = None

    def serves(self, key: bytes | str) -> bool:
        """Does a master this instance reaches own ``key``'s slot (its workspace's requests can be carried out)?"""
        return not self.since or self.topology.owner[slot_of(key)] not in self.since

    def lose(self, node: Node, regain: Callable[[], Awaitable[bool]]) -> None:
        """``node``'s subscriber dropped; ``regain()`` (one try, True once no master is lost) is retried."""
        self.since.setdefault(node, time.time())
        if self._task is None or self._task.done():
            self._task = spawn(self._retry(regain), name="cluster-regain-masters")

    def forget(self, nodes: list[Node]) -> None:
        """``nodes`` are served again (replaced in the slot map, or answering): their workspaces carry on."""
        now = time.time()
        for node in nodes:
            if (since := self.since.pop(node, None)) is not None:
                self.regained.append((node, now - since))
                log.warning("redis cluster master %s:%s lost for %.1f s: its slots are served again", *node,
                            now - since)

    def window(self) -> float:
        """Seconds since the first lost master dropped: what its rooms may have missed (a catch-up's window)."""
        return time.time() - min(self.since.values()) if self.since else 0.0

    async def _retry(self, regain: Callable[[], Awaitable[bool]]) -> None:
        failures = 0
        while True:
            failures += 1
            await asyncio.sleep(backoff(failures))
            try:
                if await regain():
                    return
            except (OSError, ConnectionError, TimeoutError, RespError) as exc:
                if failures == 1 or failures % 20 == 0:
                    log.warning("redis cluster: lost master(s) %s not replaced yet (%s); retrying",
                                ", ".join(f"{h}:{p}" for h, p in self.since), exc)
            except Exception:  # a bug: logged, and retried all the same (else these workspaces would wait forever)
                if failures == 1 or failures % 20 == 0:
                    log.exception("redis cluster: regaining lost master(s) failed; retrying")

    def clear(self) -> None:
        """A whole-instance outage takes over (it re-subscribes every room): nothing is lost on its own now."""
        self.since.clear()
        if self._task is not None:  # never the caller: regain() does not start a whole reconnect
            self._task.cancel()
            self._task = None
