"""Models of how clients behave, sans-I/O: how a client's cache applies ordered partial updates
(:mod:`.ordering`, the strategies the lab compares), when its heartbeats fire in a real browser or device
(:mod:`.heartbeat`: timers, Chrome's hidden-tab throttling, iOS, laptop sleep; :mod:`.chromium`: Chromium as
recorded). It is not *the* client: that is ``rtlib/web/rtlib-client.js``. Used by the simulated clients, the
model and the notebooks; imports only :mod:`rtlib.protocol`, whose presence rules it calls rather than copies.
"""
