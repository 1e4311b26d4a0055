"""What ``rtlib simulate`` (and the lab under it) reports: connection times on the run's clock, departures by
cause, a warning when the clients' heartbeat is not the servers', and no temporary folder left behind."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rtlib.cli import main
from rtlib.lab.cluster import Cluster
from rtlib.lab.recorder import Recorder
from rtlib.lab.scenario import Scenario
from rtlib.lab.workers import start_clock


def test_rows_recorded_while_connecting_move_onto_the_run_clock() -> None:
    rec = Recorder()
    provisional, t0, scale = 1000.0 + 3600, 1000.0, 0.1
    clients = [SimpleNamespace(rec=rec, t0=provisional, plan=SimpleNamespace(user=u), sc=SimpleNamespace(
        time_scale=scale)) for u in ("u0", "u1")]
    # u0 connected 0.3 s (wall) before t0: on the provisional clock that read (t0 - 0.3 - provisional) / scale.
    rec.connections += [("u0", "w0", 0, "connected", (t0 - 0.3 - provisional) / scale, 1),
                        ("u1", "w0", 1, "connected", (t0 - 0.1 - provisional) / scale, 1)]
    start_clock(clients, t0)  # type: ignore[arg-type]
    assert [round(row[4], 6) for row in rec.connections] == [-3.0, -1.0]
    assert all(c.t0 == t0 for c in clients)


def test_a_run_reports_true_times_departures_by_cause_and_cleans_up() -> None:
    sc = Scenario(clients=24, workspaces=2, tasks=4, duration=30, update_rate=4, viewers=1.0, crash=0.3,
                  heartbeat="interval:10", heartbeat_interval=10, presence_timeout=20, sweep_interval=2,
                  # 0.1, not 0.05: a 10 s beat gap against a 20 s timeout leaves 10 design s of slack, 1 s of wall
                  # time here (0.5 s at 0.05 was overrun under make test's load: a false departure, a red run).
                  time_scale=0.1, seed=5, drain=0.5)
    cluster = Cluster(instances=2)
    logdir = cluster.logdir
    try:
        results = cluster.run(sc, progress=False)
    finally:
        cluster.close()
    assert not logdir.exists(), "the instances' temporary logs are removed by close()"
    conns = results.connections
    connected = conns[conns["event"] == "connected"]["t"]
    assert connected.min() > -10 and connected.max() < sc.duration, connected.describe()  # not -36000
    summary = results.summary()
    causes = summary["departures_by_cause"]
    assert set(causes) == {"leave", "disconnect", "crash"}
    assert sum(causes.values()) == summary["departures"]
    crashed = (conns["event"] == "crashed").sum()
    assert crashed > 0 and causes["crash"] == crashed  # every crash detected, by timeout
    assert causes["leave"] > 0  # the viewers still there leave cleanly at the end of the run
    assert summary["false_departures"] == 0


def test_keep_logs_keeps_the_folder(tmp_path) -> None:
    cluster = Cluster(instances=1, keep_logs=True)
    try:
        cluster.start()
    finally:
        cluster.close()
    try:
        assert (cluster.logdir / "instance-0.log").exists()
    finally:
        import shutil

        shutil.rmtree(cluster.logdir)


def test_a_heartbeat_model_other_than_the_servers_is_warned_about(capsys: pytest.CaptureFixture[str]) -> None:
    # --redis without a scheme stops the command right after the scenario checks: no run needed.
    with pytest.raises(SystemExit):
        main(["simulate", "--heartbeat-interval", "10", "--presence-timeout", "20", "--heartbeat", "interval:30",
              "--redis", "nowhere:1"])
    warning, refusal = capsys.readouterr().err.strip().splitlines()
    assert warning == ("rtlib simulate: warning: the clients beat every 30 s (--heartbeat interval:30) but the "
                       "servers ask for every 10 s (--heartbeat-interval); viewers may be timed out falsely. Leave "
                       "--heartbeat out to match")
    assert "not a Redis URL" in refusal
    for matching in (["--heartbeat-interval", "10"], ["--heartbeat", "lossy:0.1:interval:30"],
                     ["--heartbeat-interval", "10", "--heartbeat", "interval:30", "--presence-mode", "probe"]):
        with pytest.raises(SystemExit):
            main(["simulate", *matching, "--redis", "nowhere:1"])
        assert "warning" not in capsys.readouterr().err, matching
