"""Execute the notebooks with full-size parameters into ``reports/<name>.html`` and ``reports/index.html``
(and the executed notebooks, ``reports/<name>.ipynb``), re-running only what changed.

``make demo`` runs this. Each notebook keeps CI-sized defaults in its cell tagged ``parameters`` (what
``make nbtest`` checks); here papermill injects the full-size values of :data:`FULL` after it (a cell tagged
``injected-parameters``), and nbclient executes the result, reporting progress per notebook and per run
(``rtlib.lab.progress``) with an estimate of the time left. The HTML reports hide the code (it stays in the
notebooks); each opens with the question, the answer and its chart (``rtlib.lab.report.Answer``).

A notebook is re-run only when its cache key changed: the notebook's cells, its parameters, the code it runs
(``rtlib/`` and ``pyproject.toml``; notebook 06 also ``bench/``), the files it reads (:data:`READS`: recorded
results under ``bench/results/`` and the browser recordings in ``notebooks/data/``) and the Python version.
Otherwise its last executed copy is reused and the line says so; when it is re-run, the line says which of
those changed.

    python scripts/make_reports.py                    # every notebook, full size
    python scripts/make_reports.py --ci 03            # only notebooks whose name contains "03", CI size
    python scripts/make_reports.py -p DURATION=60 01  # override one parameter (a Python literal)
    python scripts/make_reports.py --force            # ignore the cache
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report_index  # noqa: E402 (after the sys.path line)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
#: The code each notebook runs (a change re-runs it): rtlib for all; notebook 06 runs the bench's load driver too.
CODE = ("rtlib/**/*.py", "pyproject.toml")
CODE_EXTRA = {"06": ("bench/**/*.py", "bench/servers/node/*.js", "bench/servers/node/package-lock.json")}
#: The files each notebook reads (a change re-runs it), declared per notebook: tests/test_reports.py checks every
#: file named in a notebook's code cells is covered. notebooks/data/ is read by rtlib itself
#: (``rtlib.model.chromium_traces.TRACE_DIR``), so it is an input of every notebook.
READS_ALL = ("notebooks/data/*",)
READS: dict[str, tuple[str, ...]] = {
    "04": ("bench/results/soak.json", "bench/results/broker_outage.json"),
    "05": ("bench/results/model_validation.md", "bench/results/presence_cost.json"),
    "06": ("bench/results/websockets_vs_socketio.json",),  # shown instead of a measurement (USE_RECORDED, no npm)
    "07": ("bench/results/unit_costs.json", "bench/results/capacity_validation.json"),  # committed live results
}

#: Full-size parameters per notebook (times in README.md). Each report states its sample sizes (n, 95 % intervals):
#: a shorter run here is a wider interval there, not another claim. Shortened on 2026-12-08 where noted.
FULL: dict[str, dict[str, Any]] = {
    # 1,000 clients is the headline; 100 and 500 show the growth (more steps added minutes, not answers); 10 s each
    # (was 15): ~100,000 deliveries at 1,000 clients.
    "01_delivery_latency": {"CLIENT_STEPS": [100, 500, 1000], "DURATION": 10, "TIME_SCALE": 1.0},
    # 21 live runs of 20 design s (was 30), 100 clients each.
    "02_out_of_order": {"CLIENTS": 100, "UPDATE_RATE": 6, "DURATION": 20, "JITTERS_MS": [5, 20, 50],
                        "REPLAY_WINDOWS": [0, 1.5, 2, 3, 4, 6, 8], "REPLAY_TRIALS": 5000},
    # Heartbeat-model runs of 600 design s (was 900): past the 300 s after which hidden tabs throttle.
    "03_presence_timeouts": {"CLIENTS": 200, "WORKSPACES": 4, "TASKS": 10, "CRASH_DURATION": 600,
                             "MODEL_DURATION": 600, "ANALYTIC_USERS": 500},
    # 240 clients in the failure run: 80 fail over to one instance (the blocking Redis pool absorbs the burst).
    "04_scale_out_and_failures": {"SCALE_INSTANCES": [1, 3], "SCALE_CLIENTS": 500, "SCALE_DURATION": 20,
                                  "SCALE_TIME_SCALE": 0.5, "CLIENTS": 240, "UPDATES_PER_CLIENT": 0.01,
                                  "DURATION": 240, "KILL_AT": 80, "TIME_SCALE": 0.05,
                                  "RESUME_CLIENTS": 300, "RESUME_WORKSPACES": 5, "RESUME_UPDATES_PER_CLIENT": 0.05,
                                  "RESUME_DURATION": 60},
    # All eight live validation cases (CI runs two) on three clusters side by side (four lanes ran up to 40 ms late
    # against the 20 ms budget on the shared machine, three at most 7 ms); the model grids are the CI-sized ones.
    "05_heartbeat_tuning": {"LIVE_CASES": None, "LIVE_LANES": 3},
    # No reruns of noisy cases here (each table shows the background load); `make bench-socketio` records with them.
    # Send phases of 2 s (was 3; S1 4,000 deliveries, S2 40,000) and 1 s per S3 step (was 1.5; 10,000 at 50/s).
    "06_websockets_vs_socketio": {"S1": [1000, 50, 100.0], "S2": [200, 1, 100.0], "DURATION": 2.0,
                                  "S3_RATES": [50, 100, 200, 400, 800, 1600], "S3_RECEIVERS": 200, "S3_STEP": 1.0,
                                  "S3_REFINE": 1, "IDLE_CONNECTIONS": 1000, "IDLE_WORKSPACES": 20, "RETRIES": 0},
}
#: Seconds per notebook before any run has been timed here (then the last run's time is used).
FIRST_GUESS = {"01": 80, "02": 80, "03": 120, "04": 80, "05": 90, "06": 250, "07": 15}


# --- the cache -------------------------------------------------------------------------------------------
def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def code_digests(name: str) -> dict[str, str]:
    """A digest per file of the code notebook ``name`` runs."""
    patterns = (*CODE, *CODE_EXTRA.get(name[:2], ()))
    files = sorted({p for pattern in patterns for p in ROOT.glob(pattern)
                    if p.is_file() and "__pycache__" not in p.parts})
    return {str(p.relative_to(ROOT)): _digest(p.read_bytes()) for p in files}


def input_digests(name: str) -> dict[str, str]:
    """A digest per file notebook ``name`` reads (:data:`READS_ALL` and its :data:`READS`); a declared file that
    does not exist is recorded as ``missing`` (its appearance then re-runs the notebook)."""
    out = {}
    for pattern in (*READS_ALL, *READS.get(name[:2], ())):
        found = [p for p in ROOT.glob(pattern) if p.is_file()]
        out.update({str(p.relative_to(ROOT)): _digest(p.read_bytes()) for p in found})
        if not found:
            out[pattern] = "missing"
    return dict(sorted(out.items()))


def notebook_digest(path: Path) -> str:
    """The cells (type, source, tags) only: outputs and execution counts do not change what a run does."""
    nb = nbformat.read(path, as_version=4)
    cells = [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]
    return _digest(json.dumps(cells).encode())


def cache_parts(path: Path, params: dict[str, Any], code: dict[str, str],
                inputs: dict[str, str] | None = None) -> dict[str, Any]:
    """The cache key of one notebook run: cells, parameters, code digests, input digests, Python version."""
    return {"notebook": notebook_digest(path), "parameters": _digest(json.dumps(params, sort_keys=True).encode()),
            "code": code, "inputs": inputs if inputs is not None else input_digests(path.stem),
            "python": sys.version.split()[0]}


def _changed(old: dict[str, str], new: dict[str, str], what: str) -> str | None:
    changed = sorted(f for f in set(old) | set(new) if old.get(f) != new.get(f))
    if not changed:
        return None
    return f"{what} changed: " + ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")


def why_rerun(old: dict[str, Any] | None, new: dict[str, Any], out: Path, name: str) -> str | None:
    """None if the cached run is still good; else why not, in a few words."""
    if old is None:
        return "not run before"
    if not (out / f"{name}.ipynb").exists():
        return "its executed notebook is missing"
    if old.get("error"):
        return "it failed last time"
    reasons = []
    if old["parts"]["notebook"] != new["notebook"]:
        reasons.append("the notebook changed")
    if old["parts"]["parameters"] != new["parameters"]:
        reasons.append("parameters changed")
    if old["parts"]["python"] != new["python"]:
        reasons.append("Python changed")
    # A cache written before inputs were part of the key has none: its run may have read anything, so re-run.
    old_inputs = old["parts"].get("inputs")
    reasons += [r for r in (_changed(old["parts"]["code"], new["code"], "code"),
                            _changed(old_inputs, new["inputs"], "inputs") if old_inputs is not None
                            else "inputs not in its cache key") if r]
    return "; ".join(reasons) or None


# --- progress ---------------------------------------------------------------------------------------------
def clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Prints where the run is: the notebook, its current cell and run, and the estimated time left.

    Runs are read from the ``rtlib.lab.progress`` file the kernel appends to; estimates come from the last timed
    run of each notebook (cell by cell), else from :data:`FIRST_GUESS`.
    """

    def __init__(self, estimates: dict[str, float], every: float = 10.0) -> None:
        self.estimates = estimates  # notebook -> expected seconds, for those still to run
        self.every = every
        self.name = ""
        self.cells: list[float] = []  # expected seconds per code cell of the current notebook (may be empty)
        self.cell = 0
        self.ncells = 0
        self.run_label = ""
        self.runs = 0
        self.started = self.nb_started = time.monotonic()
        self._progress_file = Path(tempfile.mkstemp(prefix="rtlib-progress-", suffix=".jsonl")[1])
        os.environ["RTLIB_PROGRESS"] = str(self._progress_file)  # inherited by the kernels
        self._read = 0
        self._last_print = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def start_notebook(self, name: str, ncells: int, cell_estimates: list[float]) -> None:
        self.name, self.ncells, self.cells = name, ncells, cell_estimates
        self.cell, self.runs, self.run_label = 0, 0, ""
        self.nb_started = time.monotonic()
        self._read = self._progress_file.stat().st_size

    def on_cell(self, index: int) -> None:
        self.cell = index

    def finish_notebook(self) -> None:
        self.estimates.pop(self.name, None)
        self.name = ""

    def left(self) -> tuple[float, float]:
        """(seconds left in this notebook, seconds left in all)."""
        elapsed = time.monotonic() - self.nb_started
        expected = self.estimates.get(self.name, 0.0)
        if self.cells and len(self.cells) == self.ncells:
            expected = max(sum(self.cells[:self.cell + 1]), elapsed) + sum(self.cells[self.cell + 1:])
        here = max(expected - elapsed, 0.0)
        return here, here + sum(v for k, v in self.estimates.items() if k != self.name)

    def _poll_runs(self) -> None:
        try:
            with self._progress_file.open() as f:
                f.seek(self._read)
                lines = f.readlines()
                self._read = f.tell()
        except OSError:
            return
        for line in lines:
            try:
                self.run_label = json.loads(line)["label"]
                self.runs += 1
            except (ValueError, KeyError):
                continue
            self.print_status()

    def print_status(self) -> None:
        if not self.name:
            return
        self._last_print = time.monotonic()
        here, total = self.left()
        run = f", run {self.runs}: {self.run_label}" if self.run_label else ""
        left = (f"~{clock(here)} left here, ~{clock(total)} in all" if here > 0
                else f"longer than estimated; ~{clock(total)} for the rest")
        print(f"   {clock(time.monotonic() - self.nb_started)}  cell {self.cell + 1}/{self.ncells}{run}  ({left})",
              flush=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._poll_runs()
            if time.monotonic() - self._last_print >= self.every:
                self.print_status()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._progress_file.unlink(missing_ok=True)
        os.environ.pop("RTLIB_PROGRESS", None)


# --- running a notebook -----------------------------------------------------------------------------------
def run(path: Path, params: dict[str, Any], timeout: int, progress: Progress, log: Path, cell_estimates: list[float]
        ) -> tuple[nbformat.NotebookNode, float, list[float], str | None]:
    """Inject ``params`` (papermill) and execute the notebook; returns it, its wall time, the seconds of each
    code cell, and an error if any. The kernel's own output (warnings, logs) goes to ``log``, not the terminal."""
    nb = load_notebook_node(str(path))  # papermill's loader: every cell gets the metadata it expects
    if params:
        nb = parameterize_notebook(nb, params, comment="Parameters injected by scripts/make_reports.py (full size)")
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    cell_seconds: list[float] = []
    starts: dict[int, float] = {}

    def on_start(cell: Any, cell_index: int) -> None:
        starts[cell_index] = time.monotonic()
        progress.on_cell(code_cells.index(cell_index) if cell_index in code_cells else 0)

    def on_done(cell: Any, cell_index: int, **_: Any) -> None:
        cell_seconds.append(time.monotonic() - starts.get(cell_index, time.monotonic()))

    progress.start_notebook(path.stem, len(code_cells), cell_estimates)
    # IPC transport on a private path: no "running over TCP without encryption" warning, no ports.
    ipc_dir = tempfile.mkdtemp(prefix="rtlib-kernel-")
    km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(ipc_dir, "k"))
    client = NotebookClient(nb, km=km, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}},
                            on_cell_start=on_start, on_cell_executed=on_done)
    started = time.monotonic()
    error = None
    with log.open("w") as kernel_log:
        try:
            client.execute(stdout=kernel_log, stderr=kernel_log)
        except CellExecutionError as exc:
            error = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[-1]  # last line, no ANSI colours
    return nb, time.monotonic() - started, cell_seconds, error


def _answer_echo(output: Any) -> bool:
    data = output.get("data", {})
    return str(data.get("text/markdown", "")).startswith("### Answer") and report_index.ANSWER_MIME not in data


def export_html(nb: nbformat.NotebookNode, name: str) -> str:
    """The report: code hidden (still in ``reports/<name>.ipynb``), prompts hidden, no live widgets."""
    # Sliders need a kernel: the static page shows the notebook's precomputed grid instead, and the widget
    # state would make the page fetch the widget manager from a CDN (a console error offline).
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        # Answer.set() also echoes the answer at the bottom for someone running the notebook cell by cell; the
        # report opens with it already, so the echo (the answer's markdown without its JSON) is left out: one
        # Answer per report.
        cell["outputs"] = [o for o in cell.get("outputs", []) if not _answer_echo(o)]
        for output in cell.get("outputs", []):
            output.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": name}})
    # The template loads require.js and MathJax from a CDN: the reports use neither (no widgets, no math), and
    # offline the failed loads are console errors. A report must open anywhere, so they go.
    body = re.sub(r'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>', "", body)
    note = (f'<p class="rtlib-note" style="color:#666;font:0.9em system-ui,sans-serif;margin:0 0 1em">Code hidden: '
            f'see <a href="{name}.ipynb">{name}.ipynb</a> (executed) or <code>notebooks/{name}.ipynb</code>. '
            f'<a href="index.html">All reports</a>.</p>')
    return body.replace('<main>', '<main>' + note, 1) if '<main>' in body else body


# --- main ---------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run only notebooks whose file name contains one of these")
    parser.add_argument("--ci", action="store_true", help="keep the notebooks' CI-sized defaults")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a parameter (a Python literal); repeatable")
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    parser.add_argument("--force", action="store_true", help="re-run every notebook, whatever the cache says")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.param:
        name, _, value = item.partition("=")
        overrides[name.strip()] = ast.literal_eval(value.strip())
    # The kernel must be this environment's Python, even if the user has another "python3" kernelspec.
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        p for p in (str(Path(sys.prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH")) if p)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # a debugger warning the kernel prints
    paths = [p for p in sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
             if not args.names or any(n in p.name for n in args.names)]
    if not paths:
        parser.error("no notebook matches")
    cache_dir = args.out / ".cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    plan = []
    for path in paths:
        params = {**({} if args.ci else FULL.get(path.stem, {})), **overrides}
        cache_file = cache_dir / f"{path.stem}.json"
        old = json.loads(cache_file.read_text()) if cache_file.exists() else None
        parts = cache_parts(path, params, code_digests(path.stem))
        why = "--force" if args.force else why_rerun(old, parts, args.out, path.stem)
        plan.append((path, params, parts, old, why))
    estimates = {p.stem: (old or {}).get("seconds") or FIRST_GUESS.get(p.stem[:2], 120)
                 for p, _, _, old, why in plan if why}
    print(f"{len(plan)} notebooks, {len(estimates)} to run (~{clock(sum(estimates.values()))} expected), "
          f"{len(plan) - len(estimates)} cached; reports in {args.out}", flush=True)
    progress = Progress(estimates)
    entries, started = [], time.monotonic()
    try:
        for i, (path, params, parts, old, why) in enumerate(plan, 1):
            size = "CI size" if not params else "full size" if not overrides else "custom size"
            head = f"[{i}/{len(plan)}] {path.stem} ({size})"
            if why is None:
                print(f"{head}: cached, unchanged since {old['date']} ({old['seconds']:.0f} s then)", flush=True)
                nb = nbformat.read(args.out / f"{path.stem}.ipynb", as_version=4)
                seconds, error, ran = old["seconds"], None, False
            else:
                print(f"{head}: running ({why})", flush=True)
                log = cache_dir / f"{path.stem}.kernel.log"
                nb, seconds, cell_seconds, error = run(path, params, args.timeout, progress, log,
                                                      (old or {}).get("cell_seconds", []))
                progress.finish_notebook()
                nbformat.write(nb, args.out / f"{path.stem}.ipynb")  # the executed notebook, for a closer look
                (cache_dir / f"{path.stem}.json").write_text(json.dumps(
                    {"parts": parts, "seconds": round(seconds, 1), "cell_seconds": [round(s, 2) for s in cell_seconds],
                     "date": time.strftime("%Y-%m-%d %H:%M"), "error": error}, indent=1))
                ran = True
                print(f"{head}: {'FAILED: ' + error if error else 'done'} in {clock(seconds)}"
                      + (f" (kernel log: {log})" if error else ""), flush=True)
            (args.out / f"{path.stem}.html").write_text(export_html(nb, path.stem))
            entries.append(report_index.entry(nb, path.stem, params, seconds, error, ran))
    finally:
        progress.close()
    total = time.monotonic() - started
    index = report_index.write(args.out, entries, total, "CI size" if args.ci and not overrides else "full size")
    print(f"\n{sum(e['ran'] for e in entries)} run, {sum(not e['ran'] for e in entries)} cached, "
          f"in {clock(total)}: open {index}")
    for e in entries:
        print(f"  {e['name'][:2]} {e['short']}: {e['headline'] or e['error'] or 'no answer'}")
    return 1 if any(e["error"] for e in entries) else 0


if __name__ == "__main__":
    sys.exit(main())
