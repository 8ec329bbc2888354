"""Row mode feeds probes batch-wise: statistics updated from a shuffled stream give the probes
of the in-memory fit; repeated rows and foreign streams are refused."""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore.format.writer import DatasetWriter
from actstore.probe import accumulate_statistics

LAYERS = [0, 2]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    rng = np.random.default_rng(0)
    n, dim = 400, 12
    y = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, len(LAYERS), dim)).astype(np.float32)
    X[:, :, 0] += y[:, None] * 0.8
    X[:, 1, 2] += 0.5 * X[:, 1, 3]
    path = str(tmp_path_factory.mktemp("probe") / "ds")
    with DatasetWriter(path, model="m", layers=LAYERS, dim=dim, shard_bytes=dim * 4 * 70) as w:
        w.add([f"p{i}" for i in range(n)], hidden={L: X[:, j] for j, L in enumerate(LAYERS)},
              labels=y.tolist())
    return path, X, y


def _same(streamed, memory, X) -> None:
    a, b = streamed.decision_function(X), memory.decision_function(X)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(b).max())
    np.testing.assert_array_equal(streamed.predict(X), memory.predict(X))


@pytest.mark.parametrize("numpy", [False, True])
def test_probe_fitted_from_a_shuffled_stream_equals_the_in_memory_fit(labelled, numpy):
    path, X, y = labelled
    ds = actstore.open_dataset(path)
    names = ("ridge", "lda", "mass_mean")
    stats = accumulate_statistics(ds, layers=LAYERS, classifiers=names, rows=[])
    stream = actstore.stream(ds, layers=LAYERS, batch_size=64, seed=3, block_rows=16, window=64,
                             numpy=numpy)
    first = np.concatenate([b["row"].numpy() if not numpy else b["row"] for b in stream])
    assert not np.array_equal(first, np.arange(len(y)))  # really shuffled
    stats.update(stream)
    fit = stats.finish()
    for j, L in enumerate(LAYERS):
        for c in names:
            memory = actstore.Probe(classifier=c, layers=[L]).fit(ds, y)
            _same(fit[L, c], memory, X[:, j])
    # the same statistics, batch by batch, on two "ranks" merged
    parts = []
    for rank in range(2):
        part = accumulate_statistics(ds, layers=LAYERS, classifiers=names, rows=[])
        for batch in actstore.stream(ds, layers=LAYERS, batch_size=50, rank=rank, world_size=2, numpy=numpy):
            part.update(batch)
        parts.append(part)
    merged = (parts[0] + parts[1]).finish()
    _same(merged[2, "lda"], fit[2, "lda"], X[:, 1])


def test_repeated_rows_and_foreign_streams_are_refused(labelled, tmp_path):
    path, X, y = labelled
    ds = actstore.open_dataset(path)
    stats = accumulate_statistics(ds, layers=[0], classifiers="ridge", rows=[])
    batch = next(iter(actstore.stream(ds, layers=[0], batch_size=10, seed=0)))
    stats.update(batch)
    with pytest.raises(actstore.InvalidArgumentError, match=r"Row \d+ was already added"):
        stats.update(batch)
    # 400 rows on 3 ranks: padding repeats rows across ranks; the merge refuses the overlap
    shares = [accumulate_statistics(ds, layers=[0], classifiers="ridge", rows=[]).update(
        actstore.stream(ds, layers=[0], batch_size=32, rank=r, world_size=3)) for r in range(3)]
    with pytest.raises(actstore.InvalidArgumentError, match="shared rows"):
        shares[0] + shares[1] + shares[2]
    with pytest.raises(actstore.InvalidArgumentError, match="other samples than these statistics"):
        stats.update(actstore.stream(ds.select(np.arange(200)), layers=[0], batch_size=10))
    with pytest.raises(actstore.InvalidArgumentError, match="has no 'layer_0'"):
        accumulate_statistics(ds, layers=[0], classifiers="ridge", rows=[]).update(
            actstore.stream(ds, layers=[2], batch_size=10))
    with pytest.raises(actstore.InvalidArgumentError, match="takes a stream or one of its batches"):
        stats.update([1, 2, 3])
    with pytest.raises(actstore.InvalidArgumentError, match="cover 10 of 400 rows"):
        stats.finish()
