"""The layout is the architecture: imports only go downward, and the server runs without the lab's extras.

Layers, bottom up: ``protocol`` (pure rules) < ``client`` (client-side rules) and ``server`` (the live driver)
< ``model`` (presence in virtual time: protocol and client only) < ``lab`` (the workbench) < ``cli``.
Every import is checked, including ones inside functions.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rtlib"
#: What each layer may import from rtlib (besides itself).
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    "client": {"protocol"},
    "server": {"protocol"},
    "model": {"protocol", "client"},
    "lab": {"protocol", "client", "server", "model"},
    "cli": {"protocol", "client", "server", "lab", "model"},
    "__init__": set(),
}
LAB_ONLY = ("pandas", "matplotlib", "tqdm", "IPython", "nbformat", "papermill")


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _rtlib_imports(path: Path) -> set[str]:
    """The rtlib layers a module imports (``rtlib.x.y`` -> ``x``), anywhere in the module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "rtlib" and len(parts) > 1 and parts[1] != "__version__":
                found.add(parts[1])
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_go_downward(path: Path) -> None:
    layer = _layer(path)
    assert layer in ALLOWED, f"{path}: a module outside the known layers; add it to ALLOWED"
    upward = _rtlib_imports(path) - ALLOWED[layer] - {layer}
    assert not upward, f"{path.relative_to(ROOT)} ({layer}) imports {sorted(upward)}: imports only go downward"


def test_modules_stay_small() -> None:
    big = {str(p.relative_to(ROOT)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 450}
    assert not big, f"modules over ~400 lines: {big}"


def test_server_needs_no_lab_dependencies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    core = " ".join(pyproject["project"]["dependencies"])
    assert not [m for m in LAB_ONLY if m.lower() in core.lower()]
    assert {"pandas", "matplotlib", "tqdm"} <= {d.split(">")[0] for d in
                                                 pyproject["project"]["optional-dependencies"]["lab"]}
    # With the lab's modules made unimportable, the server, the CLI's server commands and the rules still load.
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {LAB_ONLY!r}:
            raise ImportError(f"blocked: {{name}}", name=name)
sys.meta_path.insert(0, Block())
import rtlib.server, rtlib.protocol.session, rtlib.client.ordering, rtlib.client.heartbeat
from rtlib.cli import main
for argv in (["serve", "--help"], ["token", "--help"], ["schema", "--help"]):
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), exc
try:
    main(["simulate", "--clients", "1"])
except SystemExit as exc:
    print(exc.code)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "rtlib simulate needs the lab extra" in out.stdout and "pip install 'rtlib[lab]'" in out.stdout
