"""One question, one answer (issue 21 item 6): every decision of the review gets its verdict from exactly one
notebook, the one that owns it (``report_index.OWNERS``), and that verdict agrees with the notebook's headline.
Read from the notebooks' source and their committed (CI-executed) outputs; nothing is executed or written."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
report_index = importlib.import_module("report_index")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
ANSWER_MIME = "application/vnd.rtlib.answer+json"
REVIEW_MS = 45.0
#: How notebook 05 names a presence design: mode, heartbeat, timeout, grace.
DESIGN = re.compile(r"presence mode (\w[\w ]*?), heartbeat (\d+) s, timeout (\d+) s, leave grace (\d+) s")


def _answer_source(nb: nbformat.NotebookNode) -> str:
    """The code cell that fills the answer block in (``answer_block.set``); "" for a notebook without one."""
    cells = [c.source for c in nb.cells if c.cell_type == "code" and "answer_block.set(" in c.source]
    assert len(cells) <= 1, f"{len(cells)} cells call answer_block.set"
    return cells[0] if cells else ""


def _saved_answer(nb: nbformat.NotebookNode) -> dict[str, Any]:
    for cell in nb.cells:
        if cell.cell_type == "code" and "answer" in cell.metadata.get("tags", []):
            for out in cell.get("outputs", []):
                if ANSWER_MIME in out.get("data", {}):
                    return dict(out["data"][ANSWER_MIME])
    return {}


@pytest.fixture(scope="module")
def notebooks() -> dict[str, nbformat.NotebookNode]:
    return {p.stem: nbformat.read(p, as_version=4) for p in NOTEBOOKS}


def test_every_decision_has_one_owner() -> None:
    keys = [key for _, _, key in report_index.DECISIONS]
    assert sorted(keys) == sorted(report_index.OWNERS)
    for key, owner in report_index.OWNERS.items():
        assert [p.stem for p in NOTEBOOKS if p.stem.startswith(owner)], (key, owner)


def test_each_decision_key_is_issued_by_exactly_its_owner(notebooks: dict[str, nbformat.NotebookNode]) -> None:
    for key, owner in report_index.OWNERS.items():
        in_source = [name for name, nb in notebooks.items() if f'"{key}"' in _answer_source(nb)]
        assert len(in_source) == 1 and in_source[0].startswith(owner), (key, in_source)
        saved = [name for name, nb in notebooks.items() if key in _saved_answer(nb).get("verdicts", {})]
        assert len(saved) == 1 and saved[0].startswith(owner), (key, saved)


def test_05_headline_verdict_and_answer_name_one_design(notebooks: dict[str, nbformat.NotebookNode]) -> None:
    answer = _saved_answer(notebooks["05_heartbeat_tuning"])
    headline = DESIGN.search(answer["headline"])
    verdict = DESIGN.search(answer["verdicts"]["30 s / 60 s heartbeat"]["verdict"])
    body = DESIGN.search(answer["answer"])
    assert headline and verdict and body, answer
    assert headline.groups() == verdict.groups() == body.groups()


def test_01_never_quotes_a_saturated_number_as_within(notebooks: dict[str, nbformat.NotebookNode]) -> None:
    answer = _saved_answer(notebooks["01_delivery_latency"])
    verdict = answer["verdicts"]["45 ms average delivery (claim)"]
    text = verdict["verdict"] + " " + verdict["why"]
    assert "no knee" not in text
    assert "saturat" in answer["headline"] and "saturat" in answer["answer"]
    if verdict["verdict"].startswith("server path within it"):
        quoted = [float(v) for v in re.findall(r"p99 ([\d.]+) ms", text)]
        assert quoted and max(quoted) < REVIEW_MS, text
        assert re.search(r"n = [\d,]+", answer["headline"]) and "95 % CI" in answer["headline"]
