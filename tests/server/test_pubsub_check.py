"""The pub/sub check (issue 11 §2) must not mistake a busy instance for a deaf subscriber.

A probe that comes back late while workspace events keep arriving means the process is busy, not that the
subscriber went deaf: dropping it then would close every client at the worst moment. Simulated here by
sending the probes to a channel nobody reads (so every probe "times out"), first while events flow, then
in silence, when the check must act.
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
    server.fanout.probe_channel = b"rt:probe:nobody-reads-this"  # every probe is now lost
    reader = await cluster.client("reader", instance=0)
    writer = await cluster.client("writer", instance=1)
    for n in range(12):  # 1.2 s of events, four probe timeouts: the subscriber is kept
        await writer.send("task.update", {"taskId": "t", "changes": {"n": n}})
        await reader.expect("task.updated", version=n + 1)
        await asyncio.sleep(0.1)
    assert not reader.ws.close_code
    # Silence: the next lost probe is taken at its word, the subscriber is replaced and clients are closed.
    await asyncio.wait_for(reader.ws.wait_closed(), 5)
    assert reader.ws.close_code == 1011
