"""Progress of the runs inside a notebook, for whoever executes it (``make demo``).

A notebook executed by ``scripts/make_reports.py`` runs in a kernel whose output goes into the notebook, not
to the terminal. So each long run announces itself with :func:`step`, which appends one JSON line to the
file named by ``$RTLIB_PROGRESS``; the report builder tails that file and prints "run 3: 400 clients" with an
estimate of the time left. Without the variable (JupyterLab, nbval, a script) :func:`step` does nothing.
"""

from __future__ import annotations

import json
import os
import time

__all__ = ["ENV", "step"]

ENV = "RTLIB_PROGRESS"


def step(label: str) -> None:
    """Announce that a run called ``label`` starts now (a no-op unless ``$RTLIB_PROGRESS`` is set)."""
    path = os.environ.get(ENV)
    if not path:
        return
    try:
        with open(path, "a") as f:
            f.write(json.dumps({"t": time.time(), "label": label}) + "\n")
    except OSError:
        pass  # progress is a courtesy: never fail a run for it
