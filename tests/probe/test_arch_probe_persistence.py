"""Probe persistence split into a saved-probe record (issue 13): no import cycle, parameters
through ``get_params()``, old files still load, ``fit_contrastive`` leaves ``layers`` alone."""

from __future__ import annotations

import ast
import json
import os
import pathlib

import numpy as np
import pytest

import actstore
from actstore import Probe
from actstore.probe.io import load_probe, save_probe

FIXTURES = pathlib.Path(__file__).parent / "arch_fixtures"
PROBE_PKG = pathlib.Path(actstore.__file__).parent / "probe"


def _probe_imports(path: pathlib.Path) -> set[str]:
    """Sibling modules of actstore.probe a module imports, at any depth (functions,
    TYPE_CHECKING blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("actstore.probe."):
            found.add(node.module.split(".")[2])
    return found


def test_probe_modules_form_no_import_cycle():
    graph = {p.stem: _probe_imports(p) - {p.stem} for p in PROBE_PKG.glob("*.py") if p.stem != "__init__"}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle in actstore.probe: {' -> '.join(path + [nxt])}")
            if nxt in graph and nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_saved_record_and_hub_do_not_import_the_estimator():
    for name in ("saved", "hub"):
        imports = _probe_imports(PROBE_PKG / f"{name}.py")
        assert not imports & {"estimator", "io", "sweep", "streaming"}, (name, imports)


@pytest.mark.parametrize("name", ["binary", "multiclass_pca", "regression"])
def test_probes_saved_by_the_previous_code_still_load_and_predict_the_same(name):
    expected = json.loads((FIXTURES / "expected.json").read_text())
    X = np.asarray(expected["X"], dtype=np.float32)
    held = ["embeddings", 3] if name == "binary" else None
    for probe in (Probe.load(FIXTURES / name), load_probe(str(FIXTURES / name))):
        # exactly what the previous loader predicted from the same files
        assert probe.predict(X, layers=held).tolist() == expected[name]["predict"]
        if name != "regression":
            assert probe.predict_proba(X, layers=held).tolist() == expected[name]["proba"]
    if name == "binary":
        assert probe.layers_ == ["embeddings", 3] and probe.get_params()["layers"] == ["embeddings", 3]


def test_saved_params_are_get_params(tmp_path, arrays):
    X, y, _ = arrays
    probe = Probe(layers=[1, 2], preprocessing="pca", pca_components=4, random_state=3,
                  classifier_kwargs={"C": 0.5}).fit(X, y)
    probe.save(tmp_path / "p")
    cfg = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert cfg["params"] == probe.get_params(deep=False)
    loaded = Probe.load(tmp_path / "p")
    assert loaded.get_params() == probe.get_params()
    from actstore.probe.saved import SavedProbe, read_probe

    saved = read_probe(tmp_path / "p")
    assert isinstance(saved, SavedProbe) and saved.layers == [1, 2] and saved.dim == X.shape[2]


class MarginProbe(Probe):
    """A subclass with a parameter of its own: the old hand-written parameter list lost it."""

    def __init__(self, layers=-1, view=None, classifier="logistic_regression", task="classification",
                 normalize=True, preprocessing=None, pca_components=None, classifier_kwargs=None,
                 random_state=None, margin=0.5):
        super().__init__(layers=layers, view=view, classifier=classifier, task=task, normalize=normalize,
                         preprocessing=preprocessing, pca_components=pca_components,
                         classifier_kwargs=classifier_kwargs, random_state=random_state)
        self.margin = margin


def test_a_subclass_parameter_survives_save_and_load(tmp_path, arrays):
    X, y, _ = arrays
    probe = MarginProbe(layers=2, margin=0.25).fit(X, y)
    probe.save(tmp_path / "p")
    loaded = MarginProbe.load(tmp_path / "p")
    assert type(loaded) is MarginProbe and loaded.margin == 0.25
    np.testing.assert_array_equal(loaded.predict(X), probe.predict(X))


def test_write_probe_of_read_probe_is_the_same_probe(tmp_path, arrays):
    from actstore.probe.saved import read_probe, write_probe

    X, y, _ = arrays
    save_probe(Probe(layers=[0, 2]).fit(X, y), str(tmp_path / "a"))
    write_probe(read_probe(tmp_path / "a"), tmp_path / "b")
    a, b = Probe.load(tmp_path / "a"), Probe.load(tmp_path / "b")
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert sorted(os.listdir(tmp_path / "b")) == ["probe.json", "probe.safetensors"]


class NoLayerWrites(Probe):
    """Fails when ``layers`` is assigned after construction (scikit-learn: ``__init__``
    stores parameters, fitting never changes them)."""

    def __setattr__(self, key, value):
        if key == "layers" and "layers" in self.__dict__:
            raise AssertionError(f"layers reassigned to {value!r} after __init__")
        super().__setattr__(key, value)


def test_fit_contrastive_leaves_the_layers_parameter_alone(probe_dataset, arrays):
    X, y, _ = arrays
    probe = NoLayerWrites(layers=[1, 2]).fit_contrastive(X[y == 1][:100], X[y == 0][:100])
    assert probe.layers == [1, 2] and probe.layers_ == [1, 2] and probe.layers_named_ is False
    assert probe.score(X, y) > 0.8
    ds = actstore.open_dataset(probe_dataset)
    on_ds = NoLayerWrites(layers="middle").fit_contrastive(ds.select(np.arange(0, 40)), ds.select(np.arange(40, 80)))
    assert on_ds.layers == "middle" and on_ds.layers_ == [1] and on_ds.layers_named_ is True


@pytest.mark.hub
def test_download_probe_folder_returns_the_files_and_the_commit(hub, arrays):
    from actstore.probe.hub import download_probe_folder
    from actstore.probe.saved import read_probe

    X, y, _ = arrays
    probe = Probe(layers=2).fit(X, y)
    sha = probe.push_to_hub("team/arch-folder", token="hf_test_write", endpoint=hub.endpoint)
    folder, got = download_probe_folder("team/arch-folder", token="hf_test_write", endpoint=hub.endpoint)
    assert got == sha and {"probe.json", "probe.safetensors"} <= set(os.listdir(folder))
    assert read_probe(folder).layers == [2]
