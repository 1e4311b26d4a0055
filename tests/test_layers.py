"""The layout is the architecture: imports only go downward, and the server runs without the lab's extras.

Layers, bottom up: ``protocol`` (pure rules) < ``clientmodels`` (how clients behave) and ``server`` (the live
driver) < ``model`` (presence in virtual time: protocol and clientmodels only) < ``lab`` (the workbench) < ``cli``.
Every import is checked, including ones inside functions. No import cycle anywhere in ``rtlib/``, ``bench/`` and
``scripts/`` (function-level imports count: they hide a cycle, they do not remove it), and no module there over
~400 lines.
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
    "clientmodels": {"protocol"},
    "server": {"protocol"},
    "model": {"protocol", "clientmodels"},
    "lab": {"protocol", "clientmodels", "server", "model"},
    "cli": {"protocol", "clientmodels", "server", "lab", "model"},
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
#: Everything the cycle and size checks cover: the package, the benchmarks and the maintainers' scripts.
CHECKED_DIRS = (PACKAGE, ROOT / "bench", ROOT / "scripts")
CHECKED_MODULES = sorted(p for d in CHECKED_DIRS for p in d.rglob("*.py") if "node_modules" not in p.parts)
@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_go_downward(path: Path) -> None:
    layer = _layer(path)
    assert layer in ALLOWED, f"{path}: a module outside the known layers; add it to ALLOWED"
    upward = _rtlib_imports(path) - ALLOWED[layer] - {layer}
    assert not upward, f"{path.relative_to(ROOT)} ({layer}) imports {sorted(upward)}: imports only go downward"


def test_modules_stay_small() -> None:
    big = {str(p.relative_to(ROOT)): n for p in CHECKED_MODULES if (n := len(p.read_text().splitlines())) > 400}
    assert not big, f"modules over ~400 lines: {big}"


def _module_name(path: Path) -> tuple[str, bool]:
    """``(dotted name, in a package)``: ``bench/cost/server_cost.py`` -> ``bench.cost.server_cost``. A file in a
    directory without ``__init__.py`` (``scripts/``) is a script: it imports its siblings by bare name."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    packaged = all((ROOT.joinpath(*rel.parts[:i]) / "__init__.py").exists() for i in range(1, len(rel.parts)))
    return ".".join(parts), packaged


def _import_graph() -> dict[str, dict[str, list[str]]]:
    """module -> {imported module -> ["line N" or "line N, in a function"]}, over :data:`CHECKED_MODULES`:
    every ``import`` and ``from ... import`` anywhere in a module (functions included) that names one of them."""
    names = {path: _module_name(path) for path in CHECKED_MODULES}
    known = {name for name, _ in names.values()}
    graph: dict[str, dict[str, list[str]]] = {}
    for path, (name, packaged) in names.items():
        tree = ast.parse(path.read_text(), str(path))
        in_function = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                       for n in ast.walk(f)}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, list[str]] = {}
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, one level up per extra dot
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in targets:
                sibling = f"{package}.{target.split('.')[0]}"
                if not packaged and sibling in known:  # a script imports its siblings by bare name
                    target = sibling
                while target and target not in known:  # ``import a.b.c`` of a name inside a.b: edge to a.b
                    target = target.rpartition(".")[0]
                if target and target != name:
                    where = f"line {node.lineno}" + (", in a function" if id(node) in in_function else "")
                    if where not in edges.setdefault(target, []):
                        edges[target].append(where)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, dict[str, list[str]]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_import_graph_sees_bench_scripts_and_function_level_imports() -> None:
    graph = _import_graph()
    assert "bench.harness.targets" in graph["bench.cost.server_cost"]
    assert "scripts.report_index" in graph["scripts.make_reports"]  # a script's sibling, imported by bare name
    # floor_server imports rtlib's keyspace inside a method (only its --redis-script mode needs rtlib)
    assert any("in a function" in w for w in graph["bench.servers.floor_server"].get("rtlib.server.keyspace", []))


def test_no_import_cycles() -> None:
    graph = _import_graph()
    cycles = _cycles(graph)
    report = [" <-> ".join(sorted(c)) + ": " + "; ".join(
        f"{a} imports {b} ({', '.join(graph[a][b])})" for a in sorted(c) for b in sorted(graph[a]) if b in c)
        for c in cycles]
    assert not cycles, "import cycles (function-level imports count):\n" + "\n".join(report)


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
import rtlib.server, rtlib.protocol.session, rtlib.clientmodels.ordering, rtlib.clientmodels.heartbeat
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
    said = out.stdout + out.stderr  # the CLI's one-line mistakes go to stderr (issue 24)
    assert "rtlib simulate needs the lab extra" in said and "pip install 'rtlib[lab]'" in said


def test_test_module_names_are_unique() -> None:
    """pytest imports test modules by basename (rootdir mode): two ``test_x.py`` in different folders stop the whole
    collection on a fresh clone ("import file mismatch"), so each name is used once."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py") if "node_modules" not in p.parts]
    assert not sorted({n for n in names if names.count(n) > 1})
