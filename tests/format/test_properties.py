"""Properties (hypothesis): whatever the DatasetWriter accepts reads back identical.

Complements ``test_roundtrip_property.py`` (pooled views, label kinds, dtypes, gathers) with the
parts it leaves out: full-sequence storage (``tokens()`` and last-token rows across rolled shards),
top-k logits with their own shard boundaries, ``num_tokens``, and lazy views (``select`` /
``filter`` / ``iter_batches`` with a seeded shuffle) reading the same rows as a direct gather.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actstore
from actstore.format.dtypes import bf16_bits_to_f32, f32_to_bf16_bits
from actstore.format.writer import DatasetWriter

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def stored(x: np.ndarray, dtype: str) -> np.ndarray:
    """What a reader must return for ``x`` written as ``dtype`` (bf16: nearest-even rounding)."""
    if dtype == "bfloat16":
        return bf16_bits_to_f32(f32_to_bf16_bits(x))
    return x.astype(dtype)


def batches(draw, n: int) -> list[tuple[int, int]]:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, n - 1)), max_size=4)) - {n})
    return [(a, b) for a, b in zip([0, *cuts], [*cuts, n]) if a < b]


@st.composite
def full_sequence(draw):
    n = draw(st.integers(1, 12))
    return dict(
        n=n, dim=draw(st.integers(1, 8)),
        layers=draw(st.lists(st.integers(0, 20), min_size=1, max_size=3, unique=True)),
        dtype=draw(st.sampled_from(["float32", "float16", "bfloat16"])),
        lengths=draw(st.lists(st.integers(1, 7), min_size=n, max_size=n)),
        shard_rows=draw(st.integers(1, 10)), batches=batches(draw, n), seed=draw(st.integers(0, 2**16)),
    )


@SETTINGS
@given(spec=full_sequence(), probe=st.integers(0, 11))
def test_full_sequence_tokens_and_last_tokens_read_back(tmp_path_factory, spec, probe):
    n, dim, layers, dtype = spec["n"], spec["dim"], spec["layers"], spec["dtype"]
    rng = np.random.default_rng(spec["seed"])
    seqs = {L: [rng.standard_normal((t, dim)).astype(np.float32) for t in spec["lengths"]] for L in layers}
    path = str(tmp_path_factory.mktemp("full") / "ds")
    item = 4 if dtype == "float32" else 2
    with DatasetWriter(path, model="m", layers=layers, dim=dim, dtype=dtype, pooling="all",
                       shard_bytes=spec["shard_rows"] * dim * item) as w:
        for a, b in spec["batches"]:
            w.add([f"p{i}" for i in range(a, b)], hidden={L: s[a:b] for L, s in seqs.items()})
    ds = actstore.open_dataset(path)
    assert ds.info.storage == "full_sequence" and len(ds) == n
    for L in layers:
        for i in range(n):
            np.testing.assert_array_equal(ds.tokens(i, L, dtype=np.float32),
                                          stored(seqs[L][i], dtype).astype(np.float32))
        last = np.stack([s[-1] for s in seqs[L]])
        np.testing.assert_array_equal(ds.layer(L, dtype=np.float32), stored(last, dtype).astype(np.float32))
    row = probe % n
    got = ds.get([row, 0, row], layers=layers, dtype=np.float32)
    for j, L in enumerate(layers):
        np.testing.assert_array_equal(got[:, j], stored(np.stack([seqs[L][row][-1], seqs[L][0][-1],
                                                                  seqs[L][row][-1]]), dtype))
    assert ds.verify().ok


@st.composite
def pooled_with_logits(draw):
    n = draw(st.integers(1, 40))
    return dict(
        n=n, dim=draw(st.integers(1, 16)), k=draw(st.integers(1, 5)),
        layers=draw(st.lists(st.integers(0, 30), min_size=1, max_size=3, unique=True)),
        dtype=draw(st.sampled_from(["float32", "float16", "bfloat16"])),
        shard_rows=draw(st.integers(1, 12)), batches=batches(draw, n),
        num_tokens=draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n)),
        seed=draw(st.integers(0, 2**16)),
        picks=draw(st.lists(st.integers(0, 39), min_size=1, max_size=12)),
        batch_size=draw(st.integers(1, 16)),
    )


@SETTINGS
@given(spec=pooled_with_logits())
def test_logits_num_tokens_and_lazy_views_read_back(tmp_path_factory, spec):
    n, dim, k, layers, dtype = spec["n"], spec["dim"], spec["k"], spec["layers"], spec["dtype"]
    rng = np.random.default_rng(spec["seed"])
    X = {L: rng.standard_normal((n, dim)).astype(np.float32) for L in layers}
    values = rng.standard_normal((n, k)).astype(np.float32)
    indices = rng.integers(0, 2**31 - 1, (n, k))
    path = str(tmp_path_factory.mktemp("logits") / "ds")
    item = 4 if dtype == "float32" else 2
    with DatasetWriter(path, model="m", layers=layers, dim=dim, dtype=dtype, logits_k=k,
                       shard_bytes=spec["shard_rows"] * dim * item) as w:
        for a, b in spec["batches"]:
            w.add([f"p{i}" for i in range(a, b)], hidden={L: x[a:b] for L, x in X.items()},
                  labels=[i % 3 for i in range(a, b)], num_tokens=spec["num_tokens"][a:b],
                  logits_topk=(values[a:b], indices[a:b]))
    ds = actstore.open_dataset(path)
    assert ds.column("num_tokens").tolist() == spec["num_tokens"]
    got_v, got_i = ds.logits_topk()
    np.testing.assert_array_equal(got_v, values)
    np.testing.assert_array_equal(got_i, indices)
    picks = [p % n for p in spec["picks"]]
    sub_v, sub_i = ds.logits_topk(picks)
    np.testing.assert_array_equal(sub_v, values[picks])
    np.testing.assert_array_equal(sub_i, indices[picks])
    L = layers[-1]
    want = stored(X[L], dtype).astype(np.float32)
    view = ds.select(picks)  # lazy view: same rows as a direct gather, labels follow
    np.testing.assert_array_equal(view.layer(L, dtype=np.float32), want[picks])
    assert view.labels.tolist() == [p % 3 for p in picks] and view.texts == [f"p{p}" for p in picks]
    mask = np.arange(n) % 2 == 0
    np.testing.assert_array_equal(ds.filter(mask).layer(L, dtype=np.float32), want[mask])
    seen = np.zeros(n, dtype=int)
    for xb, pos in ds.iter_batches(L, batch_size=spec["batch_size"], shuffle=True, seed=spec["seed"],
                                   dtype=np.float32):
        np.testing.assert_array_equal(xb, want[pos])
        seen[pos] += 1
    assert (seen == 1).all()  # a shuffled epoch visits every row exactly once


@st.composite
def split_reads(draw):
    n = draw(st.integers(1, 60))
    return dict(
        n=n, dim=draw(st.integers(1, 12)), dtype=draw(st.sampled_from(["float32", "float16", "bfloat16"])),
        shard_rows=draw(st.integers(1, 70)), seed=draw(st.integers(0, 2**16)),
        parallel_bytes=draw(st.integers(1, 400)), convert_bytes=draw(st.integers(1, 200)),
        gather_bytes=draw(st.integers(1, 400)),
        small_bytes=draw(st.sampled_from([0, 64, 256 << 10])),
        window=draw(st.tuples(st.integers(0, 59), st.integers(1, 60))),
        picks=draw(st.lists(st.integers(0, 59), min_size=1, max_size=15)),
    )


@SETTINGS
@given(spec=split_reads())
def test_reads_split_across_threads_and_converted_in_chunks_read_back(tmp_path_factory, spec):
    """Local reads cut into threaded pieces and chunked conversions (thresholds shrunk so tiny
    datasets take those paths) return exactly what a plain read does."""
    from unittest import mock

    from actstore.format import rows

    n, dim, dtype = spec["n"], spec["dim"], spec["dtype"]
    X = np.random.default_rng(spec["seed"]).standard_normal((n, dim)).astype(np.float32)
    path = str(tmp_path_factory.mktemp("split") / "ds")
    item = 4 if dtype == "float32" else 2
    with DatasetWriter(path, model="m", layers=[2], dim=dim, dtype=dtype,
                       shard_bytes=spec["shard_rows"] * dim * item) as w:
        w.add([f"p{i}" for i in range(n)], hidden={2: X})
    want = stored(X, dtype)
    native = want if dtype == "float16" else want.astype(np.float32)
    with mock.patch.object(rows, "PARALLEL_BYTES", spec["parallel_bytes"]), \
            mock.patch.object(rows, "CONVERT_BYTES", spec["convert_bytes"]), \
            mock.patch.object(rows, "GATHER_PARALLEL_BYTES", spec["gather_bytes"]), \
            mock.patch.object(rows, "SMALL_RUN_BYTES", spec["small_bytes"]), \
            mock.patch.object(rows.os, "cpu_count", lambda: 4):
        ds = actstore.open_dataset(path)
        np.testing.assert_array_equal(ds.layer(2), native)
        np.testing.assert_array_equal(ds.layer(2, dtype=np.float32), want.astype(np.float32))
        out = np.full((n, dim), 7, dtype=native.dtype)
        assert ds.layer(2, out=out) is out
        np.testing.assert_array_equal(out, native)
        a = spec["window"][0] % n
        b = min(n, a + spec["window"][1])
        np.testing.assert_array_equal(ds.get(np.arange(a, b))[:, 0], native[a:b])
        picks = [p % n for p in spec["picks"]]
        np.testing.assert_array_equal(ds.get(picks, dtype=np.float32)[:, 0], want.astype(np.float32)[picks])
        every = np.random.default_rng(spec["seed"]).permutation(n)  # a gather of every row
        np.testing.assert_array_equal(ds.get(every, dtype=np.float32)[:, 0], want.astype(np.float32)[every])


def test_a_short_read_in_a_worker_thread_raises_in_the_caller(tmp_path, monkeypatch):
    from actstore.format import rows

    path = tmp_path / "ds"
    with DatasetWriter(str(path), model="m", layers=[0], dim=8, dtype="bfloat16") as w:
        w.add([f"p{i}" for i in range(64)], hidden={0: np.ones((64, 8), np.float32)})
    monkeypatch.setattr(rows, "PARALLEL_BYTES", 64)
    monkeypatch.setattr(rows, "CONVERT_BYTES", 32)
    monkeypatch.setattr(rows, "SMALL_RUN_BYTES", 0)
    monkeypatch.setattr(rows.os, "cpu_count", lambda: 4)
    real = rows.pread_exact
    calls = []
    size = (path / "tensors" / "hidden_layer000_shard000.safetensors").stat().st_size

    def shrunk_under_last_piece(fd, p, offset, buffer):  # the file "shrinks" under one thread
        calls.append(offset)
        if offset >= size - 32:
            offset += size  # past the end: the real short-read check fires
        return real(fd, p, offset, buffer)

    monkeypatch.setattr(rows, "pread_exact", shrunk_under_last_piece)
    ds = actstore.open_dataset(str(path))
    with pytest.raises(actstore.IntegrityError, match=r"hidden_layer000_shard000\.safetensors.*truncated"):
        ds.layer(0)
    assert len(calls) > 4  # the read really was cut into several pieces
