"""rtlib's benchmarks and harnesses (not part of the installed package). Run each from the repository root as
``python -m bench.<package>.<module>``; ``bench/README.md`` says what each measures and where its result is.

* :mod:`bench.harness`: the load driver every server benchmark shares (targets, worker processes, one case).
* :mod:`bench.servers`: the servers rtlib is measured against (toy and floor forwarders, the Socket.IO peers).
* :mod:`bench.cost`: what the rtlib server costs: CPU per delivery, latency, memory, Redis work.
* :mod:`bench.peers`: notebook 06, rtlib against Socket.IO and plain forwarders, and the client bundle.
* :mod:`bench.hostile`: seeded hostile clients against the protocol's contract.
* :mod:`bench.presence`: the presence model's speed and validity, and a real hidden Chromium tab.
* :mod:`bench.resilience`: the soak: a long run through churn, an instance kill and a Redis restart.

Imports go one way: ``servers`` imports nothing of ``bench``, ``harness`` only ``servers``; the benchmarks import
``harness`` (``peers`` also ``cost``), and nothing imports in a circle (``tests/test_layers.py`` checks it).
"""
