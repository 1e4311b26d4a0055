"""Integration: task-level presence across two instances (timing compressed 100x by the fixture config)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import Instances

from rtlib.protocol.config import ServerConfig


async def test_join_state_and_joined_to_others_only(cluster: Instances) -> None:
    alice = await cluster.client("alice", instance=0)
    bob = await cluster.client("bob", instance=1)
    await alice.send("presence.join", {"taskId": "t1"})
    state = await alice.expect("presence.state")
    assert state["payload"] == {"taskId": "t1", "viewers": ["alice"]}
    joined = await bob.expect("presence.joined")
    assert joined["payload"] == {"taskId": "t1", "userId": "alice"} and joined["userId"] == "alice"
    assert await alice.silent(0.2, "presence.joined") == []  # the joiner gets state, not its own joined
    await bob.send("presence.join", {"taskId": "t1"})
    assert (await bob.expect("presence.state"))["payload"]["viewers"] == ["alice", "bob"]
    await alice.expect("presence.joined", userId="bob")


async def test_leave_reason_leave(cluster: Instances) -> None:
    alice = await cluster.client("alice", instance=0)
    bob = await cluster.client("bob", instance=1)
    await alice.send("presence.join", {"taskId": "t1"})
    await bob.expect("presence.joined", userId="alice")
    await alice.send("presence.leave", {"taskId": "t1"})
    left = await bob.expect("presence.left")
    assert left["payload"] == {"taskId": "t1", "userId": "alice", "reason": "leave"}
    await alice.send("presence.leave", {"taskId": "t1"})  # leaving twice is a no-op
    assert await bob.silent(0.2, "presence.left") == []


async def test_disconnect_reason_disconnect_at_once(cluster: Instances) -> None:
    alice = await cluster.client("alice", instance=0)
    bob = await cluster.client("bob", instance=1)
    for task in ("t1", "t2"):
        await alice.send("presence.join", {"taskId": task})
        await bob.expect("presence.joined", taskId=task)
    await alice.ws.close()
    lefts = {(await bob.expect("presence.left", timeout=0.4))["payload"]["taskId"] for _ in range(2)}
    assert lefts == {"t1", "t2"}  # well before the 0.6 s timeout: removed on close, not by expiry


async def test_timeout_reason_timeout_exactly_once_with_two_sweepers(cluster: Instances) -> None:
    crashed = await cluster.client("alice", instance=0)
    watchers = [await cluster.client("bob", instance=0), await cluster.client("carol", instance=1)]
    await crashed.send("presence.join", {"taskId": "t1"})
    for w in watchers:
        await w.expect("presence.joined", userId="alice")
    # A crash: the entry stays in Redis (as if the socket vanished without a close), so only expiry removes it.
    cluster.servers[0].sessions[crashed.welcome["payload"]["connectionId"]].tasks.clear()
    crashed.ws.transport.abort()
    t0 = asyncio.get_running_loop().time()
    for w in watchers:
        left = await w.expect("presence.left", timeout=3)
        assert left["payload"] == {"taskId": "t1", "userId": "alice", "reason": "timeout"}
    delay = asyncio.get_running_loop().time() - t0
    assert delay <= 0.6 + 0.05 + 0.5  # timeout + sweep interval + scheduling slack
    for w in watchers:  # both instances swept, one presence.left in all
        assert await w.silent(0.3, "presence.left") == []


async def test_heartbeats_keep_a_viewer_and_a_late_one_rejoins(cluster: Instances) -> None:
    alice = await cluster.client("alice", instance=0)
    bob = await cluster.client("bob", instance=1)
    await alice.send("presence.join", {"taskId": "t1"})
    await alice.expect("presence.state")
    await bob.expect("presence.joined")
    for _ in range(5):  # 1.5 s of heartbeats every 0.3 s: never times out
        await asyncio.sleep(0.3)
        await alice.send("presence.heartbeat", {"taskId": "t1"})
    assert await bob.silent(0.05, "presence.left") == []
    assert await alice.silent(0.05, "presence.state") == []  # a plain heartbeat gets no reply
    await bob.expect("presence.left", timeout=2, reason="timeout")  # stopped: gone after the timeout
    await alice.send("presence.heartbeat", {"taskId": "t1"})  # a throttled tab wakes up: re-joins
    assert (await alice.expect("presence.state"))["payload"]["viewers"] == ["alice"]
    await bob.expect("presence.joined", userId="alice")


async def test_two_tabs_join_once_and_leave_with_the_last(cluster: Instances) -> None:
    tab1 = await cluster.client("alice", instance=0)
    tab2 = await cluster.client("alice", instance=1)
    bob = await cluster.client("bob", instance=1)
    await tab1.send("presence.join", {"taskId": "t1"})
    await bob.expect("presence.joined", userId="alice")
    await tab2.send("presence.join", {"taskId": "t1"})
    assert (await tab2.expect("presence.state"))["payload"]["viewers"] == ["alice"]
    await tab1.send("presence.leave", {"taskId": "t1"})
    await tab1.ws.close()
    assert await bob.silent(0.3) == []  # alice still views t1 in her other tab
    await tab2.ws.close()
    left = await bob.expect("presence.left")
    assert left["payload"] == {"taskId": "t1", "userId": "alice", "reason": "disconnect"}


async def test_no_workspace_online_list_exists(cluster: Instances) -> None:
    """User research: a workspace-wide online list feels like surveillance. Nothing may expose one."""
    from rtlib.protocol.schema import CLIENT_TYPES, SERVER_PAYLOADS

    # Every request names one task, except task.list, which pages tasks (ids, versions, fields), never users,
    # and presence.pong, which answers a probe of this connection and carries nothing but the probe's number.
    assert all("taskId" in cls.__struct_fields__ for t, cls in CLIENT_TYPES.items()
               if t not in ("task.list", "presence.pong"))
    assert set(CLIENT_TYPES["task.list"].__struct_fields__) == {"cursor", "limit", "ref"}
    assert set(CLIENT_TYPES["presence.pong"].__struct_fields__) == {"seq"}
    assert set(SERVER_PAYLOADS["presence.probe"].__struct_fields__) == {"seq"}
    assert not [t for t in [*CLIENT_TYPES, *SERVER_PAYLOADS] if "online" in t or t.startswith("workspace")]
    alice = await cluster.client("alice")
    for type_ in ("presence.list", "workspace.presence", "presence.online", "presence.state"):
        await alice.send(type_, {"ref": type_})
        assert (await alice.expect("error", ref=type_))["payload"]["code"] == "unknown_type"
    await alice.send("presence.join", {})  # presence queries always need a task
    assert (await alice.expect("error"))["payload"]["code"] == "invalid_payload"


@pytest.mark.parametrize("server_config", [ServerConfig()])  # real timing: nothing expires mid-test
async def test_join_and_leave_racing_on_two_instances_leave_every_observer_right(cluster: Instances) -> None:
    """One user, two tabs on two instances: tab A joins a task while tab B leaves it (the user stays a viewer).
    Each change is published by the script that makes it, so an observer that builds its view from the events
    ends where the store is, every round (with a second publish round trip, 15-17 of 150 rounds ended wrong)."""
    tab_a = await cluster.client("alice", instance=0)
    tab_b = await cluster.client("alice", instance=1)
    observers = [await cluster.client("obs0", instance=0), await cluster.client("obs1", instance=1)]
    rounds = 150
    for r in range(rounds):
        await tab_b.send("presence.join", {"taskId": f"r{r}"})
        await tab_b.expect("presence.state", taskId=f"r{r}")
    await asyncio.gather(*(tab_a.send("presence.join", {"taskId": f"r{r}"}) for r in range(rounds)),
                         *(tab_b.send("presence.leave", {"taskId": f"r{r}"}) for r in range(rounds)))
    for r in range(rounds):
        await tab_a.expect("presence.state", taskId=f"r{r}")
    for observer in observers:
        views: dict[str, set[str]] = {}
        events = await observer.silent(1.0)
        for event in events:
            if event["type"] in ("presence.joined", "presence.left"):
                view = views.setdefault(event["payload"]["taskId"], set())
                (view.add if event["type"] == "presence.joined" else view.discard)(event["payload"]["userId"])
        wrong = [t for t in (f"r{r}" for r in range(rounds)) if views.get(t) != {"alice"}]
        assert not wrong, (f"{observer.user}: {len(wrong)} of {rounds} tasks ended with a wrong viewer list: "
                           f"{[(e['type'], e['payload']) for e in events if e['payload'].get('taskId') == wrong[0]]}")
