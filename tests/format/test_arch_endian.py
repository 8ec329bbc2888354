"""Shards are little-endian whatever the host or the caller's byte order (safetensors' rule).

Big-endian input arrays (``arr.astype(">f4")``, as a big-endian host makes natively) must
reach the disk as little-endian bytes and read back equal, through every writing path.
"""

from __future__ import annotations

import hashlib
import json
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

import actstore
from actstore import DatasetWriter
from actstore.format.shardfile import StreamingTensorFile, write_tensor_file


def _data(path: Path) -> tuple[dict, bytes]:
    blob = path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def test_write_tensor_file_stores_big_endian_input_little_endian(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    ids = np.arange(6, dtype=np.int32).reshape(3, 2) * 1000
    path = tmp_path / "t.safetensors"
    write_tensor_file(str(path), [("v", "F32", values.astype(">f4")), ("i", "I32", ids.astype(">i4"))])
    _, data = _data(path)
    assert data == values.astype("<f4").tobytes() + ids.astype("<i4").tobytes()
    back = load_file(str(path))  # the reference reader agrees
    np.testing.assert_array_equal(back["v"], values)
    np.testing.assert_array_equal(back["i"], ids)


def test_streaming_tensor_file_stores_big_endian_blocks_little_endian(tmp_path):
    X = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    path = tmp_path / "s.safetensors"
    with ThreadPoolExecutor(max_workers=1) as pool:
        f = StreamingTensorFile(str(path), key="hidden.layer_0", dtype="F32", dim=4, planned_rows=6, hasher=pool)
        f.append(X[:3].astype(">f4"))
        f.append(X[3:].astype(">f4"))
        size, sha = f.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha  # the hash is of the bytes on disk
    _, data = _data(path)
    assert data == X.astype("<f4").tobytes()
    np.testing.assert_array_equal(load_file(str(path))["hidden.layer_0"], X)


def test_dataset_writer_big_endian_inputs_round_trip_little_endian(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((5, 4)).astype(np.float32)
    vals = rng.standard_normal((5, 2)).astype(np.float32)
    ids = rng.integers(0, 50000, (5, 2)).astype(np.int32)
    for dtype in ("float32", "float16", "bfloat16"):
        out = tmp_path / dtype
        with DatasetWriter(str(out), model="m", layers=[0], dim=4, dtype=dtype, logits_k=2) as w:
            w.add([f"t{i}" for i in range(5)], hidden={0: X.astype(">f4")},
                  logits_topk=(vals.astype(">f4"), ids.astype(">i4")))
        ds = actstore.open_dataset(str(out))
        header, data = _data(out / "tensors/hidden_layer000_shard000.safetensors")
        if dtype == "float16":
            assert data == X.astype("<f2").tobytes()
            np.testing.assert_array_equal(ds.layer(0), X.astype(np.float16))
        elif dtype == "float32":
            assert data == X.astype("<f4").tobytes()
            np.testing.assert_array_equal(ds.layer(0), X)
        else:  # bfloat16: the high half of each little-endian float32, rounded
            np.testing.assert_allclose(ds.layer(0), X, rtol=1 / 128)
            bits = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
            np.testing.assert_array_equal(bits.view("<f4").reshape(5, 4), ds.layer(0))
        v, i = ds.logits_topk()
        np.testing.assert_array_equal(v, vals)
        np.testing.assert_array_equal(i, ids)
        lt = load_file(str(out / "tensors/logits_topk_000.safetensors"))
        np.testing.assert_array_equal(lt["logits_topk.values"], vals)
