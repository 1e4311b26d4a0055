"""The lab's own reads and resets of Redis (the truth of a run, a flush before it), on one Redis or a Cluster.

A lab :class:`~rtlib.lab.cluster.Cluster` may run on one embedded Redis, on a local Redis Cluster it starts
(``redis_shards=N``, :class:`~rtlib.server.redis_cluster.RedisClusterProcess`), or on a URL given; these helpers
pick redis-py's client to match (a cluster's keys are spread over its masters, and ``FLUSHALL`` must reach each).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.cluster import RedisCluster

__all__ = ["flush", "is_cluster", "redis_client"]


def is_cluster(url: str) -> bool:
    """Is the Redis at ``url`` a Redis Cluster node?"""
    with redis.Redis.from_url(url) as client:
        return str(client.info("cluster").get("cluster_enabled", 0)) == "1"


@contextmanager
def redis_client(url: str) -> Iterator[Any]:
    """A synchronous client of the Redis (or the whole Redis Cluster) at ``url``, closed after use."""
    client = RedisCluster.from_url(url) if is_cluster(url) else redis.Redis.from_url(url)
    try:
        yield client
    finally:
        client.close()


def flush(url: str) -> None:
    """Empty the Redis at ``url``: every master of a cluster."""
    with redis_client(url) as client:
        if isinstance(client, RedisCluster):
            client.flushall(target_nodes=RedisCluster.PRIMARIES)
        else:
            client.flushall()
