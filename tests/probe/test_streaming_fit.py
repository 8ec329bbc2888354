"""fit_streaming: one pass over the rows, every layer, the same probes as the in-memory fit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import actstore
from actstore.format.writer import DatasetWriter
from actstore.probe.sweep import make_folds

LAYERS = [0, 1, 2]


def write(path: str, X: np.ndarray, labels: list | None = None, metadata: dict | None = None,
          shard_rows: int = 70, layers: list | None = None, check_finite: bool = True) -> str:
    layers = layers or LAYERS
    dim = X.shape[2]
    with DatasetWriter(path, model="synthetic", layers=layers, dim=dim, shard_bytes=dim * 4 * shard_rows,
                       check_finite=check_finite) as w:
        w.add([f"p{i}" for i in range(len(X))], hidden={L: X[:, j] for j, L in enumerate(layers)},
              labels=labels, metadata=metadata)
    return path


def data(n: int = 260, dim: int = 12, classes: int = 2, offset: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    X = rng.normal(size=(n, len(LAYERS), dim))
    X[:, :, 0] += y[:, None] * 0.8
    X[:, :, 1] *= 3.0
    X[:, 1, 2] += 0.5 * X[:, 1, 3]  # correlated features
    return (X + offset).astype(np.float32), y


def assert_same(streamed, memory, X) -> None:
    a, b = streamed.decision_function(X), memory.decision_function(X)
    scale = np.abs(b).max()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * scale)
    np.testing.assert_array_equal(streamed.predict(X), memory.predict(X))


@pytest.mark.parametrize("classes", [2, 3])
def test_streamed_probes_equal_the_in_memory_fit(tmp_path, classes):
    X, y = data(classes=classes)
    ds = actstore.open_dataset(write(str(tmp_path / "ds"), X, labels=y.tolist()))
    clfs = ("ridge", "lda", "mass_mean") if classes == 2 else ("ridge", "lda")
    fit = actstore.fit_streaming(ds, layers="all", classifiers=clfs, block_rows=37)
    assert sorted(fit.probes) == sorted((L, c) for L in LAYERS for c in clfs)
    for (L, c), probe in fit.probes.items():
        mem = actstore.Probe(classifier=c, layers=[L]).fit(ds)
        assert_same(probe, mem, X[:, L])
        assert probe.layers_ == [L] and list(probe.classes_) == list(mem.classes_)
        if c != "ridge":
            np.testing.assert_allclose(probe.predict_proba(X[:, L]), mem.predict_proba(X[:, L]), atol=1e-6)
        # a streamed probe reads the dataset and saves/loads like any other
        np.testing.assert_array_equal(probe.predict(ds), mem.predict(ds))
        probe.save(str(tmp_path / f"p{L}{c}"))
        back = actstore.Probe.load(str(tmp_path / f"p{L}{c}"))
        np.testing.assert_allclose(back.decision_function(X[:, L]), probe.decision_function(X[:, L]), atol=1e-12)


@pytest.mark.parametrize("offset", [1e4, 1e6])
def test_large_mean_offset_keeps_precision(tmp_path, offset):
    # features offset + N(0, 1): X^T X - n mean mean^T loses ~2 log10(offset) digits (at 1e6
    # its scatter is off by ~3e-4 relative), centred Chan merges lose none
    X, y = data(n=400, dim=8, offset=offset, seed=3)
    ds = actstore.open_dataset(write(str(tmp_path / "ds"), X, labels=y.tolist()))
    fit = actstore.fit_streaming(ds, layers=[0, 2], block_rows=64)
    for L in (0, 2):
        for c in ("ridge", "lda", "mass_mean"):
            assert_same(fit[L, c], actstore.Probe(classifier=c, layers=[L]).fit(ds), X[:, L])


def test_merged_statistics_equal_two_pass_float64():
    from actstore.probe.streaming_stats import block_moments as _block_moments
    from actstore.probe.streaming_stats import empty as _empty

    rng = np.random.default_rng(4)
    X = 1e6 + rng.normal(size=(1000, 5)) * np.array([1, 2, 3, 0.1, 10])
    m = _empty(5, False)
    for start in range(0, 1000, 77):
        m.merge(_block_moments(X[start:start + 77], None))
    C = X - X.mean(0)
    np.testing.assert_allclose(m.mean, X.mean(0), rtol=1e-14)
    np.testing.assert_allclose(m.M, C.T @ C, rtol=1e-9, atol=1e-9 * np.abs(C.T @ C).max())


def test_label_column_regression_and_alpha(tmp_path):
    X, _ = data(n=200, dim=10, seed=5)
    score = (X[:, 1, 4] * 2.0 + 0.05 * np.random.default_rng(1).normal(size=200)).astype(float)
    ds = actstore.open_dataset(write(str(tmp_path / "ds"), X, metadata={"score": score.tolist()}))
    fit = actstore.fit_streaming(ds, "score", layers=[1, -1], classifiers="ridge", task="regression",
                                 block_rows=45, classifier_kwargs={"ridge": {"alpha": 3.0}})
    for L in (1, 2):
        mem = actstore.Probe(classifier="ridge", task="regression", layers=[L],
                             classifier_kwargs={"alpha": 3.0}).fit(ds, "score")
        np.testing.assert_allclose(fit[L, "ridge"].predict(X[:, L]), mem.predict(X[:, L]),
                                   atol=1e-6 * np.abs(mem.predict(X[:, L])).max())
    assert fit[1, "ridge"].score(ds, "score") > 0.9


def test_cv_folds_from_the_same_pass(tmp_path):
    X, y = data(n=240, dim=9, seed=7)
    ds = actstore.open_dataset(write(str(tmp_path / "ds"), X, labels=y.tolist()))
    fit = actstore.fit_streaming(ds, layers=[2], cv=4, seed=11, block_rows=50)
    folds = make_folds(y, 4, "classification", 11, None)
    assert len(fit.folds) == 4
    for (tr, va), (tr2, va2) in zip(folds, fit.folds):
        np.testing.assert_array_equal(tr, tr2)
        np.testing.assert_array_equal(va, va2)
    for c in ("ridge", "lda", "mass_mean"):
        for k, (tr, _) in enumerate(folds):
            mem = actstore.Probe(classifier=c, layers=[2]).fit(X[tr][:, [2]], y[tr], layers=[2])
            assert_same(fit.fold_probes[2, c][k], mem, X[:, 2])


def test_each_shard_byte_read_once(tmp_path, monkeypatch):
    import os

    import fsspec

    from actstore.format import source

    X, y = data(n=300, dim=16, seed=2)
    path = write(str(tmp_path / "ds"), X, labels=y.tolist(), shard_rows=64)
    mem, root = fsspec.filesystem("memory"), f"/stream-{os.getpid()}"
    mem.put(path, root, recursive=True)
    ds = actstore.open_dataset(f"memory://{root}", cache=False)
    reads: dict[str, np.ndarray] = {}
    real = source.FsspecSource.read_ranges

    def counting(self, p, ranges):
        if p.endswith(".safetensors"):
            hits = reads.setdefault(p, np.zeros(mem.size(self._full(p)), dtype=np.int64))
            for start, end in ranges:
                if start > 0:  # the reader's header probe (offset 0, once per shard) aside
                    hits[start:end] += 1
        return real(self, p, ranges)

    monkeypatch.setattr(source.FsspecSource, "read_ranges", counting)
    try:
        actstore.fit_streaming(ds, layers="all", block_rows=50)
    finally:
        mem.rm(root, recursive=True)
    assert len(reads) == len(LAYERS) * 5  # 300 rows in shards of 64 rows, per layer
    assert max(int(h.max()) for h in reads.values()) == 1  # no byte twice
    # and every row of every layer once: the tensor bytes, nothing else
    assert sum(int(h.sum()) for h in reads.values()) == 300 * 16 * 4 * len(LAYERS)


def test_bad_input_refused(tmp_path):
    X, y = data(n=60, dim=4, classes=3)
    X[17, 1, 2] = np.nan
    ds = actstore.open_dataset(write(str(tmp_path / "ds"), X, labels=y.tolist(), check_finite=False))
    with pytest.raises(actstore.InvalidArgumentError, match="Row 17"):
        actstore.fit_streaming(ds, layers=[1], classifiers=("ridge",))
    with pytest.raises(actstore.InvalidArgumentError, match="binary"):
        actstore.fit_streaming(ds, layers=[0], classifiers=("mass_mean",))
    with pytest.raises(actstore.InvalidArgumentError, match="linear_svm"):
        actstore.fit_streaming(ds, layers=[0], classifiers=("linear_svm",))
    with pytest.raises(actstore.InvalidArgumentError, match="unsupported options"):
        actstore.fit_streaming(ds, layers=[0], classifiers="ridge", classifier_kwargs={"ridge": {"solver": "svd"}})
    with pytest.raises(actstore.InvalidArgumentError, match="block_rows"):
        actstore.fit_streaming(ds, layers=[0], block_rows=0)


_MEMORY = textwrap.dedent("""
    import json, sys, tracemalloc
    import numpy as np
    import actstore
    ds = actstore.open_dataset(sys.argv[1])
    y = np.asarray(ds.labels)
    actstore.fit_streaming(ds, y, layers="all", block_rows=1024)  # warm imports and caches
    tracemalloc.start()
    actstore.fit_streaming(ds, y, layers="all", block_rows=1024)
    print(json.dumps({"peak": tracemalloc.get_traced_memory()[1]}))
""")


def test_peak_memory_does_not_grow_with_rows(tmp_path):
    dim, peaks = 64, {}
    rng = np.random.default_rng(0)
    for n in (20_000, 80_000):
        path = str(tmp_path / f"ds{n}")
        with DatasetWriter(path, model="synthetic", layers=LAYERS, dim=dim, shard_bytes=dim * 4 * 8192) as w:
            for start in range(0, n, 10_000):
                X = rng.normal(size=(10_000, dim)).astype(np.float32)
                w.add([f"p{i}" for i in range(start, start + 10_000)], hidden={L: X for L in LAYERS},
                      labels=(X[:, 0] > 0).astype(int).tolist())
        out = subprocess.run([sys.executable, "-c", _MEMORY, path], capture_output=True, text=True, check=True)
        peaks[n] = json.loads(out.stdout.strip().splitlines()[-1])["peak"]
    one_layer_80k = 80_000 * dim * 4
    # 4x the rows: the statistics and one block stay the same size
    assert peaks[80_000] < 1.25 * peaks[20_000] + 2**20, peaks
    assert peaks[80_000] < one_layer_80k, peaks


@pytest.mark.parametrize("cv", [None, 3])
def test_streamed_logistic_regression_matches_scikit_learn(tmp_path, cv):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X, y = data(n=300, dim=6, seed=9)
    ds = actstore.open_dataset(write(str(tmp_path / "ds"), X, labels=y.tolist()))
    fit = actstore.fit_streaming(ds, layers=[1], classifiers=("logistic_regression", "ridge"), block_rows=64,
                                 cv=cv, seed=2, classifier_kwargs={"logistic_regression": {"C": 0.5}})
    sets = [np.arange(300)] if cv is None else [tr for tr, _ in fit.folds]
    probes = [fit[1, "logistic_regression"]] if cv is None else fit.fold_probes[1, "logistic_regression"]
    for rows, probe in zip(sets, probes):
        Xl = X[rows, 1].astype(np.float64)
        sc = StandardScaler().fit(Xl)
        ref = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit(sc.transform(Xl), y[rows])
        coef_z = probe.pipeline_.W[:, 0] * sc.scale_  # the streamed weights on standardised features
        np.testing.assert_allclose(coef_z, ref.coef_[0], atol=1e-4)
        mem = actstore.Probe(classifier="logistic_regression", layers=[1],
                             classifier_kwargs={"C": 0.5}).fit(X[rows][:, [1]], y[rows], layers=[1])
        assert abs(probe.score(X[:, 1], y) - mem.score(X[:, 1], y)) <= 1e-3
        np.testing.assert_allclose(probe.predict_proba(X[:, 1]), mem.predict_proba(X[:, 1]), atol=1e-3)


@pytest.mark.hub
def test_streaming_over_the_hub_fetches_each_byte_once(hub, tmp_path):
    import os
    import uuid

    from actstore.cache import UnifiedCache

    X, y = data(n=3000, dim=32, seed=6)
    path = write(str(tmp_path / "ds"), X, labels=y.tolist(), shard_rows=1000)
    repo = f"team/stream-{uuid.uuid4().hex[:8]}"
    actstore.push_dataset(path, repo, token="hf_test_write", endpoint=hub.endpoint, progress=False)
    hub.reset_counters()
    lazy = actstore.open_dataset(f"hf://datasets/{repo}", cache=UnifiedCache(tmp_path / "cache"),
                                 storage_options={"token": "hf_test_write", "endpoint": hub.endpoint})
    fit = actstore.fit_streaming(lazy, layers="all", block_rows=700)
    tensors = sum(os.path.getsize(os.path.join(path, "tensors", f)) for f in os.listdir(os.path.join(path, "tensors")))
    served = hub.bytes_served(repo, "tensors/")
    assert 3000 * 32 * 4 * len(LAYERS) <= served <= 1.05 * tensors
    local = actstore.fit_streaming(actstore.open_dataset(path), layers="all", block_rows=700)
    for key, probe in fit.probes.items():
        np.testing.assert_array_equal(probe.pipeline_.W, local[key].pipeline_.W)
