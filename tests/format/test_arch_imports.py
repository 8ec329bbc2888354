"""The format layer imports only the leaves, and its modules form no import cycle.

Every import is counted: at module level, inside functions and under ``TYPE_CHECKING`` (an
import hidden in a function is still an edge of the layer table in DESIGN.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import actstore

ROOT = Path(actstore.__file__).parent
FORMAT = ROOT / "format"
LEAVES = {"errors", "config", "_version", "_typing"}


def _imports(path: Path) -> set[str]:
    """Dotted ``actstore.`` modules imported anywhere in the file."""
    here = ["actstore", *path.relative_to(ROOT).with_suffix("").parts]
    if here[-1] == "__init__":
        here.pop()
    package = here[:-1] if path.name != "__init__.py" else here
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "actstore"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "actstore":
                continue
            if node.module is None:  # "from . import spec": the names are modules
                out |= {f"{mod}.{a.name}" for a in node.names}
            else:
                out.add(mod)
    return out


def _graph() -> dict[str, set[str]]:
    return {f"actstore.format.{p.stem}" if p.stem != "__init__" else "actstore.format": _imports(p)
            for p in sorted(FORMAT.glob("*.py"))}


def test_format_imports_only_the_leaves():
    bad = {}
    for mod, deps in _graph().items():
        up = sorted(d for d in deps if not d.startswith("actstore.format")
                    and d.split(".")[1] not in LEAVES if d != "actstore")
        up += ["actstore (the package root)"] if "actstore" in deps else []
        if up:
            bad[mod] = up
    assert not bad, f"format modules importing above the format layer: {bad}"


def test_format_modules_form_no_cycle():
    full = _graph()
    graph = {m: {d for d in deps if d in full} for m, deps in full.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                raise AssertionError(f"import cycle in format: {' -> '.join(cycle)}")
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)

