"""rtlib.lab.plots on small synthetic results: every chart is a Figure with the expected titles, labels and lines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from rtlib.lab import incident_plots, plots
from rtlib.lab.results import APPLY_COLUMNS, SEND_COLUMNS, Results
from rtlib.lab.scenario import Scenario


def fake_results(seed: int = 0, n: int = 400, calibration_ms: float = 0.05) -> Results:
    """A Results-shaped run on two instances: deliveries, presence (one crash, one flap), connections."""
    rng = np.random.default_rng(seed)
    sc = Scenario(clients=4, workspaces=1, duration=120, time_scale=0.05, seed=seed)
    t_sent = np.sort(rng.uniform(0, 120, n))
    receiver_instance = rng.integers(0, 2, n)
    sender_instance = rng.integers(0, 2, n)
    deliveries = pd.DataFrame({
        "event": "task.updated", "task": "t0", "version": np.arange(1, n + 1), "sender": "u0",
        "origin": [f"u0@{i}" for i in sender_instance], "ref": [f"u0.{k}" for k in range(n)],
        "receiver": [f"u{k % 4}" for k in range(n)], "receiver_instance": receiver_instance, "t_sent": t_sent,
        "t_server": t_sent + 0.01, "t_received": t_sent + 0.02, "latency_ms": rng.lognormal(1.2, 0.5, n),
        "dropped": np.arange(n) % 50 == 0, "sender_instance": sender_instance.astype(str),
        "cross_instance": sender_instance != receiver_instance})
    presence = pd.DataFrame([
        ("u1", "u2", "t0", "joined", None, 5.0, np.nan), ("u1", "u2", "t0", "left", "timeout", 95.0, 50.0),
        ("u1", "u3", "t0", "joined", None, 6.0, np.nan), ("u1", "u3", "t0", "left", "timeout", 70.0, np.nan),
        ("u1", "u3", "t0", "joined", None, 71.0, np.nan), ("u1", "u3", "t0", "left", "leave", 120.5, 120.0),
    ], columns=["observer", "subject", "task", "kind", "reason", "t_observed", "t_actual"])
    connections = pd.DataFrame([
        (f"u{k}", "w0", k % 2, "connected", -100.0, 1) for k in range(4)] + [
        ("u1", "w0", 1, "lost", 40.2, 1), ("u1", "w0", 0, "connected", 41.0, 2), ("u3", "w0", 1, "lost", 40.3, 1),
        ("u3", "w0", 0, "connected", 42.0, 2)], columns=["user", "workspace", "instance", "event", "t", "detail"])
    applies, sends = pd.DataFrame(columns=APPLY_COLUMNS), pd.DataFrame(columns=SEND_COLUMNS)
    return Results(sc, deliveries, applies, presence, connections, sends, calibration_ms=calibration_ms,
                   meta={"instances": 2})


def labels(fig: Figure, axis: int = 0) -> list[str]:
    ax = fig.axes[axis]
    return [h.get_label() for h in ax.get_legend_handles_labels()[0]]


def test_latency_cdf_marks_review_reference_and_simulator_band() -> None:
    fig = plots.latency_cdf(fake_results())
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "Delivery latency CDF" and ax.get_xscale() == "log"
    assert ax.get_xlabel() == "delivery latency (ms, real; log scale)" and "share" in ax.get_ylabel()
    found = labels(fig)
    assert "review: 45 ms average" in found and "simulator overhead 0.05 ms" in found
    assert any(lbl.startswith("all deliveries (n=392)") for lbl in found)  # 8 impairment-dropped rows left out
    assert {t.get_text().split()[0] for t in ax.texts} == {"p50", "p90", "p99"}
    assert ax.get_xlim()[0] <= 0.05 / 2  # the band is on screen


def test_latency_cdf_overlays_labelled_runs_without_percentile_marks() -> None:
    fig = plots.latency_cdf({"50 clients": fake_results(1), "100 clients": fake_results(2)}, reference_ms=None)
    found = labels(fig)
    assert [lbl.split(" (")[0] for lbl in found[:2]] == ["50 clients", "100 clients"]
    assert not any("review" in lbl for lbl in found) and not fig.axes[0].texts


def test_latency_histogram() -> None:
    fig = plots.latency_histogram(fake_results(), calibration_ms=0.1)
    ax = fig.axes[0]
    assert ax.get_title() == "Delivery latency histogram" and ax.get_ylabel() == "deliveries"
    found = labels(fig)
    assert any(lbl.startswith("mean ") for lbl in found) and "simulator overhead 0.1 ms" in found
    assert sum(p.get_height() for p in ax.patches if p.get_label() != "simulator overhead 0.1 ms") >= 392


def test_latency_vs_clients_from_runs_and_from_a_frame() -> None:
    fig = plots.latency_vs_clients([(100, fake_results(1)), (50, fake_results(2))])
    ax = fig.axes[0]
    assert ax.get_title() == "Delivery latency vs number of clients" and ax.get_xlabel() == "simulated clients"
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["p50"].get_xdata()) == [50, 100]  # sorted by client count
    assert {"p90", "p99", "review: 45 ms average"} <= set(lines)
    frame = pd.DataFrame({"clients": [10, 20], "p50": [1.0, 2.0], "p90": [2.0, 3.0], "p99": [3.0, 9.0]})
    assert "simulator overhead" not in " ".join(labels(plots.latency_vs_clients(frame)))


def test_latency_by_instance_splits_same_and_cross() -> None:
    fig = plots.latency_by_instance(fake_results())
    assert fig.get_suptitle() == "Delivery latency: same instance vs cross-instance"
    found = labels(fig)
    assert any(lbl.startswith("same instance: p50") for lbl in found)
    assert any(lbl.startswith("cross-instance: p50") for lbl in found)
    ticks = [t.get_text() for t in fig.axes[1].get_xticklabels()]
    assert ticks == ["i0\nsame", "i0\ncross", "i1\nsame", "i1\ncross"]


def test_latency_over_time_marks_events() -> None:
    fig = plots.latency_over_time(fake_results(), bin_s=10, events={"instance 1 killed": 40})
    top, bottom = fig.axes
    assert top.get_title() == "Delivery latency over time"
    assert bottom.get_xlabel() == "time the update was sent (design s; bins of 10 s)"
    assert "instance 1 killed" in labels(fig) and len(bottom.patches) == 12


def ordering_summaries() -> pd.DataFrame:
    rows = []
    for jitter in (0, 20):
        for strategy in ("naive", "version_gate", "gap_resync"):
            bad = jitter > 0 and strategy != "gap_resync"
            rows.append({"jitter_ms": jitter, "ordering": strategy, "out_of_order": 100 * (jitter > 0),
                         "stale_dropped": 50 * bad, "gap_buffered": 30 * (strategy == "gap_resync"),
                         "resynced": 7, "diverged_clients": 5 * bad, "converged": not bad})
    return pd.DataFrame(rows)


def test_ordering_comparison_panels_and_convergence_marks() -> None:
    fig = plots.ordering_comparison(ordering_summaries(), "jitter_ms")
    assert fig.get_suptitle() == "Ordering strategies vs jitter ms"
    assert [ax.get_title() for ax in fig.axes] == ["out of order", "stale dropped", "gap buffered", "resynced",
                                                   "diverged clients"]
    assert all(ax.get_xlabel() == "jitter ms" for ax in fig.axes)
    marks = [t.get_text() for t in fig.axes[-1].texts]
    assert marks.count("✗") == 2 and marks.count("✓") == 4
    assert labels(fig) == ["naive", "version_gate", "gap_resync"]


def test_detection_delays_marks_heartbeat_timeout_and_sweep() -> None:
    fig = plots.detection_delays(fake_results())  # timing from the scenario: 30 / 60 / 5
    ax = fig.axes[0]
    assert ax.get_title() == "Departure detection delay" and ax.get_xlabel() == "detection delay (design s)"
    found = labels(fig)
    assert {"timeout − heartbeat = 30 s", "timeout 60 s", "timeout + sweep = 65 s"} <= set(found)
    frame = pd.DataFrame({"detection_delay": [1.0, 40.0, 55.0], "how": ["leave", "crash", "crash"]})
    found = labels(plots.detection_delays(frame, by="how", heartbeat_interval=30, timeout=90, sweep_interval=15))
    assert "crash (n=2)" in found and "leave (n=1)" in found and "timeout + sweep = 105 s" in found


def test_false_departures_by_model_groups_and_labels_bars() -> None:
    df = pd.DataFrame({"model": ["interval:30", "background:30:300"] * 2, "per_hour": [0.0, 1.5, 0.0, 3.0],
                       "timeout": [60, 60, 45, 45]})
    fig = plots.false_departures_by_model(df, value="per_hour", hue="timeout", ylabel="per user-hour",
                                          note="heartbeat 30 s")
    ax = fig.axes[0]
    assert ax.get_title() == "False departures (flapping) per heartbeat model"
    assert ax.get_ylabel() == "per user-hour" and labels(fig) == ["timeout: 60", "timeout: 45"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["interval:30", "background:30:300"]
    assert sorted(p.get_height() for p in ax.patches) == [0.0, 0.0, 1.5, 3.0]
    assert "heartbeat 30 s" in [t.get_text() for t in ax.texts]


def test_presence_timeline_puts_flapping_users_first() -> None:
    fig = plots.presence_timeline(fake_results())
    ax = fig.axes[0]
    assert ax.get_title() == "Presence timeline (as seen by one observer)"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["u3", "u2"]
    assert "heartbeat interval, 30 s" in ax.get_xlabel()
    found = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"real departure", "timeout (60 s) after it", "left: timeout", "left: leave"} <= set(found)


def test_connection_timeline_counts_each_user_once() -> None:
    fig = incident_plots.connection_timeline(fake_results(), events={"kill i1": 40})
    ax = fig.axes[0]
    assert ax.get_title() == "Connected clients per instance" and ax.get_ylabel() == "connected clients"
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["instance i1"].get_ydata())[0] == 2 and list(lines["instance i1"].get_ydata())[-1] == 0
    assert list(lines["instance i0"].get_ydata())[-1] == 4 and "kill i1" in lines


def test_presence_entries_over_time() -> None:
    df = pd.DataFrame({"t": [0, 40, 100, 105] * 2, "instance": ["i0"] * 4 + ["i1"] * 4,
                       "entries": [5, 5, 5, 5, 4, 4, 4, 0]})
    fig = incident_plots.presence_entries_over_time(df, kill_at=40, heartbeat_interval=30, timeout=60, sweep_interval=5)
    found = labels(fig)
    assert fig.axes[0].get_title() == "Presence entries in Redis per instance"
    assert {"entries of instance i0", "entries of instance i1", "kill + timeout (60 s)"} <= set(found)


@pytest.mark.parametrize("name", plots.__all__)
def test_every_export_is_documented(name: str) -> None:
    obj = getattr(plots, name)
    assert not callable(obj) or obj.__doc__


def test_recovery_chart_stacks_outcomes_and_leaves_interrupted_resumes_out_of_the_cdf() -> None:
    from rtlib.lab import incident_plots
    from rtlib.lab.results import RECOVERY_COLUMNS

    r = fake_results()
    r.recoveries = pd.DataFrame([("u1", "w0", "recovered", 40.2, 41.0, 41.5),
                                 ("u3", "w0", "resynced", 40.3, 42.0, 43.0),
                                 ("u2", "w0", "recovered", 60.0, 61.0, np.nan)], columns=RECOVERY_COLUMNS)
    fig = incident_plots.recovery_chart(r, events={"Redis restarted": 40.0})
    assert {"Redis restarted", "recovered (2)", "resynced (1)"} <= set(labels(fig))
    cdf = labels(fig, 1)  # time to recover, wall ms: (41.5 - 40.2) design s x 0.05 = 65 ms
    assert cdf == ["recovered: p50 65 ms, p99 65 ms", "resynced: p50 135 ms, p99 135 ms"]
    assert fig.axes[1].get_xscale() == "log"


def test_soak_timeline_draws_rss_reconnects_rate_and_incidents() -> None:
    from rtlib.lab import incident_plots

    data = {"durationS": 120.0, "warmupS": 30.0, "incidents": [{"what": "Redis restarted", "t": 60.0}],
            "rss": [{"t": float(t), "process": "i0", "rss_mib": 50.0} for t in range(0, 120, 10)],
            "recoveries": [["recovered", 61.0], ["resynced", 62.0]], "deliveryRate": [[0.0, 10.0], [60.0, 12.0]]}
    fig = incident_plots.soak_timeline(data)
    assert len(fig.axes) == 3 and "Redis restarted (60 s)" in labels(fig, 0) and "i0" in labels(fig, 0)
    assert labels(fig, 1) == ["recovered (1)", "resynced (1)"]
