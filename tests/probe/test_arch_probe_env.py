"""The ``probe`` extra covers what actstore.probe imports; ``actstore env`` reads the extras
from the package metadata; the demo fails with an error of the actstore tree (issue 13)."""

from __future__ import annotations

import ast
import importlib.metadata as md
import pathlib
import re
import sys

import pytest

import actstore
from actstore.cli import _demo

ROOT = pathlib.Path(actstore.__file__).parent
PYPROJECT = ROOT.parent / "pyproject.toml"


def _name(req: str) -> str:
    return re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1).replace("_", "-").lower()


def _closure(dists: list[str]) -> set[str]:
    """The distributions ``dists`` install, with their own requirements (no extras)."""
    seen: set[str] = set()
    todo = [_name(d) for d in dists]
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            reqs = md.requires(dist) or []
        except md.PackageNotFoundError:
            continue
        todo += [_name(r) for r in reqs if "extra ==" not in r]
    return seen


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_the_probe_extra_installs_every_package_actstore_probe_imports():
    import tomllib

    project = tomllib.loads(PYPROJECT.read_text())["project"]
    installed = _closure(project["dependencies"] + project["optional-dependencies"]["probe"])
    by_module = md.packages_distributions()
    needed = {}
    for path in (ROOT / "probe").glob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level: needed to import the module
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for mod in mods:
                top = mod.split(".")[0]
                if top in sys.stdlib_module_names or top == "actstore":
                    continue
                dists = {d.replace("_", "-").lower() for d in by_module.get(top, [top])}
                needed[top] = (path.name, dists)
    missing = {top: where for top, (where, dists) in needed.items() if not dists & installed}
    assert not missing, f"imported by actstore.probe but not installed by actstore[probe]: {missing}"


def test_env_builds_the_extras_table_from_the_package_metadata(monkeypatch):
    requires = ["numpy>=1.24", 'pandas>=1; extra == "tables"', 'scikit-learn<2; extra == "tables"',
                'surely-not-installed-dist>=1; extra == "ghost"', 'actstore[tables,ghost]; extra == "all"']

    def fake_requires(dist):
        return requires if dist == "actstore" else md.requires(dist)

    class Meta:
        def get_all(self, key):
            return ["tables", "ghost", "all"] if key == "Provides-Extra" else None

    monkeypatch.setattr(_demo.md, "requires", fake_requires)
    monkeypatch.setattr(_demo.md, "metadata", lambda dist: Meta())
    report = _demo.env_report()
    lines = report.splitlines()
    assert any(re.fullmatch(r"numpy \S+", line) for line in lines)
    assert any(line.startswith("[tables] installed: pandas ") and "scikit-learn " in line for line in lines)
    assert "[ghost] missing ['surely-not-installed-dist']" in report
    assert "[all]" not in report and "[extract]" not in report  # only what the metadata declares


def test_env_lists_every_extra_the_installed_package_declares(capsys):
    declared = set(md.metadata("actstore").get_all("Provides-Extra")) - {"all"}
    out = _demo.env_report()
    shown = set(re.findall(r"^\[([\w-]+)\]", out, flags=re.M))
    assert shown == declared


def test_a_demo_dataset_that_fails_verification_raises_an_actstore_error(tmp_path, monkeypatch):
    from actstore import demo

    class Report:
        ok = False

        def __str__(self):
            return "tensors/hidden_layer000_shard000.safetensors: sha256 mismatch"

    class Written:
        def verify(self):
            return Report()

    import importlib

    extraction = importlib.import_module("actstore.extraction")  # the demo runs extraction's extract
    monkeypatch.setattr(extraction, "extract", lambda *a, **k: Written())
    with pytest.raises(actstore.IntegrityError, match="failed verification") as info:
        demo.run_demo(str(tmp_path / "out"), model=str(tmp_path / "model"), n_per_task=4, cv=2,
                      progress=False, quiet=True)
    assert "sha256 mismatch" in str(info.value) and "--out" in str(info.value)
