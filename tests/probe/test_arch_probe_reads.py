"""Sweeps read each layer into one array and check it finite once (issue 13); plotting lives
in one module and the main metric is named in one place."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pandas as pd
import pytest

import actstore
from actstore import Probe, cross_validate, sweep_layers
from actstore.format.reader import Dataset
from actstore.probe import data as probe_data
from actstore.probe.sweep import make_folds

ROOT = pathlib.Path(actstore.__file__).parent


@pytest.fixture
def layer_calls(monkeypatch):
    """Every ``Dataset.layer`` call: the ``out`` it got and the array it returned."""
    calls: list[tuple[np.ndarray | None, np.ndarray]] = []
    real = Dataset.layer

    def spy(self, layer, *, view=None, dtype=None, out=None):
        got = real(self, layer, view=view, dtype=dtype, out=out)
        calls.append((out, got))
        return got

    monkeypatch.setattr(Dataset, "layer", spy)
    return calls


@pytest.fixture
def finite_scans(monkeypatch):
    """How many arrays the NaN/inf check scanned, and their shapes."""
    shapes: list[tuple[int, ...]] = []
    real = probe_data._check_finite

    def spy(X):
        shapes.append(X.shape)
        real(X)

    monkeypatch.setattr(probe_data, "_check_finite", spy)
    return shapes


def test_read_layers_reads_into_the_one_array_it_returns(probe_dataset, layer_calls, arrays):
    X, _, _ = arrays
    ds = actstore.open_dataset(probe_dataset)
    one = probe_data.read_layers(ds, [2])
    assert len(layer_calls) == 1 and layer_calls[0][0] is not None
    assert np.shares_memory(layer_calls[0][0], one)  # read in place: no second array
    np.testing.assert_array_equal(one[:, 0], X[:, 2])
    layer_calls.clear()
    several = probe_data.read_layers(ds, [3, 0, 1])
    assert len(layer_calls) == 3 and all(out is not None for out, _ in layer_calls)
    assert len({id(out) for out, _ in layer_calls}) == 1  # one reused buffer, not one per layer
    np.testing.assert_array_equal(several, X[:, [3, 0, 1]])


def test_a_sweep_checks_each_layer_finite_once(probe_dataset, finite_scans):
    ds = actstore.open_dataset(probe_dataset)
    sweep_layers(ds, layers=[0, 2], cv=3, n_jobs=1)
    assert len(finite_scans) == 2, finite_scans  # was 1 + 2 x cv per layer
    finite_scans.clear()
    X = np.random.default_rng(0).normal(size=(60, 3, 8)).astype(np.float32)
    y = (X[:, 1, 0] > 0).astype(int)
    sweep_layers(X, y, cv=4, n_jobs=1)
    assert len(finite_scans) == 3, finite_scans


def test_cross_validate_checks_the_features_once(probe_dataset, finite_scans):
    ds = actstore.open_dataset(probe_dataset)
    cross_validate(ds, layers=[1, 2], cv=3, seeds=[0, 1])
    assert len(finite_scans) == 1, finite_scans


def _metrics(ev):  # a sweep's rows hold the metrics; evaluate also names the rows (n_eval, eval_hash)
    return {k: v for k, v in ev.items() if k not in ("n_eval", "eval_hash")}


def test_sweep_and_cross_validate_equal_fitting_each_fold_through_the_public_api(arrays):
    X, y, _ = arrays
    sweep = sweep_layers(X, y, layers=[1, 2], cv=3, seed=4, n_jobs=1)
    folds = make_folds(y, 3, "classification", 4, None)
    want = []
    for layer in (1, 2):
        for k, (tr, va) in enumerate(folds):
            probe = Probe(layers=0, random_state=4).fit(X[tr, layer], y[tr])
            want.append({"layer": layer, "seed": 4, "fold": k, **_metrics(probe.evaluate(X[va, layer], y[va]))})
    pd.testing.assert_frame_equal(sweep.results, pd.DataFrame(want))
    frame = cross_validate(X, y, layers=[1, 2], cv=3, seeds=[5])
    want = []
    for k, (tr, va) in enumerate(make_folds(y, 3, "classification", 5, None)):
        probe = Probe(layers=[0, 1], random_state=5).fit(X[tr][:, [1, 2]], y[tr])
        want.append({"layers": "1,2", "seed": 5, "fold": k, **_metrics(probe.evaluate(X[va][:, [1, 2]], y[va]))})
    pd.testing.assert_frame_equal(frame, pd.DataFrame(want))


def _imports_of(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_plot_module_draws():
    drawing = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if "matplotlib" in _imports_of(p))
    assert drawing == ["probe/plot.py"]


def test_plots_of_a_sweep_and_of_a_report(tmp_path, arrays):
    from actstore.probe import append_results, report
    from actstore.probe.plot import plot_layers, plot_report

    X, y, score = arrays
    sweep = sweep_layers(X, y, layers=[0, 2], cv=3, n_jobs=1)
    assert sweep.plot(str(tmp_path / "a.png")) == str(tmp_path / "a.png")
    assert plot_layers({"x": sweep}, str(tmp_path / "b.png")) == str(tmp_path / "b.png")
    append_results(str(tmp_path / "r.parquet"), [{"dataset": "d", "classifier": "c", **r}
                                                  for r in sweep.results.to_dict("records")])
    assert plot_report(report(str(tmp_path / "r.parquet")), str(tmp_path / "c.png")) == str(tmp_path / "c.png")
    for name in ("a", "b", "c"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    reg = sweep_layers(X, score, layers=[1], cv=3, task="regression", classifier="ridge", n_jobs=1)
    assert reg.plot(str(tmp_path / "d.png")) and reg.metric == "r2"


def test_the_main_metric_is_named_in_one_place(arrays):
    from actstore.probe.metrics import main_metric

    X, y, score = arrays
    assert main_metric("classification") == "accuracy" and main_metric("regression") == "r2"
    clf = Probe(layers=2).fit(X, y)
    reg = Probe(layers=1, classifier="ridge", task="regression").fit(X, score)
    assert clf.score(X, y) == clf.evaluate(X, y)[main_metric("classification")]
    assert reg.score(X, score) == reg.evaluate(X, score)[main_metric("regression")]
