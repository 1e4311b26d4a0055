"""``reports/index.html``: one card per notebook (its answer, headline and chart), then the review's decisions
with the workbench's verdict on each and a link to the evidence, then where the numbers come from.

Everything shown is read from the executed notebooks: the answer cell's ``application/vnd.rtlib.answer+json``
and chart (``rtlib.lab.report.Answer``) and the provenance cell's JSON. Nothing here is a result of its own.
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

import mistune
import nbformat

__all__ = ["DECISIONS", "OWNERS", "entry", "write"]

ANSWER_MIME = "application/vnd.rtlib.answer+json"
PROVENANCE_MIME = "application/vnd.rtlib.provenance+json"
#: The seed's decisions and claims, in the review's order: (label, the review's words, verdict key).
DECISIONS = [
    ("WebSockets with the ws library, not Socket.IO", "\u201cSocket.IO adds 30KB to the client bundle\u201d",
     "websockets over Socket.IO"),
    ("45 ms average delivery", "\u201cWebSockets give us 45ms average delivery\u201d",
     "45 ms average delivery (claim)"),
    ("Partial updates with a version", "\u201capplies updates only if the version is newer\u201d",
     "partial updates with versions"),
    ("Task-level presence only", "\u201cshow who's viewing a specific task\u201d", "task-level presence"),
    ("Heartbeat 30 s, timeout 60 s", "\u201cHeartbeat every 30 seconds \u2026 60 seconds\u201d",
     "30 s / 60 s heartbeat"),
    ("Redis sorted sets for presence", "\u201ca sorted set per task, with the score being the last heartbeat\u201d",
     "Redis sorted sets for presence"),
    ("Redis pub/sub between instances", "\u201cour own room logic with Redis pub/sub\u201d",
     "Redis pub/sub between instances"),
]
#: One question, one answer: the notebook (name prefix) whose verdict the index shows for each decision. Another
#: notebook may measure the same thing and say so in its body; it does not issue the verdict.
OWNERS = {
    "websockets over Socket.IO": "06",
    "45 ms average delivery (claim)": "01",
    "partial updates with versions": "02",
    "task-level presence": "03",
    "30 s / 60 s heartbeat": "05",
    "Redis sorted sets for presence": "04",
    "Redis pub/sub between instances": "04",
}
_markdown = mistune.create_markdown(plugins=["table"])


def _outputs(nb: nbformat.NotebookNode, tag: str | None = None) -> list[Any]:
    cells = [c for c in nb.cells if c.cell_type == "code" and (tag is None or tag in c.metadata.get("tags", []))]
    return [o for c in cells for o in c.get("outputs", [])]


def entry(nb: nbformat.NotebookNode, name: str, params: dict[str, Any], seconds: float, error: str | None,
          ran: bool) -> dict[str, Any]:
    """What the index needs from one executed notebook."""
    text = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    title = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), name)
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
    question = next((p for p in paragraphs if p.startswith("**Design question.**")), "")
    answer = next((o["data"][ANSWER_MIME] for o in _outputs(nb, "answer") if ANSWER_MIME in o.get("data", {})), {})
    chart = next((o["data"]["image/png"] for o in _outputs(nb, "answer") if "image/png" in o.get("data", {})), None)
    provenance = next((o["data"][PROVENANCE_MIME] for o in _outputs(nb) if PROVENANCE_MIME in o.get("data", {})), {})
    return {"name": name, "file": f"{name}.html", "title": title, "short": title.split("·")[-1].strip(),
            "question": question.replace("**Design question.**", "").strip(), "answer": answer.get("answer", ""),
            "headline": answer.get("headline", ""), "verdicts": answer.get("verdicts", {}), "chart": chart,
            "provenance": provenance, "params": params, "seconds": seconds, "error": error, "ran": ran}


def _card(e: dict[str, Any], img_dir: Path) -> str:
    img = ""
    if e["chart"]:
        (img_dir / f"{e['name']}.png").write_bytes(base64.b64decode(e["chart"]))
        img = (f'<a href="img/{e["name"]}.png"><img class="thumb" src="img/{e["name"]}.png" '
               f'alt="headline chart of {html.escape(e["title"])}"></a>')
    status = (f'<p class="failed">FAILED: {html.escape(e["error"])}</p>' if e["error"] else "")
    answer = _markdown(e["answer"]) if e["answer"] else "<p><em>No answer recorded.</em></p>"
    question = _markdown(e["question"]) if e["question"] else ""
    return f"""<section class="card" id="{e['name']}">
<h2><a href="{e['file']}">{html.escape(e['title'])}</a></h2>
{status}<div class="row"><div class="text"><div class="question">{question}</div>
<p class="headline">{html.escape(e['headline'])}</p>
<div class="answer">{answer}</div>
<p class="meta">{'ran' if e['ran'] else 'cached'} · {e['seconds'] / 60:.1f} min · <a href="{e['file']}">full report</a>
 · <a href="{e['name']}.ipynb">executed notebook</a></p></div>
<div class="figure">{img}</div></div>
</section>"""


def _decisions(entries: list[dict[str, Any]]) -> str:
    rows = []
    for label, words, key in DECISIONS:
        found = next(((e, e["verdicts"][key]) for e in entries
                      if e["name"].startswith(OWNERS[key]) and key in e["verdicts"]), None)
        if found is None:
            rows.append(f"<tr><td>{html.escape(label)}</td><td>{html.escape(words)}</td><td>not measured in this "
                        "run</td><td></td><td></td></tr>")
            continue
        e, v = found
        rows.append(f"<tr><td>{html.escape(label)}</td><td class='quote'>{html.escape(words)}</td>"
                    f"<td><strong>{html.escape(v['verdict'])}</strong></td><td>{html.escape(v['why'])}</td>"
                    f"<td><a href='{e['file']}'>{html.escape(e['name'][:2])}</a></td></tr>")
    return ("<table class='decisions'><thead><tr><th>decision</th><th>the review</th><th>verdict</th>"
            "<th>measured</th><th>evidence</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _provenance(entries: list[dict[str, Any]], total: float, mode: str) -> str:
    first = next((e["provenance"] for e in entries if e["provenance"]), {})
    keep = ("commit", "machine", "python", "redis", "libraries")
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(first[k]))}</td></tr>" for k in keep
                   if k in first)
    per = "".join(
        f"<tr><th>{html.escape(e['name'])}</th><td>{html.escape(e['provenance'].get('date', '?'))}; "
        f"{'ran now' if e['ran'] else 'cached'}; simulator overhead: "
        f"{html.escape(str(e['provenance'].get('simulator overhead', '?')))}; parameters: "
        f"{html.escape(', '.join(f'{k}={v!r}' for k, v in e['params'].items()) or 'CI defaults')}</td></tr>"
        for e in entries)
    return (f"<table class='provenance'>{rows}{per}</table><p class='meta'>{mode} · index written "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · this build {total / 60:.1f} min</p>")


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45;
color:#222} h1{margin-bottom:.2em} .card{border:1px solid #ddd;border-radius:8px;padding:1em 1.2em;margin:1.2em 0}
.card h2{margin:.1em 0 .4em;font-size:1.25em} .row{display:flex;gap:1.2em;align-items:flex-start}
.text{flex:1 1 60%} .figure{flex:0 0 36%} .thumb{width:100%;border:1px solid #eee;border-radius:4px}
.headline{font-weight:600;color:#114} .question p{color:#444;font-size:.93em;margin:.2em 0}
.answer ul{padding-left:1.2em} .answer li{margin:.25em 0} .meta{color:#666;font-size:.88em}
.failed{color:#b00;font-weight:600} table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{border-bottom:1px solid #e4e4e4;padding:.35em .5em;text-align:left;vertical-align:top}
.quote{color:#555;font-style:italic} .provenance th{white-space:nowrap;width:1%}
@media (max-width:800px){.row{flex-direction:column}}"""


def write(out: Path, entries: list[dict[str, Any]], total: float, mode: str) -> Path:
    img_dir = out / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    cards = "\n".join(_card(e, img_dir) for e in entries)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>rtlib: the real-time architecture review, measured</title><link rel="icon" href="data:,">
<style>{STYLE}</style></head>
<body><h1>The real-time architecture review, measured</h1>
<p>TaskFlow's review (2025-11-14) approved WebSockets on Redis pub/sub, partial updates with versions and
task-level presence with heartbeats. rtlib builds that design for real; each report below runs it (an embedded
<code>redis-server</code>, real server processes, simulated clients) and answers one question. The answer and
the chart come first; the method and the code are in the report.</p>
{cards}
<h2>The review's decisions, and the verdicts</h2>
{_decisions(entries)}
<h2>Where the numbers come from</h2>
{_provenance(entries, total, mode)}
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path
