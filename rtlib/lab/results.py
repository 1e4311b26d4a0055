"""Tidy results of a simulation run: pandas DataFrames and a summary that says whether the run was clean.

All times are design seconds since the run started; ``latency_ms`` is real milliseconds (monotonic clock,
from the *scheduled* send time).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rtlib.lab.realtime import overrun_report
from rtlib.lab.scenario import Scenario

__all__ = ["DELIVERY_COLUMNS", "Results"]

DELIVERY_COLUMNS = ["task", "version", "sender", "origin", "ref", "receiver", "receiver_instance", "t_sent",
                    "t_server", "t_received", "latency_ms", "dropped"]
APPLY_COLUMNS = ["client", "task", "version", "outcome", "out_of_order", "t"]
PRESENCE_COLUMNS = ["observer", "subject", "task", "kind", "reason", "t_observed", "t_server"]
DEPARTURE_COLUMNS = ["user", "task", "how", "t_actual"]
DEPARTURE_CAUSES = ("leave", "disconnect", "crash")  # the "how" of a departure (rtlib.lab.sim)
CONNECTION_COLUMNS = ["user", "workspace", "instance", "event", "t", "detail"]
SEND_COLUMNS = ["sender", "workspace", "task", "ref", "t_sent", "instance"]
ACK_COLUMNS = ["sender", "workspace", "ref", "task", "version", "t_acked"]
RECOVERY_COLUMNS = ["user", "workspace", "kind", "t_dropped", "t_welcome", "t_caught_up"]
CROSS_COLUMNS = ["receiver", "workspace", "frame_workspace", "canary", "ref"]
FRAME_COLUMNS = ["receiver", "type", "frame_workspace", "content_workspace", "count"]


@dataclass
class Results:
    """DataFrames of one run plus its scenario; build with :meth:`from_records`."""

    scenario: Scenario
    deliveries: pd.DataFrame
    applies: pd.DataFrame
    presence: pd.DataFrame
    connections: pd.DataFrame
    sends: pd.DataFrame
    diverged: dict[str, list[str]] = field(default_factory=dict)  # client -> tasks that differ from Redis
    calibration_ms: float = float("nan")  # the simulator's own loopback overhead (median), if measured
    meta: dict[str, Any] = field(default_factory=dict)
    acks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ACK_COLUMNS))
    recoveries: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=RECOVERY_COLUMNS))
    cross: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CROSS_COLUMNS))
    caches: dict[str, dict[str, tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    #: How late each scheduled client wake ran, design seconds (rtlib.lab.realtime): did the run keep real time?
    lateness: list[float] = field(default_factory=list)
    #: Frames received per (receiver, type, envelope workspace, content canary) (rtlib.lab.recorder.Recorder.frames)
    frames: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FRAME_COLUMNS))

    @classmethod
    def from_records(cls, scenario: Scenario, rec: Any, t0_wall: float, diverged: dict[str, list[str]],
                     meta: dict[str, Any] | None = None) -> Results:
        deliveries = pd.DataFrame(rec.deliveries, columns=DELIVERY_COLUMNS)
        deliveries.insert(0, "event", "task.updated")
        deliveries["sender_instance"] = deliveries["origin"].str.rsplit("@", n=1).str[-1]
        deliveries["cross_instance"] = deliveries["sender_instance"] != deliveries["receiver_instance"].astype(str)
        deliveries["t_server"] = [
            (datetime.fromisoformat(ts).timestamp() - t0_wall) / scenario.time_scale if ts else np.nan
            for ts in deliveries["t_server"]]
        presence = pd.DataFrame(rec.presence, columns=PRESENCE_COLUMNS)
        # The server's clock when it made the change (the event's timestamp): a sweep's or a request's own time.
        presence["t_server"] = [(datetime.fromisoformat(ts).timestamp() - t0_wall) / scenario.time_scale
                                if ts else np.nan for ts in presence["t_server"]]
        departures = pd.DataFrame(rec.departures, columns=DEPARTURE_COLUMNS)
        presence = _attach_departures(presence, departures)
        return cls(scenario, deliveries, pd.DataFrame(rec.applies, columns=APPLY_COLUMNS), presence,
                   pd.DataFrame(rec.connections, columns=CONNECTION_COLUMNS),
                   pd.DataFrame(rec.sends, columns=SEND_COLUMNS), diverged, meta=meta or {},
                   acks=pd.DataFrame(getattr(rec, "acks", []), columns=ACK_COLUMNS),
                   recoveries=_recoveries(getattr(rec, "recoveries", [])),
                   cross=pd.DataFrame(getattr(rec, "cross", []), columns=CROSS_COLUMNS),
                   caches=dict(getattr(rec, "caches", {})), lateness=list(getattr(rec, "lateness", [])),
                   frames=pd.DataFrame([(*k, n) for k, n in getattr(rec, "frames", {}).items()],
                                       columns=FRAME_COLUMNS))

    # --- derived numbers ---------------------------------------------------------------------------------
    def expected_deliveries(self) -> int:
        """Accepted updates (delivered to anyone) x connections of their workspace that were up throughout.

        A connection counts for an update when it was connected before the update was sent and did not drop
        before the end of the run; churned/crashed connections are excluded from the whole run's expectation.
        """
        if self.deliveries.empty:
            return 0
        conns = self.connections
        flaky = set(conns.loc[conns["event"].isin(["closed", "lost", "crashed"]), "user"])
        joined = conns[conns["event"] == "connected"].groupby("user")["t"].min()
        steady = joined[~joined.index.isin(flaky)]
        ws_of = conns.drop_duplicates("user").set_index("user")["workspace"]
        accepted = self.sends[self.sends["ref"].isin(set(self.deliveries["ref"]))]
        total = 0
        for ws, group in accepted.groupby("workspace"):
            members = steady[ws_of.reindex(steady.index) == ws]
            starts = np.sort(members.to_numpy())
            total += int(np.searchsorted(starts, group["t_sent"].to_numpy(), side="right").sum())
        return total

    def lost(self) -> int:
        """Expected deliveries to steady connections that never arrived (dropped by impairment counts as
        arrived-and-dropped, not lost: it is the loss model, reported as ``dropped``)."""
        conns = self.connections
        flaky = set(conns.loc[conns["event"].isin(["closed", "lost", "crashed"]), "user"])
        got = self.deliveries[~self.deliveries["receiver"].isin(flaky)]
        return max(0, self.expected_deliveries() - len(got.drop_duplicates(["ref", "receiver"])))

    def lost_by_resumers(self) -> int:
        """Accepted updates that a client which lost its connection but resumed every time (``recovered``)
        never received: they must have been replayed. Counts, per such client, the accepted updates of its
        workspace sent after it first connected and missing from its deliveries."""
        conns = self.connections
        resumed = conns[conns["event"] == "recovered"]["user"].unique()
        excluded = set(conns.loc[conns["event"].isin(["resynced", "crashed"]), "user"])  # crashed: gone for good
        users = [u for u in resumed if u not in excluded]
        if not users or self.deliveries.empty:
            return 0
        joined = conns[conns["event"] == "connected"].groupby("user")["t"].min()
        ws_of = conns.drop_duplicates("user").set_index("user")["workspace"]
        accepted = self.sends[self.sends["ref"].isin(set(self.deliveries["ref"]))]
        got = self.deliveries.groupby("receiver")["ref"].agg(set)
        missing = 0
        for user in users:
            wanted = accepted[(accepted["workspace"] == ws_of[user]) & (accepted["t_sent"] > joined[user])]
            missing += len(set(wanted["ref"]) - got.get(user, set()))
        return missing

    def lost_updates(self) -> int:
        """Acknowledged updates a client that was still there at the end does not have, whatever its
        connection went through (churn, a killed instance, a Redis restart).

        For every client that did not crash and every update acked in its workspace after it first connected:
        a client that only ever resumed with ``recovered: true`` must have received the update itself (the
        history replayed it); a client that resynced at least once may instead hold it through its final cache
        (a ``task.snapshot`` at that version or later). Anything else is lost."""
        conns = self.connections
        if self.acks.empty or conns.empty:
            return 0
        crashed = set(conns.loc[conns["event"] == "crashed", "user"])
        resynced = set(conns.loc[conns["event"] == "resynced", "user"])
        joined = conns[conns["event"] == "connected"].groupby("user")["t"].min()
        users = pd.DataFrame({"user": joined.index, "t_joined": joined.to_numpy()})
        users = users[~users["user"].isin(crashed)]
        users["workspace"] = users["user"].map(conns.drop_duplicates("user").set_index("user")["workspace"])
        sent = self.sends.drop_duplicates("ref").set_index("ref")["t_sent"]
        acked = self.acks.drop_duplicates("ref").assign(t_sent=lambda a: a["ref"].map(sent))
        wanted = users.merge(acked[["workspace", "ref", "task", "version", "t_sent"]], on="workspace")
        wanted = wanted[wanted["t_sent"] > wanted["t_joined"]]
        got = self.deliveries[~self.deliveries["dropped"]][["receiver", "ref"]].drop_duplicates()
        wanted = wanted.merge(got.rename(columns={"receiver": "user"}).assign(got=True), on=["user", "ref"],
                              how="left")
        missing = wanted[wanted["got"].isna()]
        held = [u in resynced and self.caches.get(u, {}).get(t, (0, {}))[0] >= v
                for u, t, v in zip(missing["user"], missing["task"], missing["version"], strict=True)]
        return int(len(missing) - sum(held))

    def time_to_recover(self) -> pd.Series:
        """Design seconds from a dropped connection to caught up (replay done, or every task re-fetched); resumes
        interrupted by another drop before they caught up are left out (``t_caught_up`` is NaN)."""
        r = self.recoveries
        return (r["t_caught_up"] - r["t_dropped"]).dropna().rename("time_to_recover")

    def detection_delays(self) -> pd.Series:
        """Design seconds from each real departure to its first observed ``presence.left``."""
        left = self.presence[(self.presence["kind"] == "left") & self.presence["t_actual"].notna()]
        first = left.groupby(["subject", "task"]).agg(t_observed=("t_observed", "min"), t_actual=("t_actual", "first"))
        return (first["t_observed"] - first["t_actual"]).rename("detection_delay")

    def departures_by_cause(self) -> dict[str, int]:
        """Real departures seen (a first ``presence.left`` after the subject really left), by how they left:
        ``leave`` (a clean ``presence.leave``, including every viewer's at the end of the run), ``disconnect``
        (a churned tab closed its socket) and ``crash`` (vanished: only the presence timeout can tell)."""
        left = self.presence[(self.presence["kind"] == "left") & self.presence["t_actual"].notna()]
        causes = (left.groupby(["subject", "task"])["cause"].first() if "cause" in left else pd.Series(dtype=object))
        counts = causes.value_counts()
        return {cause: int(counts.get(cause, 0)) for cause in DEPARTURE_CAUSES}

    def false_departures(self) -> pd.DataFrame:
        """``presence.left`` (timeout) of users who never left: flapping, seen once per subject and time."""
        left = self.presence[(self.presence["kind"] == "left") & self.presence["t_actual"].isna()]
        return left.drop_duplicates(["subject", "task", "reason"])

    def summary(self) -> dict[str, Any]:
        d = self.deliveries[~self.deliveries["dropped"].astype(bool)]  # (an empty column is object-typed)
        lat = d["latency_ms"].dropna()
        q = (lambda p: round(float(np.percentile(lat, p)), 3)) if len(lat) else (lambda p: float("nan"))
        outcomes = self.applies["outcome"].value_counts().to_dict()
        delays = self.detection_delays()
        return {
            "clients": self.scenario.clients,
            "instances": self.meta.get("instances"),
            "ordering": self.scenario.ordering,
            "publish_mode": self.scenario.publish_mode,
            "updates_sent": len(self.sends),
            "deliveries": len(d),
            "expected": self.expected_deliveries(),
            "lost": self.lost(),
            "reconnects_recovered": int((self.connections["event"] == "recovered").sum()),
            "reconnects_resynced": int((self.connections["event"] == "resynced").sum()),
            "lost_by_resumers": self.lost_by_resumers(),
            "acked": len(self.acks),
            "lost_updates": self.lost_updates(),
            "cross_workspace": len(self.cross),
            "resumes_interrupted": int(self.recoveries["t_caught_up"].isna().sum()),
            "time_to_recover_s": {kind: {"n": len(g), "p50": round(float(g.median()), 3),
                                         "p99": round(float(g.quantile(0.99)), 3)}
                                  for kind, g in self.time_to_recover().groupby(self.recoveries["kind"])},
            "dropped": int(self.deliveries["dropped"].sum()),
            "out_of_order": int(self.applies["out_of_order"].sum()),
            "stale_dropped": int(outcomes.get("stale_dropped", 0)),
            "gap_buffered": int(outcomes.get("gap_buffered", 0)),
            "resynced": int(outcomes.get("resynced", 0)),
            "diverged_clients": len(self.diverged),
            "converged": not self.diverged,
            "latency_ms": {"p50": q(50), "p90": q(90), "p99": q(99), "max": round(float(lat.max()), 3)
                           if len(lat) else float("nan"), "mean": round(float(lat.mean()), 3) if len(lat) else
                           float("nan")},
            "calibration_ms": self.calibration_ms,
            "departures": len(delays),
            "departures_by_cause": self.departures_by_cause(),
            "detection_delay_s": {"p50": float(delays.median()) if len(delays) else float("nan"),
                                  "max": float(delays.max()) if len(delays) else float("nan")},
            "false_departures": len(self.false_departures()),
            "realtime": self.realtime(),
        }

    def realtime(self) -> dict[str, Any]:
        """Whether the simulated clients kept real time (:func:`rtlib.lab.realtime.overrun_report`): a compressed
        run whose clients woke late measured the machine, not the design."""
        return overrun_report(self.lateness, self.scenario.sweep_interval, self.scenario.time_scale)

    def write(self, out: Path) -> Path:
        """Write deliveries/presence/applies/connections CSVs and summary.json into ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        self.deliveries.to_csv(out / "deliveries.csv", index=False)
        self.presence.to_csv(out / "presence.csv", index=False)
        self.applies.to_csv(out / "applies.csv", index=False)
        self.connections.to_csv(out / "connections.csv", index=False)
        (out / "summary.json").write_text(json.dumps(self.summary(), indent=2, default=str) + "\n")
        return out


def _recoveries(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=RECOVERY_COLUMNS).astype(
        {"t_dropped": float, "t_welcome": float, "t_caught_up": float})


def _attach_departures(presence: pd.DataFrame, departures: pd.DataFrame) -> pd.DataFrame:
    """Give each observed ``left`` the ground-truth time (``t_actual``) and way (``cause``: leave, disconnect or
    crash) of the subject's real departure, if there was one."""
    first = departures.dropna(subset=["task"]).sort_values("t_actual").groupby(["user", "task"]).first()
    truth, how = first["t_actual"], first["how"]
    keys = list(zip(presence["subject"], presence["task"], strict=True))
    t_actual, cause = [], []
    for key, kind, seen in zip(keys, presence["kind"], presence["t_observed"], strict=True):
        t = truth.get(key, np.nan)
        # A left observed before the subject really left is a false departure, not a detection.
        real = kind == "left" and not np.isnan(t) and seen >= t
        t_actual.append(t if real else np.nan)
        cause.append(how.get(key) if real else None)
    presence["t_actual"] = t_actual
    presence["cause"] = cause
    return presence
