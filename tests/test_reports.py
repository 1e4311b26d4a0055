"""The report pipeline without executing anything: the committed (CI-executed) notebooks become HTML reports
with the code hidden and an index with their answers and verdicts; the pages render in headless Chromium
without console errors; the cache re-runs exactly what changed; the Socket.IO load driver speaks the protocol."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import missing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))  # bench/ is a package of the repository, not installed

make_reports = importlib.import_module("make_reports")
report_index = importlib.import_module("report_index")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
#: Notebooks that do not yet open with an ``rtlib.lab.report.Answer`` block (their card says so in the index).
#: 05 arrived from main while issue 13 was merged; it states its answer in prose. Shrink this set, never grow it.
WITHOUT_ANSWER: set[str] = set()


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reports")
    entries = []
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        (out / f"{path.stem}.html").write_text(make_reports.export_html(nb, path.stem))
        entries.append(report_index.entry(nb, path.stem, {}, 1.0, None, ran=False))
    report_index.write(out, entries, 1.0, "CI size")
    return out


def test_every_notebook_has_an_answer_first_and_provenance_last() -> None:
    for path in NOTEBOOKS:
        if path.stem in WITHOUT_ANSWER:
            continue
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "answer" in code[0].metadata.get("tags", []), path.name  # the answer block comes first
        assert "show_provenance" in code[-1].source, path.name


def test_reports_hide_the_code(reports: Path) -> None:
    html = (reports / "01_delivery_latency.html").read_text()
    assert "cluster.run(" not in html  # code cells are not in the report...
    assert "Design question." in html and "Answer" in html  # ...their prose and outputs are
    assert "cdnjs.cloudflare.com/ajax/libs/require.js" not in html  # nothing to fetch from the network


def test_index_states_answers_and_verdicts(reports: Path) -> None:
    html = (reports / "index.html").read_text()
    for path in NOTEBOOKS:
        assert f'href="{path.stem}.html"' in html
        if path.stem not in WITHOUT_ANSWER:
            assert (reports / "img" / f"{path.stem}.png").exists(), path.stem  # the headline chart, as a thumbnail
    for label, _, _ in report_index.DECISIONS:
        assert label in html
    assert "not measured in this run" not in html  # every decision has a verdict from some notebook


def test_pages_render_in_chromium_without_console_errors(reports: Path) -> None:
    check_reports = importlib.import_module("check_reports")
    if check_reports.find_chromium() is None:
        missing("no chromium (Debian: apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing("playwright is not installed (pip install -e '.[dev]')")
    pages = [reports / "index.html", *sorted(p for p in reports.glob("*.html") if p.name != "index.html")]
    problems = check_reports.check(pages, reports / "index.png", reports / "index.html")
    assert problems == {p.name: [] for p in pages}
    assert (reports / "index.png").stat().st_size > 10_000


def test_cache_says_why_it_reruns(tmp_path: Path) -> None:
    path = NOTEBOOKS[0]
    (tmp_path / f"{path.stem}.ipynb").write_text("{}")
    code = {"rtlib/a.py": "1", "rtlib/b.py": "2"}
    parts = make_reports.cache_parts(path, {"N": 1}, code)
    old = {"parts": parts, "error": None}
    assert make_reports.why_rerun(old, parts, tmp_path, path.stem) is None
    assert make_reports.why_rerun(None, parts, tmp_path, path.stem) == "not run before"
    assert "parameters changed" in make_reports.why_rerun(
        old, make_reports.cache_parts(path, {"N": 2}, code), tmp_path, path.stem)
    why = make_reports.why_rerun(old, make_reports.cache_parts(path, {"N": 1}, {**code, "rtlib/b.py": "3"}),
                                 tmp_path, path.stem)
    assert why == "code changed: rtlib/b.py"
    assert make_reports.why_rerun({**old, "error": "x"}, parts, tmp_path, path.stem) == "it failed last time"
    moved = make_reports.cache_parts(path, {"N": 1}, code, {**parts["inputs"], "bench/results/x.json": "9"})
    assert make_reports.why_rerun(old, moved, tmp_path, path.stem) == "inputs changed: bench/results/x.json"
    legacy = {"parts": {k: v for k, v in parts.items() if k != "inputs"}, "error": None}  # a pre-inputs cache
    assert make_reports.why_rerun(legacy, parts, tmp_path, path.stem) == "inputs not in its cache key"


#: Calls in the notebooks that read a file without naming it: what they read.
_READERS = {"compare.load(": "bench/results/websockets_vs_socketio.json", "chromium_trace.traces(": "notebooks/data"}
_FILE_LITERAL = re.compile(r"""(["'])([\w./-]*\.(?:json|jsonl|md|csv|gz|parquet|txt)|data)\1""")


def _files_read(path: Path) -> set[str]:
    """Repository files a notebook's code cells name (string literals that resolve to a file, or the data
    directory), relative to the repository root."""
    source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    names = {m.group(2) for m in _FILE_LITERAL.finditer(source)}
    names |= {target for call, target in _READERS.items() if call in source}
    found: set[str] = set()
    for name in names:
        candidates = [(path.parent / name), ROOT / name, ROOT / "bench" / "results" / name, ROOT / "notebooks" / name]
        for c in (c.resolve() for c in candidates):
            if c.is_dir() and c.is_relative_to(ROOT):
                found |= {str(f.relative_to(ROOT)) for f in c.iterdir() if f.is_file()}
                break
            if c.is_file() and c.is_relative_to(ROOT):
                found.add(str(c.relative_to(ROOT)))
                break
    return found


def test_cache_key_covers_every_file_a_notebook_reads() -> None:
    """The declared inputs (make_reports.READS) cover every file the notebook's source names, and every
    declared file exists and is named by its notebook (no stale declaration)."""
    assert len(_files_read(ROOT / "notebooks" / "05_heartbeat_tuning.ipynb")) >= 5  # the scan sees reads at all
    for path in NOTEBOOKS:
        keyed = set(make_reports.input_digests(path.stem))
        assert "missing" not in make_reports.input_digests(path.stem).values(), path.stem
        assert _files_read(path) <= keyed, (path.stem, sorted(_files_read(path) - keyed))
        source = path.read_text()
        for declared in make_reports.READS.get(path.stem[:2], ()):
            assert Path(declared).name in source, (path.stem, declared)


class _Conn:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.deliveries = 0

    def send_text(self, payload: bytes) -> bool:
        self.sent.append(payload)
        return True


def test_socketio_recorder_answers_the_protocol_and_times_deliveries() -> None:
    loadgen = importlib.import_module("bench.harness.loadgen")
    rec = loadgen.DeliveryRecorder("socketio:task.updated")
    rec.set_window(0, 10**18)
    conn = _Conn()
    rec.on_text(conn, b'0{"sid":"a","pingInterval":25000}', 5)  # Engine.IO open -> connect to "/"
    rec.on_text(conn, b"2", 5)  # ping -> pong
    rec.on_text(conn, b'40{"sid":"b"}', 5)  # connected: the welcome
    rec.on_text(conn, b'42["task.updated",{"type":"task.update","payload":{"changes":{"sentAt":100}}}]', 250)
    assert conn.sent == [b"40", b"3"]
    assert rec.other_frames == 1 and rec.total == 1 and list(rec.latencies) == [150]


def test_each_report_has_one_answer_and_no_escaped_newline(reports: Path) -> None:
    """Issue 24: a report showed two Answer blocks and a literal ``\\n`` in its prose. The check is on the
    rendered text (scripts and styles removed), so it fails on either, whichever notebook brings it back."""
    import re

    for path in NOTEBOOKS:
        html = (reports / f"{path.stem}.html").read_text()
        body = re.sub(r"<(script|style)[^>]*>.*?</\1>", "", html, flags=re.S)
        answers = len(re.findall(r'<h3 id="Answer', body))
        assert answers == (0 if path.stem in WITHOUT_ANSWER else 1), f"{path.name}: {answers} Answer blocks"
        text = re.sub(r"<[^>]+>", "", body)
        assert "\\n" not in text, f"{path.name}: a literal \\n in the rendered report: " + text[
            max(0, text.find("\\n") - 80):text.find("\\n") + 20]

