"""The lab end to end: real redis-server, real `rtlib serve` processes, simulated clients on a loop thread."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from rtlib.lab.cluster import Cluster
from rtlib.lab.scenario import Impairment, Scenario
from rtlib.lab.sim import plan_clients


@pytest.fixture(scope="module")
def lab():
    with Cluster(instances=2) as cluster:
        yield cluster


def test_seeded_200_clients_two_instances_lose_nothing_and_converge(lab: Cluster) -> None:
    sc = Scenario(clients=200, workspaces=4, tasks=8, duration=20, update_rate=10, viewers=0.3,
                  time_scale=0.1, seed=7, drain=1.0)
    summary = lab.run(sc, progress=False).summary()
    assert summary["updates_sent"] > 100 and summary["expected"] > 4000
    assert summary["lost"] == 0 and summary["converged"] is True
    assert summary["out_of_order"] == 0  # atomic publish: each instance sees one task's versions in order


def test_reordering_breaks_version_gate_and_gap_resync_converges(lab: Cluster) -> None:
    sc = Scenario(clients=30, workspaces=1, tasks=3, hot_tasks=2, duration=20, update_rate=20, viewers=0,
                  impairment=Impairment(delay=0.001, jitter=0.03), time_scale=0.1, seed=3, drain=1.0)
    gate = lab.run(sc.replace(ordering="version_gate"), progress=False).summary()
    resync = lab.run(sc.replace(ordering="gap_resync"), progress=False).summary()
    assert gate["out_of_order"] > 0 and resync["out_of_order"] > 0  # the impairment really reorders
    assert gate["converged"] is False and gate["diverged_clients"] > 0  # stale partial updates lose fields
    assert resync["converged"] is True and resync["gap_buffered"] > 0


def test_split_publish_mode_reorders_across_instances(lab: Cluster) -> None:
    sc = Scenario(clients=20, workspaces=1, tasks=1, hot_tasks=1, duration=20, update_rate=20, editors=0.5,
                  viewers=0, publish_mode="split", time_scale=0.05, seed=5, drain=1.0)
    split = lab.run(sc, progress=False)
    assert split.summary()["out_of_order"] > 0  # bump and publish as two steps race across instances
    assert split.summary()["converged"] is True  # ...and gap_resync still converges


def test_crash_is_detected_within_timeout_plus_sweep(lab: Cluster) -> None:
    sc = Scenario(clients=20, workspaces=1, tasks=4, duration=120, update_rate=2, viewers=1.0, crash=0.4,
                  heartbeat="interval:30", presence_timeout=60, sweep_interval=5, time_scale=0.02, seed=11,
                  drain=0.5)
    results = lab.run(sc, progress=False)
    crashes = results.presence.merge(
        results.connections[results.connections["event"] == "crashed"][["user"]].rename(columns={"user": "subject"}))
    crashes = crashes[(crashes["kind"] == "left") & (crashes["reason"] == "timeout")]
    assert crashes["subject"].nunique() > 0
    delays = (crashes["t_observed"] - crashes["t_actual"]).groupby(crashes["subject"]).min()
    slack = 2.0  # design seconds of scheduling noise (40 ms of wall time at time_scale 0.02)
    # The crash happens between two heartbeats, so detection is at most timeout + sweep after the crash.
    assert (delays <= 60 + 5 + slack).all(), delays.to_dict()
    assert (delays >= 60 - 30 - slack).all(), delays.to_dict()  # never before the last beat's timeout
    assert results.summary()["false_departures"] == 0


def test_killed_instance_clients_reconnect_and_converge(lab: Cluster) -> None:
    sc = Scenario(clients=40, workspaces=2, tasks=4, duration=40, update_rate=10, viewers=0.5,
                  time_scale=0.05, seed=13, drain=1.5)
    try:
        results = lab.run(sc, failures=[("kill", 1, 15.0)], progress=False)
        conns = results.connections
        lost = set(conns.loc[conns["event"] == "lost", "user"])
        assert lost, "clients of the killed instance noticed"
        again = conns[(conns["event"] == "connected") & conns["user"].isin(lost) & (conns["t"] > 15.0)]
        assert set(again["user"]) == lost and set(again["instance"]) == {0}
        assert results.summary()["converged"] is True  # reconnect + task.get resync catches up
    finally:
        lab.restart()  # bring the killed instance back for later tests


def test_plans_are_deterministic_per_seed() -> None:
    sc = Scenario(clients=50, viewers=0.5, crash=0.3, churn=0.2, seed=42)
    assert plan_clients(sc, 2) == plan_clients(sc, 2)
    assert plan_clients(sc, 2) != plan_clients(sc.replace(seed=43), 2)


@pytest.mark.parametrize("bad", [dict(clients=0), dict(viewers=1.5), dict(ordering="magic"), dict(time_scale=0),
                                 dict(publish_mode="eventual"), dict(hot_tasks=20, tasks=10)])
def test_scenario_rejects_bad_input(bad: dict) -> None:
    with pytest.raises(ValueError):
        Scenario(**bad)


def test_cluster_survives_across_notebook_cells(tmp_path) -> None:
    """Start the cluster in one cell, block the kernel, run a scenario in a later cell."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from rtlib.lab.cluster import Cluster\nfrom rtlib.lab.scenario import Scenario\n"
                                  "cluster = Cluster(instances=2).start()"),
        nbformat.v4.new_code_cell("import time\ntime.sleep(1.0)  # a blocking cell must not freeze the lab"),
        nbformat.v4.new_code_cell("r = cluster.run(Scenario(clients=20, duration=10, update_rate=10, viewers=0.5,"
                                  " time_scale=0.05, seed=1), progress=False)\n"
                                  "s = r.summary()\nassert s['lost'] == 0 and s['converged'], s\n"
                                  "print('ok', s['clients'])"),
        nbformat.v4.new_code_cell("cluster.close()"),
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    assert "ok 20" in nb.cells[2].outputs[0]["text"]


def test_worker_processes_give_the_same_clean_run(lab: Cluster) -> None:
    sc = Scenario(clients=60, workspaces=3, tasks=4, duration=20, update_rate=10, viewers=0.5, crash=0.2,
                  time_scale=0.05, seed=21, drain=1.0)
    lab.workers = 2
    try:
        results = lab.run(sc, progress=False)
    finally:
        lab.workers = None
    summary = results.summary()
    assert results.meta["workers"] == 2
    assert summary["lost"] == 0 and summary["converged"] is True
    assert results.deliveries["receiver"].nunique() == sc.clients  # every client, from both shards, reported


def test_clients_that_resume_lose_nothing_through_churn_and_an_instance_kill() -> None:
    """Churning clients and the clients of a killed instance reconnect with their last offset: the history
    replays what they missed, so every one of them that recovered has every accepted update."""
    sc = Scenario(clients=40, workspaces=2, tasks=4, duration=30, update_rate=10, viewers=0.3, churn=0.3,
                  time_scale=0.1, seed=21, drain=1.0)
    with Cluster(instances=2) as cluster:
        summary = cluster.run(sc, failures=[("kill", 1, 12.0)], progress=False).summary()
    assert summary["reconnects_recovered"] > 10  # churn, and every client of instance 1
    assert summary["lost_by_resumers"] == 0 and summary["lost"] == 0
    assert summary["converged"] is True
