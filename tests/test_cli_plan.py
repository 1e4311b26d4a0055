"""``rtlib plan`` from the command line: the answer with its numbers, and one line + exit 2 for bad input."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from rtlib.cli import main
from rtlib.model.capacity import UnitCosts

UNITS = UnitCosts(server_request_us=100, server_delivery_us=10, server_update_us=50, server_heartbeat_us=100,
                  server_heartbeat_viewer_us=0, server_idle_conn_us=1, server_base_cores=0.01,
                  server_conn_bytes=16 * 1024, server_base_bytes=40 * 1024**2, redis_update_us=50,
                  redis_pubsub_msg_us=5, redis_heartbeat_us=40, redis_heartbeat_viewer_us=0, redis_sweep_us=100,
                  redis_base_cores=0.005)


@pytest.fixture
def units(tmp_path: Path) -> Path:
    path = tmp_path / "unit_costs.json"
    fields = {k: {"median": v} for k, v in asdict(UNITS).items() if k != "source"}
    path.write_text(json.dumps({"meta": {"date": "2026-12-08", "machine": "test box"}, "units": fields}))
    return path


def test_plan_prints_the_answer_and_every_resource(units: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["plan", "--users", "20000", "--workspaces", "100", "--updates-per-user", "6", "--unit-costs", str(units)])
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("rtlib plan: ") and "server CPU per instance runs out first" in first
    for name in ("server CPU per instance", "server memory per instance", "Redis CPU per shard", "70%",
                 "measured 2026-12-08 on test box"):
        assert name in out


@pytest.mark.parametrize(("args", "words"), [
    (["--users", "0", "--workspaces", "1", "--updates-per-user", "1"], ["users must be >= 1"]),
    (["--users", "10", "--workspaces", "20", "--updates-per-user", "1"], ["outnumber"]),
    (["--users", "10", "--workspaces", "2", "--updates-per-user", "1", "--headroom", "2"], ["headroom"]),
    (["--users", "10", "--workspaces", "2", "--updates-per-user", "1", "--unit-costs", "/nonexistent.json"],
     ["no unit costs", "bench.cost.unit_costs"]),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], words: list[str], units: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    if "--unit-costs" not in args:
        args = [*args, "--unit-costs", str(units)]
    with pytest.raises(SystemExit) as exc:
        main(["plan", *args])
    assert exc.value.code == 2
    message = str(exc.value.code)
    assert message.startswith("rtlib plan: ") and "\n" not in message
    for word in words:
        assert word in message
