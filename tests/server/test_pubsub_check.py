"""The pub/sub check (issue 11 §2) must not mistake a busy instance for a deaf subscriber, and (issue 20) repairs
a deaf one by re-subscribing and catching up, without closing anyone.

A probe that comes back late while workspace events keep arriving means the process is busy, not that the
subscriber went deaf: replacing it then would cost a catch-up at the worst moment. Simulated here by sending the
probes to a channel nobody reads (so every probe "times out"), first while events flow, then in silence, when
the check must act.
"""

from __future__ import annotations

import asyncio

import pytest
from conftest import Instances

from rtlib.protocol.config import ServerConfig

CHECK = ServerConfig(pubsub_check_interval=0.1, pubsub_check_timeout=0.3, server_id="i")


@pytest.mark.parametrize("server_config", [CHECK])
async def test_a_late_probe_is_forgiven_while_events_arrive_and_acted_on_in_silence(cluster: Instances) -> None:
    server = cluster.servers[0]
    assert server.outages is not None
    real_channel = server.fanout.probe_channel
    server.fanout.probe_channel = b"rt:probe:nobody-reads-this"  # every probe is now lost
    reader = await cluster.client("reader", instance=0)
    writer = await cluster.client("writer", instance=1)
    for n in range(12):  # 1.2 s of events, four probe timeouts: the subscriber is kept
        await writer.send("task.update", {"taskId": "t", "changes": {"n": n}})
        await reader.expect("task.updated", version=n + 1)
        await asyncio.sleep(0.1)
    assert server.outages.outages == 0
    # Silence: the next lost probe is taken at its word and the subscriber is replaced, within 2 s...
    for _ in range(200):
        if server.outages.outages:
            break
        await asyncio.sleep(0.01)
    assert server.outages.outages >= 1
    server.fanout.probe_channel = real_channel  # (the next subscriber hears its probes again)
    for _ in range(300):
        if server.broker.up and server.fanout.probe_channel == real_channel and server.outages.reports:
            break
        await asyncio.sleep(0.01)
    # ...but nobody is closed: the reader stays and keeps receiving.
    await writer.send("task.update", {"taskId": "t", "changes": {"n": 12}, "ref": "last"})
    await reader.expect("task.updated", version=13)
    assert reader.ws.close_code is None
