"""What every notebook report shows besides its method: the answer first, and where the numbers came from.

* :class:`Answer` puts a placeholder at the top of a notebook (right under the question) and, once the runs
  are done, replaces it with the answer: a few sentences with the measured numbers, the headline chart, and
  the notebook's verdict on the review's decisions. The replacement is an IPython display update, so the
  executed notebook (and its HTML report) opens with the answer although it is computed at the end. The
  answer also travels as JSON (``application/vnd.rtlib.answer+json``) for ``scripts/make_reports.py``'s index.
* :func:`show_provenance` prints where the numbers come from: git commit, date, machine (cores, memory), Python,
  Redis and library versions, the parameters, and the simulator's own overhead.
* :func:`measure_overhead`: the simulator's own overhead (median one-way time of a frame through the client
  stack and a bare websockets echo server), for notebooks that do not start a cluster's calibration.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import os
import platform
import subprocess
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["ANSWER_MIME", "Answer", "measure_overhead", "parameters", "provenance", "show_provenance"]

ANSWER_MIME = "application/vnd.rtlib.answer+json"
ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("rtlib", "websockets", "redis", "msgspec", "pandas", "numpy", "matplotlib", "ipykernel")
PLACEHOLDER = "*The answer appears here once the notebook has run (its runs are below).*"


class Answer:
    """The answer block of one notebook: shown as a placeholder now, filled in by :meth:`set` later."""

    def __init__(self, notebook: str) -> None:
        from IPython.display import Markdown, display

        self.notebook = notebook
        self._text_id = f"rtlib-answer-{notebook}"
        self._chart_id = f"rtlib-chart-{notebook}"
        display(Markdown(PLACEHOLDER), display_id=self._text_id)
        display(Markdown(""), display_id=self._chart_id)

    def set(self, question: str, answer: str, figure: Any = None,
            verdicts: dict[str, tuple[str, str]] | None = None, headline: str = "") -> None:
        """Fill the block in. ``answer``: markdown with the numbers; ``headline``: one line for the index;
        ``figure``: the headline matplotlib figure; ``verdicts``: decision -> (verdict, one-line reason)."""
        from IPython.display import display

        verdicts = verdicts or {}
        rows = "".join(f"\n| {d} | **{v}** | {why} |" for d, (v, why) in verdicts.items())
        text = f"### Answer\n\n{answer}" + (f"\n\n| decision | verdict | why |\n|---|---|---|{rows}" if rows else "")
        payload = {"notebook": self.notebook, "question": question, "answer": answer, "headline": headline,
                   "verdicts": {d: {"verdict": v, "why": why} for d, (v, why) in verdicts.items()}}
        display({"text/markdown": text, ANSWER_MIME: payload}, raw=True, display_id=self._text_id, update=True)
        if figure is not None:
            display(figure, display_id=self._chart_id, update=True)
        # Also here, at the bottom, for someone running the notebook cell by cell.
        display({"text/markdown": text}, raw=True)


def parameters(namespace: dict[str, Any]) -> dict[str, Any]:
    """The notebook's parameters: its UPPER_CASE globals of plain types."""
    plain = (int, float, str, bool, list, tuple, dict, type(None))
    return {k: v for k, v in namespace.items() if k.isupper() and not k.startswith("_") and isinstance(v, plain)}


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return float("nan")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance(params: dict[str, Any], overhead: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Where the numbers come from, as a dict (see the module docstring)."""
    from rtlib.server.redis_process import RedisNotFound, find_redis_server

    commit = _run(["git", "rev-parse", "--short=12", "HEAD"]) or "unknown"
    if commit != "unknown" and _run(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += " (+ uncommitted changes)"
    try:
        redis_version = _run([str(find_redis_server()), "--version"]).split(" sha=")[0]
    except RedisNotFound:
        redis_version = "none (fakeredis)"
    libs = {}
    for name in LIBRARIES:
        try:
            libs[name] = version(name)
        except PackageNotFoundError:
            pass
    return {
        "commit": commit,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{len(os.sched_getaffinity(0))} cores ({_cpu_model()}), {_memory_gib()} GiB RAM, "
                   f"{platform.system()} {platform.release()}",
        "load": "load average {:.1f} / {:.1f} / {:.1f} (1 / 5 / 15 min) when the report was written".format(
            *os.getloadavg()),
        "python": platform.python_version(),
        "redis": redis_version,
        "libraries": ", ".join(f"{k} {v}" for k, v in libs.items()),
        **(extra or {}),
        "simulator overhead": overhead,
        "parameters": ", ".join(f"{k}={v!r}" for k, v in params.items()),
    }


def show_provenance(params: dict[str, Any], overhead: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Display :func:`provenance` as a table (HTML, with a JSON copy for the index); return it."""
    from IPython.display import display

    info = provenance(params, overhead, extra)
    rows = "".join(f"<tr><th style='text-align:left;vertical-align:top'>{html.escape(k)}</th>"
                   f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>" for k, v in info.items())
    display({"text/html": f"<table class='rtlib-provenance'>{rows}</table>",
             "text/plain": "\n".join(f"{k}: {v}" for k, v in info.items()),
             "application/vnd.rtlib.provenance+json": info}, raw=True)
    return info


def measure_overhead(frames: int = 300) -> float:
    """The simulator's own overhead in ms (see ``Cluster.calibrate``), measured on a thread of its own (the
    kernel's thread already runs an event loop)."""
    from rtlib.lab.cluster import _calibrate

    out: list[float] = []
    thread = threading.Thread(target=lambda: out.append(asyncio.run(_calibrate(frames))))
    thread.start()
    thread.join()
    return out[0]
