"""The library's layout stays readable: no import cycle (lazy imports inside functions count
too), no module over 600 lines, no function over 80 lines.

The import graph is read from the source with ``ast``, so a cycle hidden by an import inside a
function is found as well; ``from pkg import name`` counts as an import of ``pkg.name`` when that
is a module, else of ``pkg`` itself."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vs_lib"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name → (file, is a package's ``__init__``)."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


MODULES = _modules()


def _imported(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The vs_lib modules one import statement of ``module`` loads."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            package = ".".join(base + ([node.module] if node.module else []))
        else:
            package = node.module or ""
        targets = [
            f"{package}.{alias.name}" if f"{package}.{alias.name}" in MODULES else package for alias in node.names
        ]
    out = set()
    for target in targets:
        while target not in MODULES and "." in target:  # vs_lib.index.exact.exact_topk → vs_lib.index.exact
            target = target.rsplit(".", 1)[0]
        if target in MODULES and target != module:
            out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module → the vs_lib modules it imports anywhere in its source."""
    graph: dict[str, set[str]] = {}
    for module, (path, is_package) in MODULES.items():
        graph[module] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[module] |= _imported(module, is_package, node)
    return graph


def test_the_graph_reader_sees_relative_lazy_and_absolute_imports():
    graph = import_graph()
    assert "vs_lib.index.faiss_index" in graph["vs_lib.index"]  # the package re-exports its backends
    assert {"vs_lib.index", "vs_lib.config", "vs_lib.serving.rerank"} <= graph["vs_lib.serving.facade"]
    assert sum(map(len, graph.values())) > 2 * len(MODULES)  # a reader that missed imports would see few


def test_no_import_cycle():
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' → '.join(err.args[1])}")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_and_function_sizes(module):
    path, _ = MODULES[module]
    source = path.read_text()
    assert source.count("\n") <= MAX_MODULE_LINES, f"{module} has {source.count(chr(10))} lines"
    long = [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines in {module}: {long}"
