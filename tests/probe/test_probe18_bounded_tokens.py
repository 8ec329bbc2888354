"""Token-level training in bounded memory (issue 18.1): ``Probe(train_pooling="all")`` on a
full-sequence dataset never holds the token matrix, and fits what the in-memory path fits on
the same tokens (every real token a sample with its row's label)."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

import actstore
from actstore import DatasetWriter, Probe
from actstore.probe.head import LinearHead
from actstore.probe.tokens import token_features

LAYERS = [0, 1]


def _write(path: str, n: int, dim: int, classes: int = 2, tokens: tuple[int, int] = (2, 8),
           layers: list[int] = LAYERS, seed: int = 0) -> None:
    """Rows of ``tokens`` tokens; one token of a row carries its class (the last layer)."""
    rng = np.random.default_rng(seed)
    seqs: dict[int, list[np.ndarray]] = {L: [] for L in layers}
    labels = []
    for i in range(n):
        T, lab = int(rng.integers(*tokens)), i % classes
        for L in layers:
            a = (rng.normal(size=(T, dim)) * (1 + L)).astype(np.float32)  # layers of unequal scale
            if L == layers[-1]:
                a[int(rng.integers(T)), lab] += 3.0
            seqs[L].append(a)
        labels.append(lab)
    with DatasetWriter(path, model="m", layers=layers, dim=dim, pooling="all", overwrite=True) as w:
        w.add([f"text {i}" for i in range(n)], hidden=seqs, labels=labels)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("bounded") / "ds")
    _write(path, 80, 12)
    return actstore.open_dataset(path)


def _in_memory(ds, layers, y=None, **params):
    """What fit did before the bounded path: every token in one array, then the pipeline."""
    feats, rows = token_features(ds, layers, "all")
    yv = np.asarray(ds.labels if y is None else y)
    return Probe(layers=list(layers), **params).fit(feats, yv[rows], layers=list(layers)), feats


@pytest.mark.parametrize("classifier, method", [(None, "predict_proba"), ("ridge", "decision_function"),
                                                ("lda", "predict_proba"), ("mass_mean", "predict_proba")])
def test_bounded_fit_equals_the_in_memory_fit(full, classifier, method):
    kw = {"tol": 1e-10} if classifier is None else None  # both solvers run to the same optimum
    probe = Probe(layers=LAYERS, classifier=classifier, classifier_kwargs=kw, train_pooling="all").fit(full)
    hand, X = _in_memory(full, LAYERS, classifier=classifier, classifier_kwargs=kw)
    assert isinstance(probe.pipeline_, LinearHead) and isinstance(hand.pipeline_, Pipeline)  # the two paths
    assert probe.n_train_tokens_ == X.shape[0] == full.num_tokens_total
    np.testing.assert_allclose(probe.layer_scale_, hand.layer_scale_, rtol=1e-5)
    # the in-memory pipeline fits float32 features (its L-BFGS stops at float32 precision)
    np.testing.assert_allclose(getattr(probe, method)(X, layers=LAYERS), getattr(hand, method)(X, layers=LAYERS),
                               rtol=1e-3, atol=2e-4)
    if classifier is None:  # the bounded fit is the exact optimum: scikit-learn in float64
        Xs = (X * probe.layer_scale_[None, :, None].astype(np.float32)).reshape(len(X), -1).astype(np.float64)
        exact = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-10, max_iter=1000))
        exact.fit(Xs, np.repeat(full.labels, full.column("num_tokens")))
        np.testing.assert_allclose(probe.predict_proba(X, layers=LAYERS), exact.predict_proba(Xs), atol=1e-6)
    assert hasattr(probe, "predict_proba") == hasattr(hand, "predict_proba")


def test_bounded_multiclass_and_regression_equal_in_memory(tmp_path):
    _write(str(tmp_path / "m"), 60, 6, classes=3)
    ds = actstore.open_dataset(str(tmp_path / "m"))
    kw = {"tol": 1e-10}
    probe = Probe(layers=LAYERS, classifier_kwargs=kw, train_pooling="all").fit(ds)
    hand, X = _in_memory(ds, LAYERS, classifier_kwargs=kw)
    np.testing.assert_allclose(probe.predict_proba(X, layers=LAYERS), hand.predict_proba(X, layers=LAYERS),
                               rtol=1e-3, atol=2e-4)
    y = np.linspace(-1, 2, len(ds))
    probe = Probe(layers=LAYERS, task="regression", train_pooling="all").fit(ds, y)
    hand, X = _in_memory(ds, LAYERS, y, task="regression")
    assert isinstance(probe.pipeline_, LinearHead)
    np.testing.assert_allclose(probe.predict(X, layers=LAYERS), hand.predict(X, layers=LAYERS), rtol=1e-5, atol=1e-6)


def test_settings_the_bounded_path_cannot_fit_use_the_in_memory_path(full):
    w = np.linspace(0.5, 2.0, len(full))
    weighted = Probe(layers=LAYERS, train_pooling="all").fit(full, sample_weight=w)
    svm = Probe(layers=LAYERS, classifier="linear_svm", train_pooling="all").fit(full)
    pca = Probe(layers=LAYERS, preprocessing="pca:4", train_pooling="all").fit(full)
    for probe in (weighted, svm, pca):
        assert isinstance(probe.pipeline_, Pipeline)


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("classifier", [None, "ridge"])
def test_bounded_memory_stays_well_under_the_token_matrix(tmp_path, monkeypatch, classifier):
    import actstore.probe.token_stream as token_stream

    # the batch size (4 MB by default) scaled down with the data, so a test-sized matrix
    # shows the bound: memory follows the batch, not the number of tokens
    monkeypatch.setattr(token_stream, "_CHUNK_BYTES", 1 << 18)
    dim = 128
    _write(str(tmp_path / "big"), 300, dim, tokens=(30, 50), layers=[0])
    ds = actstore.open_dataset(str(tmp_path / "big"))
    matrix = ds.num_tokens_total * dim * 4  # the float32 token matrix: ~6 MB
    kw = {"max_iter": 3} if classifier is None else None  # memory does not depend on iterations
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3 iterations do not converge, on purpose
        bounded = _peak(lambda: Probe(layers=0, classifier=classifier, classifier_kwargs=kw,
                                      train_pooling="all").fit(ds))
        before = _peak(lambda: _in_memory(ds, [0], classifier=classifier, classifier_kwargs=kw))
    assert before > matrix  # the in-memory path holds the matrix (and copies of it)
    assert bounded < matrix / 2, (bounded / 2**20, matrix / 2**20)


def test_compact_token_layout_trains_and_scores_the_same(tmp_path):
    """A dataset written with the compact token index only (lmprobe_compat=False) gives the
    same token-level probe and the same pooled scores as one with lmprobe's per-token lists."""
    rng = np.random.default_rng(3)
    seqs = [rng.normal(size=(int(rng.integers(2, 9)), 6)).astype(np.float32) for _ in range(40)]
    labels = [i % 2 for i in range(40)]
    for i, a in enumerate(seqs):
        a[0, 0] += 2.0 * labels[i]
    probes = []
    for compat in (True, False):
        path = str(tmp_path / f"c{compat}")
        with DatasetWriter(path, model="m", layers=[0], dim=6, pooling="all", lmprobe_compat=compat) as w:
            w.add([f"t{i}" for i in range(40)], hidden={0: seqs}, labels=labels)
        ds = actstore.open_dataset(path)
        probe = Probe(layers=0, train_pooling="all", inference_pooling="max").fit(ds)
        probes.append((probe, probe.predict_proba(ds)))
    (a, pa), (b, pb) = probes
    assert a.n_train_tokens_ == b.n_train_tokens_ == sum(len(s) for s in seqs)
    np.testing.assert_allclose(a._head().W, b._head().W, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(pa, pb, rtol=1e-6, atol=1e-7)


def test_a_stored_margin_head_has_no_predict_proba_and_evaluates(tmp_path):
    """A ridge probe's head (bounded token fit, or loaded from disk) scores by its margins:
    ``hasattr(probe, "predict_proba")`` is False, as for the fitted pipeline."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    Probe(layers=0, classifier="ridge").fit(X, y).save(tmp_path / "p")
    loaded = Probe.load(tmp_path / "p")
    assert not hasattr(loaded, "predict_proba")
    assert loaded.evaluate(X, y)["accuracy"] > 0.9
