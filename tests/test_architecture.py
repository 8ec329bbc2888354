"""The layer table holds: every import inside ``actstore/`` points down it, and no modules
import each other in a cycle (issue 13).

Every import is read with ``ast`` — at module level, inside functions, under
``TYPE_CHECKING``, and ``importlib.import_module("actstore...")`` with a constant name —
with relative imports resolved. An edge is (importing module, imported module); importing a
package is an edge to its ``__init__``, ``from pkg import sub`` an edge to ``pkg.sub`` when
``sub`` is a module.

The table (README "Development" shows the same)::

    leaves      errors, _version, _typing (nothing of actstore); config (errors)
    format      format/                       -> leaves
    storage     cache/, open                  -> format, leaves
    hub client  hub_client                    -> format, leaves
    middle      hub, extraction, loader       -> storage, format, leaves (hub: + hub_client)
    probe       probe/                        -> loader, hub_client, storage, format, leaves
    top         testing (all but cli), demo (all but cli), cli (all), actstore/__init__
                (all but cli, demo, testing; names load lazily), __main__ (cli)

``KNOWN_VIOLATIONS`` lists the edges that break it on this branch and are fixed elsewhere in
parallel; the test asserts the violations found are exactly those, so a fix that removes
one must remove it from the set too, and a new violation fails.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import actstore

ROOT = Path(actstore.__file__).resolve().parent

LEAVES = {"errors", "_version", "_typing", "config"}
STORAGE = {"cache", "open"}
BELOW_MIDDLE = STORAGE | {"format"} | LEAVES
EVERYTHING = {"errors", "_version", "_typing", "config", "format", "cache", "open", "hub_client",
              "hub", "extraction", "loader", "probe", "testing", "demo", "cli", "actstore",
              "__main__"}

#: unit (top-level module or package under actstore/; "actstore" = its __init__) -> the
#: units it may import
ALLOWED: dict[str, set[str]] = {
    "errors": set(), "_version": set(), "_typing": set(), "config": {"errors"},
    "format": LEAVES,
    "cache": {"format"} | LEAVES,
    "open": {"cache", "format"} | LEAVES,
    "hub_client": {"format"} | LEAVES,
    "hub": BELOW_MIDDLE | {"hub_client"},
    "extraction": BELOW_MIDDLE,
    "loader": BELOW_MIDDLE,
    "probe": BELOW_MIDDLE | {"loader", "hub_client"},
    "testing": EVERYTHING - {"cli"},
    "demo": EVERYTHING - {"cli"},
    "cli": EVERYTHING,
    "actstore": EVERYTHING - {"cli", "demo", "testing"},
    "__main__": {"cli"},
}

#: Edges that break the table on this branch outside the extraction/cache/version part of
#: issue 13; other changes of the same wave remove them (then delete them here).
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()  # every cycle the review named is fixed


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every actstore module ``name`` imports, anywhere in its source."""
    package = name if _is_package(path) else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                yield sub if sub in known else mod
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                yield node.args[0].value


def _edges() -> set[tuple[str, str]]:
    known = _modules()
    edges = set()
    for name, path in known.items():
        for target in _imports(name, path, known):
            if target.split(".")[0] != "actstore" or target == name:
                continue
            # ``import actstore.format.spec`` names a module; an attribute path is cut back
            # to the module that holds it
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            edges.add((name, target))
    return edges


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "actstore"


def _cycle_edges(edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The edges inside a strongly connected component of more than one module (Tarjan)."""
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    component: dict[str, int] = {}
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component[w] = index[v]
                if w == v:
                    break

    for v in sorted(graph):
        if v not in index:
            visit(v)
    sizes: dict[int, int] = {}
    for c in component.values():
        sizes[c] = sizes.get(c, 0) + 1
    return {(a, b) for a, b in edges if component[a] == component[b] and sizes[component[a]] > 1}


def _violations() -> dict[tuple[str, str], str]:
    edges = _edges()
    found: dict[tuple[str, str], str] = {}
    for a, b in sorted(edges):
        ua, ub = _unit(a), _unit(b)
        if ua == ub:
            continue
        if ua not in ALLOWED:
            found[(a, b)] = f"{ua!r} is not in the layer table: add it to ALLOWED (and README)"
        elif ub not in ALLOWED[ua]:
            found[(a, b)] = f"{ua!r} may not import {ub!r} (points up the layer table)"
    for edge in sorted(_cycle_edges(edges)):
        found.setdefault(edge, "part of an import cycle")
    return found


def test_every_unit_is_in_the_layer_table():
    units = {_unit(m) for m in _modules()}
    assert units <= set(ALLOWED), sorted(units - set(ALLOWED))


def test_imports_point_down_the_layer_table_and_form_no_cycle():
    found = _violations()
    new = {e: why for e, why in found.items() if e not in KNOWN_VIOLATIONS}
    gone = KNOWN_VIOLATIONS - set(found)
    assert not new, "imports against the layer table:\n" + "\n".join(
        f"  {a} -> {b}: {why}" for (a, b), why in sorted(new.items()))
    assert not gone, f"fixed: remove from KNOWN_VIOLATIONS: {sorted(gone)}"


def test_the_walker_sees_imports_in_functions_type_checking_and_relative_forms(tmp_path):
    """The edges the walker must not miss: a cycle hidden in a function-level import
    (the old ``UnifiedCache.warmup``), a ``TYPE_CHECKING`` import, ``from .. import x``."""
    edges = _edges()
    # relative, module level: the CLI takes the version from the leaf
    assert ("actstore.cli", "actstore._version") in edges
    # inside a function: the demo imports extraction only when it runs
    assert ("actstore.demo", "actstore.extraction") in edges
    # under TYPE_CHECKING: the package root names the reader for type checkers
    assert ("actstore", "actstore.format.reader") in edges
    # ``from .. import config`` is the config module, not the package root
    assert ("actstore.cache.unified", "actstore.config") in edges
    assert ("actstore.cache.unified", "actstore") not in edges
    assert _cycle_edges({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == {
        ("a", "b"), ("b", "c"), ("c", "a")}


def test_the_cache_runs_no_model_and_the_format_does_not_import_the_package_root():
    """The two cycles of this part of issue 13: ``cache -> extract`` (warmup) and
    ``format/index_builder -> actstore`` (the version)."""
    edges = _edges()
    assert not [e for e in edges if _unit(e[0]) == "cache" and _unit(e[1]) == "extraction"]
    assert not [e for e in edges if _unit(e[0]) == "format" and e[1] == "actstore"]
    assert not (ROOT / "extract").exists()  # ``actstore.extract`` is the function
    assert callable(actstore.extract) and actstore.extract.__module__ == "actstore.extraction"
