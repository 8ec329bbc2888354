"""Streamed multinomial logistic regression equals scikit-learn's in-memory fit; bf16 shards
are widened block by block and fit like the in-memory probe."""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore.format.writer import DatasetWriter


def _write(path: str, X: np.ndarray, y: np.ndarray, dtype: str = "float32") -> str:
    with DatasetWriter(path, model="synthetic", layers=[0, 1], dim=X.shape[2], dtype=dtype,
                       shard_bytes=X.shape[2] * 4 * 90) as w:
        w.add([f"p{i}" for i in range(len(X))], hidden={L: X[:, L] for L in (0, 1)}, labels=y.tolist())
    return path


def _data(n: int = 360, dim: int = 7, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    X = rng.normal(size=(n, 2, dim))
    X[:, :, 0] += y[:, None] * 0.9
    X[:, :, 1] -= (y[:, None] == 1) * 1.1
    X[:, :, 2] *= 4.0
    return (X + 3.0).astype(np.float32), y


@pytest.mark.parametrize("cv", [None, 3])
def test_multinomial_logistic_matches_scikit_learn(tmp_path, cv):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X, y = _data(classes=4)
    ds = actstore.open_dataset(_write(str(tmp_path / "ds"), X, y))
    fit = actstore.fit_streaming(ds, layers=[0, 1], classifiers=("logistic_regression", "lda"), block_rows=50,
                                 cv=cv, seed=1, classifier_kwargs={"logistic_regression": {"C": 0.3}})
    for L in (0, 1):
        sets = [np.arange(len(y))] if cv is None else [tr for tr, _ in fit.folds]
        probes = [fit[L, "logistic_regression"]] if cv is None else fit.fold_probes[L, "logistic_regression"]
        for rows, probe in zip(sets, probes):
            Xl = X[rows, L].astype(np.float64)
            sc = StandardScaler().fit(Xl)
            ref = LogisticRegression(C=0.3, tol=1e-12, max_iter=10_000).fit(sc.transform(Xl), y[rows])
            W = probe.pipeline_.W  # (d, K) on raw features
            assert W.shape == (7, 4)
            np.testing.assert_allclose(W.T * sc.scale_, ref.coef_, atol=1e-4)
            assert abs(probe.score(X[:, L], y) - ref.score(sc.transform(X[:, L]), y)) <= 1e-3
            np.testing.assert_allclose(probe.predict_proba(X[:, L]), ref.predict_proba(sc.transform(X[:, L])),
                                       atol=1e-4)
            mem = actstore.Probe(classifier="logistic_regression", layers=[L],
                                 classifier_kwargs={"C": 0.3}).fit(X[rows][:, [L]], y[rows], layers=[L])
            assert abs(probe.score(X[:, L], y) - mem.score(X[:, L], y)) <= 1e-3


def test_bfloat16_shards_fit_like_the_in_memory_probe(tmp_path):
    X, y = _data(n=300, classes=2, seed=3)
    ds = actstore.open_dataset(_write(str(tmp_path / "ds"), X, y, dtype="bfloat16"))
    fit = actstore.fit_streaming(ds, layers="all", classifiers=("ridge", "lda", "mass_mean", "logistic_regression"),
                                 block_rows=64)
    Xb = np.stack([ds.layer(L, dtype=np.float32) for L in (0, 1)], axis=1)  # the exact bf16 values
    assert not np.array_equal(Xb, X)  # they are rounded: the fit must see the stored values
    for (L, c), probe in fit.probes.items():
        mem = actstore.Probe(classifier=c, layers=[L]).fit(ds)
        a, b = probe.decision_function(Xb[:, L]), mem.decision_function(Xb[:, L])
        tol = 1e-3 if c == "logistic_regression" else 1e-6
        np.testing.assert_allclose(a, b, atol=tol * np.abs(b).max())
