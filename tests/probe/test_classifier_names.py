"""lmprobe's classifier names and defaults, and sample weights for mass-mean."""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore.probe.classifiers import MassMeanProbe, make_estimator


def _data(n=300, d=12, seed=0, classes=2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = rng.standard_normal((n, d)) + 1.5 * np.eye(d)[y % d]
    return X.astype(np.float32), y


@pytest.mark.parametrize("name", ["svm", "logistic_regression_cv", "sgd", "ridge"])
def test_named_classifiers_fit_predict_save_and_load(name, tmp_path):
    X, y = _data()
    probe = actstore.Probe(layers=0, classifier=name, random_state=0).fit(X, y)
    assert probe.score(X, y) > 0.8
    probe.save(tmp_path / name)
    loaded = actstore.Probe.load(tmp_path / name)
    assert (loaded.predict(X) == probe.predict(X)).all()
    assert not list((tmp_path / name).glob("*.pkl"))


def test_ridge_regression_name_and_regression_default():
    X, _ = _data()
    target = X[:, 0] * 2.0 + 0.1
    est = make_estimator(None, "regression", None, 0)
    assert type(est).__name__ == "Ridge"
    assert type(make_estimator(None, "classification", None, 0)).__name__ == "LogisticRegression"
    probe = actstore.Probe(layers=0, classifier="ridge_regression", task="regression").fit(X, target)
    assert probe.score(X, target) > 0.99
    with pytest.raises(actstore.InvalidArgumentError, match="ridge_regression"):
        actstore.Probe(layers=0, classifier="ridge_regression").fit(X, (target > 0).astype(int))


def test_svm_probabilities_in_memory():
    X, y = _data()
    probe = actstore.Probe(layers=0, classifier="svm", random_state=0).fit(X, y)
    p = probe.predict_proba(X)
    assert p.shape == (len(X), 2) and np.allclose(p.sum(1), 1)


def test_mass_mean_sample_weight_equals_repeating_rows():
    X, y = _data(n=120, d=6)
    w = np.random.default_rng(1).integers(0, 4, len(X)).astype(float)
    for cov in (False, True):
        weighted = MassMeanProbe(covariance=cov).fit(X, y, sample_weight=w)
        repeated = MassMeanProbe(covariance=cov).fit(np.repeat(X, w.astype(int), 0), np.repeat(y, w.astype(int)))
        np.testing.assert_allclose(weighted.coef_, repeated.coef_, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(weighted.intercept_, repeated.intercept_, rtol=1e-6, atol=1e-9)


def test_mass_mean_sample_weight_bad_input():
    X, y = _data(n=50, d=4)
    with pytest.raises(actstore.InvalidArgumentError, match="50 finite non-negative"):
        MassMeanProbe().fit(X, y, sample_weight=np.ones(3))
    with pytest.raises(actstore.InvalidArgumentError, match="total weight of 0"):
        MassMeanProbe().fit(X, y, sample_weight=(y == 1).astype(float))
