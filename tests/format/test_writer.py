"""DatasetWriter: round trips, streaming shards, the commit rule, overwrite rules."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

import actstore
from actstore.format.dtypes import bf16_bits_to_f32, f32_to_bf16_bits
from actstore.format.writer import DatasetWriter

LAYERS = [0, 3, 5]


def _data(n: int, dim: int, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {L: rng.standard_normal((n, dim)).astype(np.float32) for L in LAYERS}


def _index_meta(path: str) -> dict:
    schema = pq.read_schema(os.path.join(path, "index/train-00000-of-00001.parquet"))
    return {k.decode(): json.loads(v) for k, v in schema.metadata.items()}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_round_trip_every_dtype_across_batches_and_shards(tmp_path, dtype):
    hidden = _data(50, 16)
    with DatasetWriter(str(tmp_path / "ds"), model="org/m", layers=LAYERS, dim=16, dtype=dtype,
                       shard_bytes=16 * 4 * 7) as w:
        for a, b in [(0, 13), (13, 14), (14, 50)]:
            w.add([f"p{i}" for i in range(a, b)], hidden={L: x[a:b] for L, x in hidden.items()},
                  labels=list(range(a, b)))
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    assert len(ds) == 50 and ds.info.dtype == dtype and ds.info.layers == tuple(LAYERS)
    for L in LAYERS:
        if dtype == "bfloat16":
            expected = bf16_bits_to_f32(f32_to_bf16_bits(hidden[L]))
        else:
            expected = hidden[L].astype(dtype)
        np.testing.assert_array_equal(ds.layer(L), expected)
    np.testing.assert_array_equal(ds.labels, np.arange(50))
    # the metadata's dtype is the shards' dtype, always
    meta = _index_meta(str(tmp_path / "ds"))
    assert meta["lmprobe:tensors"]["hidden_layers"]["dtype"] == dtype
    assert len(meta["lmprobe:tensors"]["hidden_layers"]["shards"]) > 1


def test_bf16_rounding_is_nearest_even_and_reads_back_exactly(tmp_path):
    torch = pytest.importorskip("torch")
    x = torch.randn(20, 8)
    with DatasetWriter(str(tmp_path / "d"), model="m", layers=[0], dim=8, dtype="bfloat16") as w:
        w.add([str(i) for i in range(20)], hidden={0: x})
    ds = actstore.open_dataset(str(tmp_path / "d"))
    assert ds.torch(0).dtype == torch.bfloat16
    assert torch.equal(ds.torch(0), x.to(torch.bfloat16))
    np.testing.assert_array_equal(ds.layer(0), x.to(torch.bfloat16).float().numpy())


def test_each_file_has_size_and_sha256_and_verify_passes(tmp_path):
    path = str(tmp_path / "ds")
    with DatasetWriter(path, model="m", layers=LAYERS, dim=8, shard_bytes=64, logits_k=3) as w:
        w.add([str(i) for i in range(10)], hidden=_data(10, 8),
              logits_topk=(np.ones((10, 3)), np.arange(30).reshape(10, 3)))
    files = _index_meta(path)["actstore:files"]
    on_disk = {
        os.path.relpath(os.path.join(d, f), path).replace(os.sep, "/")
        for d, _, fs in os.walk(os.path.join(path, "tensors")) for f in fs
    }
    assert set(files) == on_disk
    assert all(os.path.getsize(os.path.join(path, p)) == rec["size"] for p, rec in files.items())
    assert actstore.open_dataset(path).verify().ok


def test_num_rows_hint_gives_identical_bytes(tmp_path):
    data = _data(30, 8)
    for name, hint in [("a", None), ("b", 30)]:
        with DatasetWriter(str(tmp_path / name), model="m", layers=LAYERS, dim=8,
                           shard_bytes=8 * 4 * 8, num_rows=hint) as w:
            w.add([str(i) for i in range(30)], hidden=data)
    fa = _index_meta(str(tmp_path / "a"))["actstore:files"]
    fb = _index_meta(str(tmp_path / "b"))["actstore:files"]
    assert fa == fb


def test_exception_inside_with_leaves_nothing_readable(tmp_path):
    path = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="boom"):
        with DatasetWriter(str(path), model="m", layers=LAYERS, dim=8, shard_bytes=64) as w:
            w.add([str(i) for i in range(20)], hidden=_data(20, 8))
            raise RuntimeError("boom")
    assert not (path / "index").exists()
    leftovers = [f for _, _, fs in os.walk(path) for f in fs]
    assert leftovers == []
    with pytest.raises(actstore.DatasetNotFoundError, match="index"):
        actstore.open_dataset(str(path))


def test_refuses_to_overwrite_unless_asked_and_removes_stale_shards(tmp_path):
    path = str(tmp_path / "ds")
    with DatasetWriter(path, model="m", layers=LAYERS, dim=8, shard_bytes=32) as w:
        w.add([str(i) for i in range(10)], hidden=_data(10, 8))
    with pytest.raises(actstore.DatasetExistsError, match="overwrite=True"):
        DatasetWriter(path, model="m", layers=LAYERS, dim=8)
    with DatasetWriter(path, model="m2", layers=[0], dim=8, overwrite=True) as w:
        w.add(["x"], hidden={0: np.zeros((1, 8))})
    ds = actstore.open_dataset(path)
    assert ds.info.model == "m2" and len(ds) == 1
    assert sorted(os.listdir(os.path.join(path, "tensors"))) == ["hidden_layer000_shard000.safetensors"]


def test_views_labels_metadata_and_logits(tmp_path):
    path = str(tmp_path / "ds")
    h, m = _data(6, 4, 1), _data(6, 4, 2)
    with DatasetWriter(path, model="m", layers=LAYERS, dim=4, pooling=["last_token", "mean"],
                       logits_k=2, revision="abc123", extraction={"max_length": 8}) as w:
        w.add(list("abcdef"), hidden=h, views={"mean": m}, labels=[True, False] * 3,
              metadata=[{"source": "x", "score": i / 2} for i in range(6)], num_tokens=[3] * 6,
              logits_topk=(np.full((6, 2), 0.5), np.arange(12).reshape(6, 2)))
    ds = actstore.open_dataset(path)
    assert ds.info.views == ("last_token", "mean") and ds.info.revision == "abc123"
    assert ds.info.extraction == {"max_length": 8}
    np.testing.assert_array_equal(ds.layer(3, view="mean"), m[3])
    np.testing.assert_array_equal(ds.labels, [True, False] * 3)
    assert ds.column("score").tolist() == [0, 0.5, 1, 1.5, 2, 2.5]
    assert ds.column("num_tokens").tolist() == [3] * 6
    values, indices = ds.logits_topk([5, 0])
    np.testing.assert_array_equal(indices, [[10, 11], [0, 1]])
    with pytest.raises(actstore.LayerNotFoundError, match="mean"):
        ds.layer(3, view="max")


def test_float_labels_for_regression_and_string_labels(tmp_path):
    for labels, kind in [([0.5, 1.25], "float"), (["yes", "no"], "str")]:
        path = str(tmp_path / kind)
        with DatasetWriter(path, model="m", layers=[0], dim=2) as w:
            w.add(["a", "b"], hidden={0: np.ones((2, 2))}, labels=labels)
        ds = actstore.open_dataset(path)
        assert ds.labels.tolist() == labels and ds.info.labels["kind"] == kind


def test_full_sequence_storage_keeps_last_tokens_separate(tmp_path):
    rng = np.random.default_rng(3)
    lengths = [1, 4, 2, 7, 3]
    seqs = {L: [rng.standard_normal((n, 4)).astype(np.float32) for n in lengths] for L in LAYERS}
    path = str(tmp_path / "full")
    with DatasetWriter(path, model="m", layers=LAYERS, dim=4, pooling=["all", "mean"],
                       shard_bytes=4 * 4 * 5) as w:
        w.add([f"t{i}" for i in range(5)], hidden=seqs,
              views={"mean": {L: np.stack([s.mean(0) for s in v]) for L, v in seqs.items()}})
    ds = actstore.open_dataset(path)
    assert ds.info.storage == "full_sequence"
    for L in LAYERS:
        np.testing.assert_array_equal(ds.layer(L), np.stack([s[-1] for s in seqs[L]]))
        for i in range(5):
            np.testing.assert_array_equal(ds.tokens(i, L), seqs[L][i])
    assert ds.column("num_tokens").tolist() == lengths
    assert ds.verify().ok


def test_memory_filesystem_round_trip():
    data = _data(12, 8, 4)
    with DatasetWriter("memory://actstore-test/ds", model="m", layers=LAYERS, dim=8,
                       shard_bytes=100, overwrite=True) as w:
        w.add([str(i) for i in range(12)], hidden=data, labels=[0, 1] * 6)
    ds = actstore.open_dataset("memory://actstore-test/ds")
    np.testing.assert_array_equal(ds.get([11, 0], layers=[5])[:, 0], data[5][[11, 0]])
    assert ds.verify().ok


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(actstore.InvalidArgumentError, match="'fp8'"):
        DatasetWriter(str(tmp_path / "a"), model="m", layers=[0], dim=4, dtype="fp8")
    with pytest.raises(actstore.InvalidArgumentError, match=r"\[1\] more than once"):
        DatasetWriter(str(tmp_path / "b"), model="m", layers=[1, 1], dim=4)
    with DatasetWriter(str(tmp_path / "c"), model="m", layers=[0, 1], dim=4) as w:
        with pytest.raises(actstore.LayerNotFoundError, match=r"missing \[1\]"):
            w.add(["a"], hidden={0: np.ones((1, 4))})
        with pytest.raises(actstore.InvalidArgumentError, match=r"labels has 2 entries but texts has 1"):
            w.add(["a"], hidden={0: np.ones((1, 4)), 1: np.ones((1, 4))}, labels=[0, 1])
        with pytest.raises(actstore.InvalidArgumentError, match=r"shape \(1, 3\)"):
            w.add(["a"], hidden={0: np.ones((1, 3)), 1: np.ones((1, 3))})
        with pytest.raises(actstore.InvalidArgumentError, match=r"hidden\[1\] holds NaN"):
            w.add(["a"], hidden={0: np.ones((1, 4)), 1: np.full((1, 4), np.nan)})
        w.add(["ok"], hidden={0: np.ones((1, 4)), 1: np.ones((1, 4))})
    assert len(actstore.open_dataset(str(tmp_path / "c"))) == 1
