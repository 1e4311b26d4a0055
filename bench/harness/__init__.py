"""The load driver every server benchmark shares: the targets (how to start a server and address it), worker
processes on raw sockets (:mod:`~bench.harness.wsclient`, :mod:`~bench.harness.loadgen`), CPU from /proc
(:mod:`~bench.harness.procstat`), and one case, a target under a scenario (:mod:`~bench.harness.case`)."""
