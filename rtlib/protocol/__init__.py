"""The rules, sans-I/O: the wire schema, error table, event builders, one connection's session, presence, rate
limits and settings. Plain data in, plain data out; nothing here reads a clock, sleeps, or touches a socket or
Redis, and nothing here imports the rest of rtlib. The live server (:mod:`rtlib.server`) and the lab's models
are drivers of these rules.
"""
