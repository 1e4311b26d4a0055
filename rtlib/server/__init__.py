"""The live server: the websockets driver of :mod:`rtlib.protocol` (:mod:`.driver`), Redis pub/sub rooms
(:mod:`.fanout`), the Redis scripts (:mod:`.store`) and connection (:mod:`.resp`), tokens (:mod:`.auth`) and
the embedded redis-server. Needs only the core install (``pip install rtlib``); never imports :mod:`rtlib.lab`.
"""

from rtlib.server.driver import WS_PATH, RealtimeServer

__all__ = ["WS_PATH", "RealtimeServer"]
