"""The Node peers of notebook 06 (rtlib vs Socket.IO): their install, versions, and the client bundle sizes.

* ``socketio-node``: Socket.IO 4 on Node with ``@socket.io/redis-adapter`` (``node/socketio_server.js``);
* ``ws-node``: the plain Node forwarder, ``ws`` + Redis pub/sub (``node/ws_forwarder.js``).

Their targets (how the harness starts and addresses them) are in :mod:`bench.harness.targets`, with
python-socketio's (:mod:`bench.servers.psio_server`).

The Node packages are pinned in ``node/package.json`` + ``node/package-lock.json`` and installed with
``npm ci`` into a cache directory (``$RTLIB_NODE_PEERS``, default ``~/.cache/rtlib/node-peers``), never into
the repository; the servers find them through ``NODE_PATH``. :func:`node_status` says why Node peers cannot
run (no ``node``/``npm``, or the install failed), so a caller can fall back to recorded results.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["CACHE_DIR", "NODE_DIR", "bundle_sizes", "ensure_node_peers", "node_status", "node_versions"]

NODE_DIR = Path(__file__).resolve().parent / "node"
#: Where ``npm ci`` installs the Node peers (not committed).
CACHE_DIR = Path(os.environ.get("RTLIB_NODE_PEERS", Path.home() / ".cache" / "rtlib" / "node-peers"))
MIN_NODE_MAJOR = 18


def _lock_digest() -> str:
    return hashlib.sha256((NODE_DIR / "package.json").read_bytes()
                          + (NODE_DIR / "package-lock.json").read_bytes()).hexdigest()[:16]


def node_status() -> tuple[bool, str]:
    """(usable, why): ``node`` ≥ 18 and ``npm`` on PATH, and the peers installed (installing them if needed)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return False, "no `node`/`npm` on PATH"
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        if int(version.lstrip("v").split(".")[0]) < MIN_NODE_MAJOR:
            return False, f"node {version} is older than {MIN_NODE_MAJOR}"
        ensure_node_peers()
    except (OSError, ValueError, subprocess.SubprocessError, RuntimeError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, f"node {version}"


def ensure_node_peers() -> Path:
    """``npm ci`` the pinned packages into :data:`CACHE_DIR` unless that exact lock file is installed; return
    its ``node_modules``."""
    stamp = CACHE_DIR / ".installed"
    modules = CACHE_DIR / "node_modules"
    if stamp.exists() and stamp.read_text() == _lock_digest() and modules.is_dir():
        return modules
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(NODE_DIR / name, CACHE_DIR / name)
    done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CACHE_DIR,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"npm ci failed in {CACHE_DIR}: {done.stderr.strip()[-500:]}")
    stamp.write_text(_lock_digest())
    return modules


def node_versions() -> dict[str, str]:
    """Versions of node and of the installed peer packages (empty if not installed)."""
    out: dict[str, str] = {}
    node = shutil.which("node")
    if node:
        out["node"] = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    import json

    for package in ("socket.io", "@socket.io/redis-adapter", "socket.io-client", "ws", "ioredis"):
        manifest = CACHE_DIR / "node_modules" / package / "package.json"
        if manifest.exists():
            out[package] = json.loads(manifest.read_text())["version"]
    return out


def bundle_sizes() -> list[dict[str, object]]:
    """The browser bundles of the Socket.IO client as npm ships them: bytes minified, and gzipped (level 9).

    The review's claim is "Socket.IO adds 30KB to the client bundle"; a plain WebSocket client needs no
    library (``WebSocket`` is built into browsers), so its row is 0. Empty if the packages are not installed.
    """
    dist = CACHE_DIR / "node_modules" / "socket.io-client" / "dist"
    rows: list[dict[str, object]] = [{"client": "browser WebSocket (rtlib's protocol, no library)", "file": "-",
                                      "min_bytes": 0, "gzip_bytes": 0}]
    for name, what in (("socket.io.min.js", "socket.io-client, full (UMD)"),
                       ("socket.io.esm.min.js", "socket.io-client, ES module"),
                       ("socket.io.msgpack.min.js", "socket.io-client + msgpack parser")):
        path = dist / name
        if path.exists():
            data = path.read_bytes()
            rows.append({"client": what, "file": f"socket.io-client/dist/{name}", "min_bytes": len(data),
                         "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0))})
    return rows if len(rows) > 1 else []
