"""Longest first: the order ``make test`` hands test files to its pytest-xdist workers.

``make test`` runs ``pytest -n 3 --dist loadfile --no-loadscope-reorder``: each file goes whole to one worker (its
module fixtures and the real Redis it starts stay together), in collection order. The files below wait on real
time for tens of seconds to minutes (a throttling Chromium, live runs in compressed time) while using little CPU,
so they start first and the hundreds of short files fill the other workers around them; collected last, the
2.5-minute hidden-tab recording alone would add its whole length to the run. Longest processing time first is
the textbook greedy schedule for this (Graham, 1969). The list is measured, not guessed: the seconds are
``pytest --durations=60`` totals per file on 2026-12-07 (2 cores, other work running); files not listed keep
pytest's order after them. A stale entry only costs time, never a test: an unknown path is ignored.
"""

from __future__ import annotations

import pytest

__all__ = ["LONGEST_FIRST"]

#: Test files by measured seconds, longest first.
LONGEST_FIRST = [
    "tests/web/test_hidden_tab_browser.py",  # ~150 s: whole minutes of Chromium's intensive throttling
    "tests/lab/test_cluster.py",  # 50 s
    "tests/lab/test_same_events.py",  # 36 s
    "tests/model/test_live_validation.py",  # 35 s
    "tests/server/test_lost_master.py",  # 32 s: three clusters, a master killed or paused in each
    "tests/web/test_page_lifecycle_browser.py",  # 30 s: pages frozen, cached and discarded in Chromium
    "tests/test_reports.py",  # 25 s
    "tests/test_layers.py",  # 25 s
    "tests/lab/test_scenario_presence_modes.py",  # 25 s
    "tests/server/test_hostile.py",  # 20 s
    "tests/server/test_durability.py",  # 19 s: a cluster master killed, a failover waited out
    "tests/lab/test_lab_master_failover.py",  # 17 s: a 6-node cluster, a lab run through a master kill
    "tests/web/test_board_browser.py",  # 16 s
    "tests/server/test_broker_outage.py",  # 14 s
]


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Stable-sort the collected items so that the listed files come first, in the listed order."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    root = config.rootpath

    def key(item: pytest.Item) -> int:
        try:
            rel = item.path.relative_to(root).as_posix()
        except ValueError:  # an item outside the repository (none today): keep it with the rest
            return len(rank)
        return rank.get(rel, len(rank))

    items.sort(key=key)
