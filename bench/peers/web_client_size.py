"""The browser client's size, minified + gzipped, against socket.io-client's (the review's "adds 30KB").

Both are bundled and minified the same way, by esbuild from npm (ESM, browser platform), then gzipped at
level 9. socket.io-client is measured two ways: the smallest bundle an app gets from ``import { io }``, and
the ``dist/socket.io.min.js`` file the package ships. npm packages go into a cache directory (never the
repository): ``$RTLIB_NPM_CACHE`` or ``~/.cache/rtlib-bench/npm``.

Run: ``python -m bench.peers.web_client_size`` (``make websize``). Writes
``bench/results/web_client_size.json`` and ``.md``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parents[1]
ROOT = BENCH_DIR.parent
CLIENT = ROOT / "rtlib" / "web" / "rtlib-client.js"
RESULTS = BENCH_DIR / "results"
PACKAGES = ["esbuild@0", "socket.io-client@4"]


def npm_dir() -> Path:
    path = Path(os.environ.get("RTLIB_NPM_CACHE") or Path.home() / ".cache" / "rtlib-bench" / "npm")
    path.mkdir(parents=True, exist_ok=True)
    modules = path / "node_modules"
    if not (modules / "socket.io-client").is_dir() or not (modules / ".bin" / "esbuild").exists():
        subprocess.run(["npm", "install", "--prefix", str(path), "--no-audit", "--no-fund", "--silent", *PACKAGES],
                       check=True)
    return path


def version(npm: Path, package: str) -> str:
    return json.loads((npm / "node_modules" / package / "package.json").read_text())["version"]


def minify(npm: Path, entry: Path) -> bytes:
    """esbuild --bundle --minify, ESM for browsers; resolves imports from the npm cache directory."""
    out = subprocess.run(
        [str(npm / "node_modules" / ".bin" / "esbuild"), str(entry), "--bundle", "--minify", "--format=esm",
         "--platform=browser", "--target=es2022", "--log-level=warning"],
        check=True, capture_output=True, env={**os.environ, "NODE_PATH": str(npm / "node_modules")})
    return out.stdout


def sizes(data: bytes) -> dict[str, int]:
    return {"minifiedBytes": len(data), "gzipBytes": len(gzip.compress(data, compresslevel=9, mtime=0))}


def measure() -> dict[str, Any]:
    npm = npm_dir()
    with tempfile.TemporaryDirectory(dir=npm) as tmp:  # inside the npm dir, so "socket.io-client" resolves
        entry = Path(tmp) / "sio-entry.mjs"
        entry.write_text('export { io } from "socket.io-client";\n')
        sio_bundle = minify(npm, entry)
    shipped = (npm / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js").read_bytes()
    rtlib = minify(npm, CLIENT)
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tool": f"esbuild {version(npm, 'esbuild')} --bundle --minify --format=esm, then gzip -9",
        "rtlibClient": {"source": "rtlib/web/rtlib-client.js", "sourceBytes": CLIENT.stat().st_size,
                        **sizes(rtlib)},
        "socketIoClient": {"version": version(npm, "socket.io-client"),
                           "entry": 'export { io } from "socket.io-client"', **sizes(sio_bundle)},
        "socketIoClientShippedMin": {"file": "socket.io-client/dist/socket.io.min.js", **sizes(shipped)},
    }
    result["ratio"] = round(result["socketIoClient"]["gzipBytes"] / result["rtlibClient"]["gzipBytes"], 1)
    return result


def markdown(r: dict[str, Any]) -> str:
    def kib(n: int) -> str:
        return f"{n / 1024:.1f} KiB"

    rows = [("rtlib-client.js (this repo)", r["rtlibClient"]),
            (f"socket.io-client {r['socketIoClient']['version']}, `import {{ io }}` bundled", r["socketIoClient"]),
            (f"socket.io-client {r['socketIoClient']['version']}, shipped `dist/socket.io.min.js`",
             r["socketIoClientShippedMin"])]
    lines = ["# Browser client size: rtlib-client.js vs socket.io-client", "",
             f"{r['date']} · {r['tool']}", "",
             "| client | minified | minified + gzip -9 |", "|---|---|---|"]
    lines += [f"| {name} | {kib(s['minifiedBytes'])} ({s['minifiedBytes']:,} B) | **{kib(s['gzipBytes'])}** "
              f"({s['gzipBytes']:,} B) |" for name, s in rows]
    lines += ["", f"socket.io-client's bundle is {r['ratio']}x rtlib-client.js's (gzipped). rtlib-client.js holds the "
              "whole client (ordering with gap-detect-and-resync, task.list loading, presence schedule, "
              "reconnect with backoff); socket.io-client is only the transport, before any of that. The review's "
              f"\"adds 30KB\" sits between socket.io-client's minified ({kib(r['socketIoClient']['minifiedBytes'])}) "
              f"and gzipped ({kib(r['socketIoClient']['gzipBytes'])}) sizes.", ""]
    return "\n".join(lines)


def main() -> None:
    result = measure()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "web_client_size.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "web_client_size.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
