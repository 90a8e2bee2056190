"""The architecture rules of the developers' guide, checked on the source itself.

- ``python -m finemix --help`` imports nothing heavy: the command line stays instant, and every
  heavy library is imported inside the function that needs it.
- No import cycle among finemix's modules, so the data path reads top-down.
- No module over 400 lines, no function over 60.

Each test fails with the full list of offenders, not the first one.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "finemix"
HEAVY_MODULES = ("torch", "transformers", "numpy", "safetensors", "accelerate", "datasets", "matplotlib", "pandas")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# Runs ``python -m finemix ARGS`` in this interpreter, then prints the heavy modules it loaded.
_HELP_PROBE = """
import json, runpy, sys
heavy = set(sys.argv[2].split(","))
sys.argv = ["finemix", *json.loads(sys.argv[1])]
try:
    runpy.run_module("finemix", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
loaded = sorted(name for name in sys.modules if name.split(".")[0] in heavy)
print("HEAVY=" + json.dumps(loaded))
"""


@pytest.mark.parametrize("args", [["--help"], ["purify", "--help"]], ids=" ".join)
def test_help_imports_no_heavy_module(args):
    result = subprocess.run(
        [sys.executable, "-c", _HELP_PROBE, json.dumps(args), ",".join(HEAVY_MODULES)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("HEAVY="))
    loaded = json.loads(line[len("HEAVY="):])
    assert loaded == [], f"`python -m finemix {' '.join(args)}` imported heavy modules: {loaded}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _source_files() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST):
    """Every import statement, at module level or inside functions, outside ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for orelse in child.orelse:
                yield from _import_nodes_of(orelse)
            continue
        yield from _import_nodes_of(child)


def _import_nodes_of(node: ast.AST):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    yield from _import_nodes(node)


def _imported_modules(node: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The finemix modules one import statement loads by name (parent packages it merely
    passes through are left out: their ``__init__`` re-exports would read as false cycles)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    found = set()
    for alias in node.names:
        submodule = f"{target}.{alias.name}"
        if submodule in known:
            found.add(submodule)
        elif target in known:
            found.add(target)
    return found


def _import_graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in _source_files()}
    known = set(files)
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in _import_nodes(tree):
            edges |= _imported_modules(node, module, is_package, known)
        edges.discard(module)
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected component."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(node):  # Tarjan's algorithm; the package is small, recursion depth is no concern
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth first)."""
    start = min(component)
    previous = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    path = [node]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle found in component {sorted(component)}")


def test_import_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_cycle():
    graph = _import_graph()
    assert "finemix.errors" in graph and len(graph) > 10  # the walk found the package
    cycles = _cycles(graph)
    assert not cycles, "import cycles among finemix modules:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_modules_and_functions_are_short():
    long_modules, long_functions = [], []
    for path in _source_files():
        source = path.read_text()
        where = path.relative_to(PACKAGE_DIR.parents[1])
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            long_modules.append(f"{where}: {lines} lines")
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    report = []
    if long_modules:
        report.append(f"modules over {MAX_MODULE_LINES} lines:\n  " + "\n  ".join(long_modules))
    if long_functions:
        report.append(f"functions over {MAX_FUNCTION_LINES} lines:\n  " + "\n  ".join(long_functions))
    assert not report, "\n".join(report)
