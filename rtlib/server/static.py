"""The board's static files, served by ``rtlib serve`` itself under ``/app/`` (``/ws`` is untouched).

``websockets`` answers plain HTTP GETs through ``process_request``; this module turns a request path into
a response (``/`` redirects to ``/app/``). The served files are read once, at start-up, into a table keyed by
their relative name, and a request can only pick an entry of that table: no request path is ever joined to a
filesystem path, so ``..``, encoded dots, absolute paths and symlinks cannot reach anything else.
"""

from __future__ import annotations

from dataclasses import replace
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

__all__ = ["APP_PATH", "CONTENT_TYPES", "WEB_DIR", "StaticFiles"]

APP_PATH = "/app/"
WEB_DIR = Path(__file__).resolve().parent.parent / "web"

#: Only these suffixes are served (anything else in the folder, e.g. tests or notes, stays private).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}

# Same-origin everything: the page's scripts, styles and its WebSocket come from this server only.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # No validators are sent, so no-cache makes a browser fetch the file again after a server upgrade.
    "Cache-Control": "no-cache",
}


class StaticFiles:
    """An immutable table ``relative name -> (body, content type)`` loaded from ``root``."""

    def __init__(self, root: Path = WEB_DIR) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        if not root.is_dir():
            return
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            ctype = CONTENT_TYPES.get(path.suffix)
            hidden = any(part.startswith(".") for part in rel.parts)
            if ctype is None or hidden or path.is_symlink() or not path.is_file():
                continue
            self.files[rel.as_posix()] = (path.read_bytes(), ctype)

    def handles(self, path: str) -> bool:
        """True for ``/app`` and everything below it, and for ``/`` when the board is there (a person who opens
        the server's address in a browser is sent to the board)."""
        return path == APP_PATH.rstrip("/") or path.startswith(APP_PATH) or (path == "/" and "index.html" in self.files)

    def respond(self, connection: ServerConnection, path: str) -> Response:
        """The response for a GET of ``path`` (already split from its query string)."""
        if path == "/":  # temporary (302): the root may serve something else one day
            return _redirect(connection, HTTPStatus.FOUND, APP_PATH)
        if path == APP_PATH.rstrip("/"):
            return _redirect(connection, HTTPStatus.PERMANENT_REDIRECT, APP_PATH)
        name = path[len(APP_PATH):] or "index.html"
        entry = self.files.get(name)
        if entry is None:
            return connection.respond(HTTPStatus.NOT_FOUND, f"no file at {path}\n")
        body, ctype = entry
        response = connection.respond(HTTPStatus.OK, "")
        headers = response.headers
        del headers["Content-Type"], headers["Content-Length"]
        headers["Content-Type"] = ctype
        headers["Content-Length"] = str(len(body))
        for key, value in _SECURITY_HEADERS.items():
            headers[key] = value
        return replace(response, body=body)


def _redirect(connection: ServerConnection, status: HTTPStatus, location: str) -> Response:
    response = connection.respond(status, f"see {location}\n")
    response.headers["Location"] = location
    return response
