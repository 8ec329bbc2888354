"""Bad input to a streaming fit is refused with a clear ActstoreError, before reading where it
can be known up front."""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore.format.writer import DatasetWriter


def _ds(tmp_path, n: int = 90, dim: int = 6, labels=None, nan_row: int | None = None, nan_layer: int = 1):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 2, dim)).astype(np.float32)
    if nan_row is not None:
        X[nan_row, nan_layer, 3] = np.inf if nan_row % 2 else np.nan
    labels = list(rng.integers(0, 2, size=n)) if labels is None else labels
    path = str(tmp_path / "ds")
    with DatasetWriter(path, model="synthetic", layers=[0, 1], dim=dim, shard_bytes=dim * 4 * 40,
                       check_finite=False) as w:
        w.add([f"p{i}" for i in range(n)], hidden={L: X[:, L] for L in (0, 1)}, labels=[int(v) for v in labels])
    return actstore.open_dataset(path)


class _Reads:
    """Counts ``ds.get`` calls: a refusal made up front reads nothing."""

    def __init__(self, ds, monkeypatch) -> None:
        self.calls = 0
        real = ds.get

        def get(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(ds, "get", get)


def test_nan_in_a_block_names_row_and_layer(tmp_path):
    ds = _ds(tmp_path, nan_row=57, nan_layer=1)
    with pytest.raises(actstore.InvalidArgumentError, match=r"Row 57 .*layer 1.*rows 40-59") as err:
        actstore.fit_streaming(ds, layers="all", block_rows=20)
    assert isinstance(err.value, actstore.ActstoreError)
    ds = _ds(tmp_path / "b", nan_row=3, nan_layer=0)  # inf too
    with pytest.raises(actstore.InvalidArgumentError, match="Row 3 holds NaN or infinite"):
        actstore.fit_streaming(ds, layers=[0], classifiers="ridge")
    # a layer without the bad value fits
    assert actstore.fit_streaming(ds, layers=[1], classifiers="ridge")[1, "ridge"] is not None


def test_missing_labels_refused_before_reading(tmp_path, monkeypatch):
    ds = _ds(tmp_path)
    reads = _Reads(ds, monkeypatch)
    y = np.asarray(ds.labels, dtype=float)
    y[[5, 9]] = np.nan
    with pytest.raises(actstore.InvalidArgumentError, match="2 NaN"):
        actstore.fit_streaming(ds, y)
    with pytest.raises(actstore.InvalidArgumentError, match="missing values"):
        actstore.fit_streaming(ds, np.array(["a", None] * 45, dtype=object))
    with pytest.raises(actstore.InvalidArgumentError, match=r"expected \(90,\)"):
        actstore.fit_streaming(ds, np.zeros(89))
    assert reads.calls == 0


def test_classes_with_one_row(tmp_path, monkeypatch):
    labels = [0] * 50 + [1] * 39 + [2]  # class 2 has one row
    ds = _ds(tmp_path, labels=labels)
    reads = _Reads(ds, monkeypatch)
    with pytest.raises(actstore.InvalidArgumentError, match="Class '?2'? has 1 row.*LDA needs at least two"):
        actstore.fit_streaming(ds, classifiers=("ridge", "lda"))
    with pytest.raises(actstore.InvalidArgumentError, match="Class '?2'? has 1 row.*all in fold"):
        actstore.fit_streaming(ds, classifiers="ridge", cv=3)
    with pytest.raises(actstore.InvalidArgumentError, match="only one class"):
        actstore.fit_streaming(ds, np.zeros(90, dtype=int), classifiers="ridge")
    assert reads.calls == 0
    # ridge without folds is well defined with a one-row class, as in memory
    fit = actstore.fit_streaming(ds, classifiers="ridge", layers=[0])
    mem = actstore.Probe(classifier="ridge", layers=[0]).fit(ds)
    X = ds.get(np.arange(90), layers=[0])[:, 0]
    np.testing.assert_allclose(fit[0, "ridge"].decision_function(X), mem.decision_function(X), atol=1e-6)


def test_dimension_too_large_for_the_memory_budget_refused_up_front(tmp_path, monkeypatch):
    ds = _ds(tmp_path, dim=64)
    reads = _Reads(ds, monkeypatch)
    with pytest.raises(actstore.InvalidArgumentError, match=r"memory_budget=1 MiB.*PCA") as err:
        actstore.fit_streaming(ds, layers="all", memory_budget="1M", cv=5)
    assert "64 x 64" in str(err.value) and "fewer layers" in str(err.value)
    assert reads.calls == 0
    with pytest.raises(actstore.InvalidArgumentError, match="byte count"):
        actstore.fit_streaming(ds, memory_budget="lots")
    # a budget that holds the pass is fine
    assert actstore.fit_streaming(ds, layers=[0], classifiers="ridge", memory_budget="64M")[0, "ridge"] is not None
    assert reads.calls > 0
