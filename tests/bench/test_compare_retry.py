"""bench.peers.compare: a case that failed is tried once more even with no reruns for noise (make demo's notebook 06
asserts that every target ran; one full-size run lost Socket.IO/Node's S1 to a 30 s warm-up, 2026-12-08)."""

from __future__ import annotations

from types import SimpleNamespace

from bench.peers import compare


def test_a_failed_case_is_tried_once_more_and_a_good_one_is_not(monkeypatch) -> None:
    calls: list[str] = []

    def once(name, scenario, opts, s3=False):
        calls.append(name)
        if name == "flaky" and calls.count(name) == 1:
            return {"target": name, "error": "RuntimeError: warm-up: only 920/1000 receivers had a delivery"}
        return {"target": name, "other_pct": 0.0}

    monkeypatch.setattr(compare, "_once", once)
    monkeypatch.setattr(compare, "background_pct", lambda r: 0.0)
    plan, scenario = compare.Plan(retries=0), SimpleNamespace(name="S1")
    said: list[str] = []
    assert "error" not in compare._case("flaky", scenario, None, plan, said.append)
    assert compare._case("steady", scenario, None, plan, said.append) == {"target": "steady", "other_pct": 0.0,
                                                                      "attempts_other_pct": [0.0]}
    assert calls == ["flaky", "flaky", "steady"] and "trying once more" in said[0]
