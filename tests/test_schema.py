"""Timestamps on the wire: ISO 8601 UTC with microseconds, identical to datetime's formatting."""

import random
from datetime import UTC, datetime

from rtlib.schema import iso_timestamp


def test_iso_timestamp_matches_datetime_including_rollovers() -> None:
    rng = random.Random(1)
    samples = [rng.uniform(0, 4e9) for _ in range(20_000)] + [1795639769.9999996, 1795639769.0, 0.0, 59.9999999]
    for t in samples:
        want = datetime.fromtimestamp(round(t * 1e6) / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert iso_timestamp(t) == want


def test_iso_timestamp_shape() -> None:
    assert iso_timestamp(1795639769.123456) == "2026-11-25T20:49:29.123456Z"
