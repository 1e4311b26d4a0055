"""The hostile-client harness (issue 7): seeded hostile frames, floods, storms and abusive handshakes against a
real ``rtlib serve``, each outcome judged against the contract's table (``python -m bench.hostile.run``)."""
