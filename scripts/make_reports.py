"""Execute the notebooks with full-size parameters into ``reports/<name>.html`` and ``reports/index.html``
(and the executed notebooks, ``reports/<name>.ipynb``).

``make demo`` runs this. Each notebook keeps CI-sized defaults in its cell tagged ``parameters`` (that is what
``make nbtest`` checks). Here the full-size values below are injected papermill-style: a cell tagged
``injected-parameters`` is inserted right after the ``parameters`` cell, so
``papermill notebooks/01_delivery_latency.ipynb out.ipynb -p DURATION 60`` works the same way.

    python scripts/make_reports.py                    # every notebook, full size
    python scripts/make_reports.py --ci 03            # only notebooks whose name contains "03", CI size
    python scripts/make_reports.py -p DURATION=60 01  # override one parameter (a Python literal)
"""

from __future__ import annotations

import argparse
import ast
import html
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

#: Full-size parameters per notebook (about 10 minutes in all on a 2-core machine).
FULL: dict[str, dict[str, Any]] = {
    "01_delivery_latency": {"CLIENT_STEPS": [100, 250, 500, 750, 1000], "DURATION": 30, "TIME_SCALE": 1.0},
    "02_out_of_order": {"CLIENTS": 100, "UPDATE_RATE": 6, "DURATION": 60, "JITTERS_MS": [2, 5, 10, 20, 50],
                        "REPLAY_WINDOWS": [0, 1.5, 2, 3, 4, 6, 8], "REPLAY_TRIALS": 10000},
    "03_presence_timeouts": {"CLIENTS": 200, "WORKSPACES": 4, "TASKS": 10, "CRASH_DURATION": 600,
                             "MODEL_DURATION": 1500, "ANALYTIC_USERS": 1000},
    # 240 clients in the failure run: 80 fail over to one instance. From ~100 the server's Redis pool runs dry
    # (redis-py's default of 100 connections) and it closes healthy sockets: see the notebook's recommendation.
    "04_scale_out_and_failures": {"SCALE_INSTANCES": [1, 2, 3, 4], "SCALE_CLIENTS": 500, "SCALE_DURATION": 30,
                                  "SCALE_TIME_SCALE": 0.5, "CLIENTS": 240, "UPDATES_PER_CLIENT": 0.01,
                                  "DURATION": 240, "KILL_AT": 80, "TIME_SCALE": 0.05},
}


def inject(nb: nbformat.NotebookNode, params: dict[str, Any]) -> None:
    """Insert a cell tagged ``injected-parameters`` after the cell tagged ``parameters`` (papermill's way)."""
    if not params:
        return
    index = next((i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if index is None:
        raise SystemExit("no cell tagged 'parameters' to inject after")
    source = "# Parameters injected by scripts/make_reports.py (full size)\n" + "".join(
        f"{name} = {value!r}\n" for name, value in params.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)


def run(path: Path, params: dict[str, Any], timeout: int) -> tuple[nbformat.NotebookNode, float, str | None]:
    """Execute one notebook in the current environment's kernel; returns it, its wall time, and an error if any."""
    nb = nbformat.read(path, as_version=4)
    inject(nb, params)
    started = time.monotonic()
    error = None
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    except CellExecutionError as exc:
        error = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[-1]  # last line, no ANSI colours
    return nb, time.monotonic() - started, error


def describe(nb: nbformat.NotebookNode) -> tuple[str, str]:
    """The notebook's title (first heading) and design question (the paragraph that starts with it)."""
    text = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    lines = text.splitlines()
    title = next((line.lstrip("# ").strip() for line in lines if line.startswith("#")), "")
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
    question = next((p for p in paragraphs if p.startswith("**Design question.**")), "")
    question = question.replace("**Design question.**", "").replace("*", "").replace("`", "")
    return title, question.strip()


def write_index(out: Path, entries: list[dict[str, Any]], total: float, mode: str) -> Path:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    stamp = f" · commit {commit}" if commit else ""
    items = "\n".join(
        f'<li><a href="{html.escape(e["file"])}">{html.escape(e["title"])}</a> '
        f'<span class="meta">{e["seconds"]:.0f} s{" · FAILED: " + html.escape(e["error"]) if e["error"] else ""}'
        f'</span><p>{html.escape(e["question"])}</p><p class="meta">parameters: '
        f'{html.escape(", ".join(f"{k}={v!r}" for k, v in e["params"].items()) or "CI defaults")}</p></li>'
        for e in entries)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rtlib reports</title>
<style>body{{font-family:system-ui,sans-serif;max-width:860px;margin:2em auto;line-height:1.45;color:#222}}
li{{margin-bottom:1.2em}} a{{font-size:1.1em;font-weight:600}} .meta{{color:#666;font-size:.9em}}</style></head>
<body><h1>rtlib: the real-time architecture review, measured</h1>
<p>Each report executes one notebook of <code>notebooks/</code> against a real embedded Redis and real
<code>rtlib serve</code> instances, with simulated clients. It states the design question, the method, the
result and a recommendation.</p>
<ol>
{items}
</ol>
<p class="meta">{mode} · {time.strftime("%Y-%m-%d %H:%M")} · {total / 60:.1f} min{stamp}</p>
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run only notebooks whose file name contains one of these")
    parser.add_argument("--ci", action="store_true", help="keep the notebooks' CI-sized defaults")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a parameter (a Python literal); repeatable")
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.param:
        name, _, value = item.partition("=")
        overrides[name.strip()] = ast.literal_eval(value.strip())
    # The kernel must be this environment's Python, even if the user has another "python3" kernelspec.
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        p for p in (str(Path(sys.prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH")) if p)
    paths = [p for p in sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
             if not args.names or any(n in p.name for n in args.names)]
    if not paths:
        parser.error("no notebook matches")
    args.out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    entries, started = [], time.monotonic()
    for path in paths:
        params = {**({} if args.ci else FULL.get(path.stem, {})), **overrides}
        print(f"{path.name}: running ({'CI size' if not params else 'full size'})...", flush=True)
        nb, seconds, error = run(path, params, args.timeout)
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
        (args.out / f"{path.stem}.html").write_text(body)
        nbformat.write(nb, args.out / f"{path.stem}.ipynb")  # the executed notebook, for a closer look
        title, question = describe(nb)
        entries.append({"file": f"{path.stem}.html", "title": title or path.stem, "question": question,
                        "seconds": seconds, "error": error, "params": params})
        print(f"{path.name}: {'FAILED: ' + error if error else 'ok'} in {seconds:.0f} s -> "
              f"{args.out / (path.stem + '.html')}", flush=True)
    total = time.monotonic() - started
    index = write_index(args.out, entries, total, "CI size" if args.ci and not overrides else "full size")
    print(f"\n{len(entries)} reports in {total / 60:.1f} min: open {index}")
    return 1 if any(e["error"] for e in entries) else 0


if __name__ == "__main__":
    sys.exit(main())
