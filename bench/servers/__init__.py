"""The servers rtlib is measured against, each started as its own process by :mod:`bench.harness.targets`: the
toy forwarder, the floors (``floor_server``), python-socketio (``psio_server``) and the Node peers (``node/``,
installed by :mod:`~bench.servers.node_peers`)."""
