"""The broker-outage benchmark runs end to end on real processes (compressed 20x: a smoke run, about 10 s) and its
report states what it measured; the real-time run's numbers are in bench/results/broker_outage.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is a package of the repository, not installed

from bench.resilience import broker_outage  # noqa: E402


def test_a_compressed_restart_keeps_every_socket_and_tells_every_client_to_resync(tmp_path: Path) -> None:
    assert broker_outage.main(["--cases", "restart-empty", "--scale", "0.05", "--out", str(tmp_path)]) == 0
    [result] = json.loads((tmp_path / "broker_outage.json").read_text())["results"]
    assert result["sockets_closed"] == 0 and result["resynced_clients"] == result["clients"] == 32
    assert result["acked_lost_pairs"] == 0 and result["duplicates"] == 0 and result["acked"] > 0
    [cost] = {c["per"] for c in result["recoveries"]}
    assert cost == "1" and all(c["sub"] == 1 for c in result["recoveries"])  # per workspace, not per connection
    report = (tmp_path / "broker_outage.md").read_text()
    assert "every duration compressed" in report and "**met**: Redis restarted without persistence" in report
