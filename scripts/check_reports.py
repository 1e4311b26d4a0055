"""Open the HTML reports in headless Chromium: each must render without console errors or page errors; save a
screenshot of the index (``reports/index.png`` by default; the README shows ``docs/img/reports-index.png``).

Uses Debian's ``chromium`` through Playwright for Python (``executable_path``); never ``playwright install``.

    python scripts/check_reports.py [reports/] [--screenshot docs/img/reports-index.png]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

__all__ = ["check", "find_chromium"]

ROOT = Path(__file__).resolve().parent.parent


def find_chromium() -> str | None:
    """Debian's chromium (or another on PATH), else None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def check(pages: list[Path], screenshot: Path | None = None, index: Path | None = None) -> dict[str, list[str]]:
    """Load every page; return the console errors and page errors of each (an empty list: clean)."""
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no chromium on PATH (Debian: apt-get install -y chromium)")
    problems: dict[str, list[str]] = {}
    with sync_playwright() as p:
        # --no-sandbox: CI and the workbench run as root, where Chromium's sandbox refuses to start.
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            for path in pages:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                found: list[str] = []
                page.on("console", lambda msg, found=found: found.append(f"console {msg.type}: {msg.text}")
                        if msg.type == "error" else None)
                page.on("pageerror", lambda exc, found=found: found.append(f"page error: {exc}"))
                page.goto(path.resolve().as_uri(), wait_until="load")
                page.wait_for_timeout(300)  # late script errors
                if screenshot is not None and index is not None and path.resolve() == index.resolve():
                    screenshot.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(screenshot), full_page=False)
                problems[path.name] = found
                page.close()
        finally:
            browser.close()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="?", type=Path, default=ROOT / "reports")
    parser.add_argument("--screenshot", type=Path, default=ROOT / "reports" / "index.png",
                        help="where the screenshot of the index goes (the README's is docs/img/reports-index.png)")
    parser.add_argument("--no-screenshot", action="store_true")
    args = parser.parse_args(argv)
    index = args.reports / "index.html"
    pages = [index, *sorted(p for p in args.reports.glob("*.html") if p.name != "index.html")]
    problems = check(pages, None if args.no_screenshot else args.screenshot, index)
    for name, found in problems.items():
        print(f"{name}: {'ok' if not found else str(len(found)) + ' problem(s)'}")
        for line in found[:10]:
            print(f"   {line}")
    if not args.no_screenshot:
        print(f"screenshot of the index: {args.screenshot}")
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
