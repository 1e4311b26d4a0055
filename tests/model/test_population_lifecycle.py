"""rtlib tune's populations take frozen, back/forward-cached and discarded parts, print what each is and where its
numbers come from, and count such a page's absence as not viewing (no mistakes)."""

from __future__ import annotations

import pytest

from rtlib.cli import main
from rtlib.model import ModelScenario, PresenceConfig, simulate
from rtlib.model.population import AWAY_DEFAULTS, expand, parse_population

MIX = "60%:interval:{hb},31.5%:chrome:{hb}:60,3.5%:frozen:{hb},4%:bfcache:{hb},1%:discard:{hb}:1800"


def test_the_lifecycle_parts_parse_and_print_their_rule_and_sources() -> None:
    pop = parse_population(MIX)
    assert [p.client for p in pop.parts[2:]] == ["ios:{hb}:2150:300:0.001", "ios:{hb}:600:60:0.001",
                                                 "ios:{hb}:1800:3600:0.001"]
    text = "\n".join(pop.describe(1000))
    for kind in ("frozen", "back/forward cache", "discarded"):
        assert kind in text
    for fact in ("answers protocol pings", "closes its socket on pagehide", "1001 close frame", "(assumed)",
                 "set by the user", "not viewing"):
        assert fact in text, fact
    assert expand("lossy:0.1:bfcache:{hb}:300") == "lossy:0.1:ios:{hb}:300:60:0.001"
    with pytest.raises(ValueError, match="bad discard model"):
        expand("discard:{hb}:1:2:3")
    assert set(AWAY_DEFAULTS) == {"frozen", "bfcache", "discard"}


@pytest.mark.parametrize("kind", ["bfcache", "discard"])
def test_a_cached_or_discarded_page_is_not_viewing_so_its_departure_is_no_mistake(kind: str) -> None:
    sc = ModelScenario(viewers=200, hours=4.0, client=expand(f"{kind}:{{hb}}:600:120"), departures=0.3, seed=5)
    row = simulate(PresenceConfig(10, 50, 5), sc)
    assert row["mistakes"] == 0 and row["absences_detected"] > 500


def test_rtlib_tune_takes_a_population_with_the_lifecycle_parts(capsys: pytest.CaptureFixture[str]) -> None:
    main(["tune", "--viewers", "100", "--hours", "0.5", "--heartbeats", "30", "--timeouts", "60",
          "--graces", "0", "--presence-modes", "timer,probe", "--visibility-beat", "off", "--population", MIX,
          "--max-mistakes", "5", "--max-detection", "120"])
    out = capsys.readouterr().out
    for text in ("back/forward cache", "discarded", "4.0%", "1.0%", "not viewing"):
        assert text in out, text
