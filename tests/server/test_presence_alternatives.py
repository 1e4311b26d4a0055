"""Integration: the presence alternatives (docs/protocol.md §9) on two instances, timing compressed 100x.

Probe mode (the server probes, the client's answer is its heartbeat), the leave grace (timeouts and lost
connections announced later, and not at all when the viewer comes back in time) and the welcome that
announces them. Observers sit on the other instance, so every event crossed Redis.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from conftest import Instances, WsClient

from rtlib.protocol.config import ServerConfig

# 0.3 s heartbeat/probe interval, 0.6 s timeout, 0.05 s sweeps, as the shared fixture.
PROBE = ServerConfig(heartbeat_interval=0.3, presence_timeout=0.6, sweep_interval=0.05, presence_mode="probe")
GRACE = ServerConfig(heartbeat_interval=0.3, presence_timeout=0.6, sweep_interval=0.05, leave_grace=0.6)


async def answer_probes(client: WsClient, answered: list[int]) -> None:
    """A tab that never beats from a timer, but answers every probe from its message handler."""
    while True:
        probe = await client.expect("presence.probe", timeout=30)
        answered.append(probe["payload"]["seq"])
        await client.send("presence.pong", {"seq": probe["payload"]["seq"]})


@pytest.mark.parametrize("server_config", [PROBE])
async def test_probe_mode_keeps_an_answering_viewer_and_drops_a_silent_one(cluster: Instances) -> None:
    alice = await cluster.client("alice", instance=0)
    carol = await cluster.client("carol", instance=0)
    bob = await cluster.client("bob", instance=1)
    assert alice.welcome["payload"]["presenceMode"] == "probe"
    for c in (alice, carol):
        await c.send("presence.join", {"taskId": "t1"})
        await bob.expect("presence.joined", userId=c.user)
    answered: list[int] = []
    answering = asyncio.create_task(answer_probes(alice, answered))
    try:
        # carol reads (so TCP stays healthy) but never answers: she is a frozen page; alice answers.
        left = await bob.expect("presence.left", timeout=5)
        assert left["payload"] == {"taskId": "t1", "userId": "carol", "reason": "timeout"}
        await asyncio.sleep(1.5)  # five more probe intervals, 2.5 timeouts: alice never sent a heartbeat
        assert [e for e in await bob.silent(0.05, "presence.left") if e["payload"]["userId"] == "alice"] == []
        assert len(answered) >= 5 and answered == sorted(answered)
        carol_probes = [e for e in carol.backlog + await carol.silent(0.05) if e["type"] == "presence.probe"]
        assert carol_probes, "carol was probed too"
    finally:
        answering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await answering
    # Alice stops answering (her tab froze): gone within timeout + a probe interval + a sweep.
    left = await bob.expect("presence.left", timeout=5, userId="alice")
    assert left["payload"]["reason"] == "timeout"


@pytest.mark.parametrize("server_config", [PROBE])
async def test_a_pong_re_joins_an_expired_entry_like_a_heartbeat(cluster: Instances) -> None:
    alice = await cluster.client("alice", instance=0)
    bob = await cluster.client("bob", instance=1)
    await alice.send("presence.join", {"taskId": "t1"})
    await bob.expect("presence.joined", userId="alice")
    await bob.expect("presence.left", timeout=5, userId="alice")  # no answers: expired
    # Her page wakes up (it was frozen) and answers the next probe: she is back, as after a late heartbeat.
    probe = await alice.expect("presence.probe", timeout=5)
    await alice.send("presence.pong", {"seq": probe["payload"]["seq"]})
    assert (await alice.expect("presence.state"))["payload"]["viewers"] == ["alice"]
    await bob.expect("presence.joined", userId="alice")
    # After a leave she views nothing: a pong then does nothing and she is no longer probed.
    await alice.send("presence.leave", {"taskId": "t1"})
    await bob.expect("presence.left", userId="alice", reason="leave")
    await alice.send("presence.pong", {"seq": 99})
    assert await bob.silent(0.7, "presence.joined") == []
    await alice.send("presence.pong", {"seq": "x"})
    error = await alice.expect("error")
    assert error["payload"]["code"] == "invalid_payload"


@pytest.mark.parametrize("server_config", [GRACE])
async def test_leave_grace_holds_a_timeout_back_and_drops_it_when_the_viewer_beats(cluster: Instances) -> None:
    alice = await cluster.client("alice", instance=0)
    bob = await cluster.client("bob", instance=1)
    assert alice.welcome["payload"]["leaveGrace"] == 0.6
    await alice.send("presence.join", {"taskId": "t1"})
    await alice.expect("presence.state")
    await bob.expect("presence.joined", userId="alice")
    # A 0.9 s gap: past the 0.6 s timeout, inside timeout + grace. No flap.
    await asyncio.sleep(0.9)
    await alice.send("presence.heartbeat", {"taskId": "t1"})
    assert await bob.silent(0.3, "presence.left") == []
    assert await alice.silent(0.05, "presence.state") == [], "the entry was never popped: no re-join"
    # Silence: the timeout is announced once, after timeout + grace (1.2 s), not after the timeout alone.
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await bob.expect("presence.left", timeout=5, userId="alice", reason="timeout")
    assert loop.time() - t0 >= 1.2 - 0.3 - 0.05  # minus the 0.3 s already waited above, minus one sweep


@pytest.mark.parametrize("server_config", [GRACE])
async def test_a_lost_connection_is_held_for_the_grace_and_a_quick_return_does_not_flap(cluster: Instances
                                                                                      ) -> None:
    bob = await cluster.client("bob", instance=1)
    alice = await cluster.client("alice", instance=0)
    await alice.send("presence.join", {"taskId": "t1"})
    await bob.expect("presence.joined", userId="alice")
    await alice.send("presence.heartbeat", {"taskId": "t1"})
    alice.ws.transport.abort()  # the network dropped: no close frame
    back = await cluster.client("alice", instance=1)  # reconnects to the other instance and re-joins
    await back.send("presence.join", {"taskId": "t1"})
    assert (await back.expect("presence.state"))["payload"]["viewers"] == ["alice"]
    for _ in range(5):  # 1.5 s, well past the grace, beating: the old entry expires silently
        await asyncio.sleep(0.3)
        await back.send("presence.heartbeat", {"taskId": "t1"})
    assert [e["type"] for e in await bob.silent(0.1) if e["type"].startswith("presence.")] == []
    # A clean close is never delayed.
    await back.ws.close()
    left = await bob.expect("presence.left", timeout=0.4)
    assert left["payload"] == {"taskId": "t1", "userId": "alice", "reason": "disconnect"}
    # A lost connection that does not come back is announced after the grace (reason timeout).
    carol = await cluster.client("carol", instance=0)
    await carol.send("presence.join", {"taskId": "t1"})
    await bob.expect("presence.joined", userId="carol")
    carol.ws.transport.abort()
    assert await bob.silent(0.45, "presence.left") == []
    await bob.expect("presence.left", timeout=5, userId="carol", reason="timeout")
