"""Write the presence lifecycle table into ``docs/protocol.md`` §9 (run by ``make schema``).

Only the text between ``<!-- presence-table:begin -->`` and ``<!-- presence-table:end -->`` is replaced, so the
rest of the document (edited by hand) is never touched; ``tests/protocol/test_presence_table.py`` fails while the
committed table differs from :data:`rtlib.protocol.presence_table.TABLE`. The rendering lives in the module; this
script is only the file I/O, which the sans-I/O ``rtlib.protocol`` layer does not do.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rtlib.protocol.presence_table import with_table

__all__ = ["DOC", "main"]

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def main(argv: list[str] | None = None) -> int:
    """Rewrite the table in ``argv[0]`` (default: ``docs/protocol.md``); say whether it changed."""
    path = Path(argv[0]) if argv else DOC
    text = path.read_text(encoding="utf-8")
    new = with_table(text)
    if new != text:
        path.write_text(new, encoding="utf-8")
    print(f"{path}: presence table {'updated' if new != text else 'current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
