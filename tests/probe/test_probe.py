"""Probe: the scikit-learn contract, equality with plain pipelines, metrics, errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import actstore
from actstore import Probe


def test_init_only_stores_params_and_clone_works():
    p = Probe(layers=[1, 2], classifier="ridge", random_state=3, classifier_kwargs={"alpha": 2.0})
    assert p.get_params()["layers"] == [1, 2]
    q = clone(p)
    assert q.get_params() == p.get_params() and not hasattr(q, "pipeline_")


def test_equals_plain_sklearn_pipeline(arrays):
    X, y, _ = arrays
    ours = Probe(layers=2, random_state=0).fit(X[:200], y[:200])
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))
    ref.fit(X[:200, 2], y[:200])
    np.testing.assert_allclose(ours.predict_proba(X[200:]), ref.predict_proba(X[200:, 2]), atol=1e-7)
    assert ours.score(X[200:], y[200:]) == ref.score(X[200:, 2], y[200:])
    assert ours.fit(X, y) is ours  # fit returns self


def test_dataset_input_equals_array_input(probe_dataset, arrays):
    X, y, _ = arrays
    ds = actstore.open_dataset(probe_dataset)
    a = Probe(layers=2, random_state=0).fit(ds.select(np.arange(200)), y="label")
    b = Probe(layers=2, random_state=0).fit(X[:200], y[:200])
    np.testing.assert_array_equal(a.predict(ds.select(np.arange(200, 300))), b.predict(X[200:]))
    m = a.evaluate(ds.select(np.arange(200, 300)))
    assert set(m) >= {"accuracy", "balanced_accuracy", "auroc", "f1", "precision", "recall", "n"}
    assert m["n"] == 100 and m["accuracy"] > 0.85 and m["auroc"] > 0.9


def test_multilayer_concat_and_layer_importance(arrays):
    X, y, _ = arrays
    p = Probe(layers="all", random_state=0).fit(X, y)
    assert p.layers_ == [0, 1, 2, 3] and p.n_features_in_ == 4 * X.shape[2]
    imp = p.compute_layer_importance()
    assert abs(sum(imp.values()) - 1) < 1e-9 and max(imp, key=imp.get) == 2
    assert Probe(layers=-2).fit(X, y).layers_ == [2]
    assert Probe(layers="middle").fit(X, y).layers_ == [1]  # one block: blocks[(4 - 1) // 2]


@pytest.mark.parametrize("clf", ["logistic_regression", "ridge", "lda", "mass_mean", "mass_mean_iid", "linear_svm"])
def test_every_classifier_learns_and_round_trips(tmp_path, arrays, clf):
    X, y, _ = arrays
    p = Probe(layers=2, classifier=clf, random_state=0).fit(X[:200], y[:200])
    assert p.score(X[200:], y[200:]) > 0.8
    p.save(str(tmp_path / "p"))
    q = Probe.load(str(tmp_path / "p"))
    np.testing.assert_array_equal(q.predict(X), p.predict(X))
    np.testing.assert_allclose(q.decision_function(X), p.decision_function(X), atol=1e-5)


def test_pca_multiclass_and_regression_round_trip(tmp_path, arrays):
    X, y, score = arrays
    y3 = y + (X[:, 2, 4] > 1).astype(int) * (2 - y)
    p = Probe(layers=[1, 2], preprocessing="pca", pca_components=10, random_state=0).fit(X, y3)
    m = p.evaluate(X, y3)
    assert 0 <= m["auroc"] <= 1 and len(p.classes_) == 3
    p.save(str(tmp_path / "m"))
    np.testing.assert_allclose(Probe.load(str(tmp_path / "m")).predict_proba(X), p.predict_proba(X), atol=1e-6)
    r = Probe(layers=1, classifier="ridge", task="regression").fit(X, score)
    mr = r.evaluate(X, score)
    assert mr["r2"] > 0.9 and mr["pearson_r"] > 0.9 and set(mr) >= {"spearman_rho", "mse", "mae"}
    r.save(str(tmp_path / "r"))
    np.testing.assert_allclose(Probe.load(str(tmp_path / "r")).predict(X), r.predict(X), atol=1e-6)


def test_fit_contrastive(arrays):
    X, y, _ = arrays
    pos, neg = X[y == 1][:100], X[y == 0][:100]
    p = Probe(layers=2, random_state=0).fit_contrastive(pos, neg)
    assert p.score(X, y) > 0.85


def test_save_load_refuses_tampering_versions_and_unsafe_estimators(tmp_path, arrays):
    import json

    from sklearn.ensemble import RandomForestClassifier

    X, y, _ = arrays
    p = Probe(layers=2).fit(X, y)
    p.save(str(tmp_path / "p"))
    w = tmp_path / "p" / "probe.safetensors"
    blob = bytearray(w.read_bytes())
    blob[-1] ^= 1
    w.write_bytes(bytes(blob))
    with pytest.raises(actstore.IntegrityError, match="probe.safetensors"):
        Probe.load(str(tmp_path / "p"))
    p.save(str(tmp_path / "v"))
    cfg = json.loads((tmp_path / "v" / "probe.json").read_text())
    cfg["format_version"] = 99
    (tmp_path / "v" / "probe.json").write_text(json.dumps(cfg))
    with pytest.raises(actstore.UnsupportedVersionError, match="99"):
        Probe.load(str(tmp_path / "v"))
    p.save(str(tmp_path / "c"))
    cfg = json.loads((tmp_path / "c" / "probe.json").read_text())
    cfg["classes_"] = cfg["classes_"][::-1]  # flips every prediction, shapes unchanged
    (tmp_path / "c" / "probe.json").write_text(json.dumps(cfg))
    with pytest.raises(actstore.IntegrityError, match="probe.json was modified after saving"):
        Probe.load(str(tmp_path / "c"))
    forest = Probe(layers=2, classifier=RandomForestClassifier(n_estimators=5)).fit(X, y)
    with pytest.raises(actstore.InvalidArgumentError, match="cannot be saved safely"):
        forest.save(str(tmp_path / "f"))
    assert not (tmp_path / "f").exists() or not (tmp_path / "f" / "probe.json").exists()


def test_bad_inputs_are_clear(probe_dataset, arrays):
    X, y, score = arrays
    ds = actstore.open_dataset(probe_dataset)
    with pytest.raises(actstore.InvalidArgumentError, match="Unknown classifier 'svm2'"):
        Probe(layers=2, classifier="svm2").fit(X, y)
    with pytest.raises(actstore.LayerNotFoundError, match=r"Layer 9 is not stored"):
        Probe(layers=9).fit(ds, "label")
    with pytest.raises(actstore.InvalidArgumentError, match="only one class"):
        Probe(layers=2).fit(X, np.zeros(len(y), dtype=int))
    with pytest.raises(actstore.InvalidArgumentError, match=r"expected \(300,\)"):
        Probe(layers=2).fit(X, y[:10])
    with pytest.raises(actstore.InvalidArgumentError, match="no column 'nope'"):
        Probe(layers=2).fit(ds, "nope")
    with pytest.raises(actstore.InvalidArgumentError, match="NaN"):
        Probe(layers=2).fit(X, np.where(y == 1, np.nan, 0.0))
    with pytest.raises(actstore.NotFittedError, match="not fitted"):
        Probe().predict(X)
    with pytest.raises(actstore.InvalidArgumentError, match="task='regression'"):
        Probe(layers=1).fit(X, score)
    assert issubclass(actstore.NotFittedError, AttributeError)


@pytest.mark.parametrize("clf", ["logistic_regression", "linear_svm"])
def test_multiclass_evaluate_equals_sklearn_metrics(arrays, clf):
    from scipy.special import softmax
    from sklearn import metrics as skm

    X, y, _ = arrays
    y3 = y + (X[:, 2, 4] > 0.5).astype(int) * (2 - y)
    p = Probe(layers=2, classifier=clf, random_state=0).fit(X[:200], y3[:200])
    m = p.evaluate(X[200:], y3[200:])
    pred = p.predict(X[200:])
    scores = p.predict_proba(X[200:]) if clf == "logistic_regression" else softmax(p.decision_function(X[200:]), 1)
    ref = {"accuracy": skm.accuracy_score(y3[200:], pred),
           "balanced_accuracy": skm.balanced_accuracy_score(y3[200:], pred),
           "f1": skm.f1_score(y3[200:], pred, average="macro"),
           "auroc": skm.roc_auc_score(y3[200:], scores, multi_class="ovr")}
    for k, v in ref.items():
        assert m[k] == pytest.approx(v, abs=1e-9), k
    assert 0.5 < m["auroc"] <= 1
