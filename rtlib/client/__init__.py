"""Client-side rules, sans-I/O: how a client applies ordered partial updates (:mod:`.ordering`) and when it
sends heartbeats (:mod:`.heartbeat`). Used by the simulated clients and the notebooks; imports only
:mod:`rtlib.protocol`.
"""
