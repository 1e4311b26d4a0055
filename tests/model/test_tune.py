"""sweep, recommend and ``rtlib tune``: small, seeded."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rtlib.cli import main
from rtlib.model import ModelScenario, grid, pareto, recommend, simulate, sweep
from rtlib.model.tune import worst_case

SMALL = ModelScenario(viewers=200, hours=1.0, departures=0.5, seed=1)


def test_sweep_rows_and_recommendation() -> None:
    configs = grid([10, 30], [20, 60, 90], [5])
    assert len(configs) == 5  # a timeout below the interval is left out
    df = sweep(configs, SMALL.replace(client="lossy:0.2:interval:{hb}"), progress=False)
    assert list(df["client"].unique()) == ["lossy:0.2:interval:10", "lossy:0.2:interval:30"]
    row = df.set_index(["heartbeat_interval", "timeout"]).loc[(30, 60)]
    assert row["td_p99"] <= 65 + 0.1 and row["mistakes"] > 0
    # the sweep's shared timelines give what a single run gives
    alone = simulate(configs[-1], SMALL.replace(client="lossy:0.2:interval:{hb}"))
    assert alone["mistakes"] == df.iloc[-1]["mistakes"] and alone["td_p99"] == df.iloc[-1]["td_p99"]
    rec = recommend(df, max_detection_p99=100, max_mistakes_per_hour=0.5)
    assert len(rec) and (rec["mistakes_per_hour"] <= 0.5).all() and (rec["td_p99"] <= 100).all()
    assert rec.iloc[0]["redis_cmds_per_s"] == rec["redis_cmds_per_s"].min()
    front = pareto(df)
    for _, r in df.iterrows():  # every row is on the front or dominated by a row of it
        cols = ["redis_cmds_per_s", "td_p99", "mistakes_per_hour"]
        assert ((front[cols] <= r[cols]).all(axis=1)).any()
    assert recommend(df, max_detection_p99=1, max_mistakes_per_hour=0).empty


def test_worst_case_over_models() -> None:
    import pandas as pd

    configs = grid([30], [60], [5])
    df = pd.concat([sweep(configs, SMALL.replace(client=m), progress=False)
                    for m in ("interval:{hb}", "background:{hb}:300")])
    w = worst_case(df).iloc[0]
    assert w["mistakes_per_hour"] == df["mistakes_per_hour"].max() and w["worst_model"] == "background:{hb}:300"


def test_rtlib_tune_prints_a_recommendation(capsys: pytest.CaptureFixture[str]) -> None:
    main(["tune", "--max-detection", "60", "--max-mistakes", "0.05", "--viewers", "200", "--hours", "1",
          "--heartbeats", "10,30", "--timeouts", "45,50,60,90"])
    out = capsys.readouterr().out
    assert "recommended: heartbeat 10 s, timeout 4" in out or "recommended: heartbeat 10 s, timeout 50" in out
    assert "for reference, 30 s / 60 s / sweep 5 s" in out
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--max-detection", "1", "--viewers", "50", "--hours", "0.2", "--heartbeats", "30",
              "--timeouts", "60"])
    assert exc.value.code == 2 and "no configuration in the grid meets it" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--client-model", "nonsense:{hb}"])
    assert "rtlib tune: bad heartbeat model" in str(exc.value.code)


def test_rtlib_tune_names_the_missing_extra() -> None:
    script = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numpy", "pandas"):
            raise ImportError(f"blocked: {name}", name=name)
sys.meta_path.insert(0, Block())
from rtlib.cli import main
try:
    main(["tune"])
except SystemExit as exc:
    print(exc.code)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "rtlib tune needs the lab extra" in out.stdout and "pip install 'rtlib[lab]'" in out.stdout
