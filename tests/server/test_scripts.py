"""The Lua scripts' texts: history bounds written in, and the update script the store runs is the one exported
(the benchmark's floor-redis target runs it too). The scripts' behaviour is tested through ``test_store``."""

from __future__ import annotations

import redis

from rtlib.protocol.config import HistoryConfig
from rtlib.server import scripts
from rtlib.server.resp import script_sha
from rtlib.server.store import RedisStore


def test_sized_writes_the_history_bounds_in() -> None:
    text = scripts.sized(scripts.UPDATE, HistoryConfig(length=7, max_age=2.5))
    assert "HIST_LEN" not in text and "HIST_AGE_MS" not in text
    assert "HIST_LEN == 0" not in text and "if 7 == 0 then" in text and "2500 > 0" in text


def test_update_script_is_the_one_the_store_runs() -> None:
    history = HistoryConfig(length=5)
    store = RedisStore(redis.asyncio.Redis(), history=history)
    assert store._update_sha == script_sha(scripts.update_script(history))
    assert scripts.update_script() != scripts.update_script(history)
