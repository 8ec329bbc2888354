"""bfloat16 fast paths: numpy bfloat16 (ml_dtypes) in and out bit for bit, rounding cut across
threads equal to torch's, and shard files hashed on several threads at once."""

from __future__ import annotations

import hashlib
import threading

import ml_dtypes
import numpy as np
import pytest

import actstore
from actstore.format import dtypes, shardfile
from actstore.format.dtypes import bf16_bits_to_f32, f32_to_bf16_bits
from actstore.format.writer import DatasetWriter

N, DIM = 40, 24


def _bits(seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((N, DIM)).astype(np.float32)
    return f32_to_bf16_bits(x)


def test_a_numpy_bfloat16_array_is_stored_bit_for_bit_and_read_back_as_numpy_bfloat16(tmp_path):
    bits = _bits()
    path = str(tmp_path / "ds")
    with DatasetWriter(path, model="m", layers=[0, 1], dim=DIM, dtype="bfloat16", shard_bytes=DIM * 2 * 7) as w:
        w.add([f"p{i}" for i in range(N)], hidden={0: bits.view(ml_dtypes.bfloat16),
                                                   1: bits[::-1].copy().view(ml_dtypes.bfloat16)})
    ds = actstore.open_dataset(path)
    np.testing.assert_array_equal(ds.layer(0), bf16_bits_to_f32(bits))  # float32 by default
    got = ds.layer(0, dtype="bfloat16")
    assert got.dtype == ml_dtypes.bfloat16 and got.shape == (N, DIM)
    np.testing.assert_array_equal(got.view(np.uint16), bits)
    rows = [39, 0, 17, 17, 5]
    both = ds.get(rows, layers=[1, 0], dtype=ml_dtypes.bfloat16)
    np.testing.assert_array_equal(both[:, 1].view(np.uint16), bits[rows])
    np.testing.assert_array_equal(both[:, 0].view(np.uint16), bits[::-1][rows])
    for X, pos in ds.iter_batches(0, batch_size=16, shuffle=True, seed=1, dtype="bfloat16"):
        np.testing.assert_array_equal(X.view(np.uint16), bits[pos])
    out = np.zeros((N, DIM), dtype=ml_dtypes.bfloat16)
    assert ds.layer(0, out=out) is out
    np.testing.assert_array_equal(out.view(np.uint16), bits)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_float_datasets_read_as_bfloat16_round_to_nearest_even(tmp_path, dtype):
    x = np.random.default_rng(3).standard_normal((N, DIM)).astype(dtype)
    path = str(tmp_path / "ds")
    with DatasetWriter(path, model="m", layers=[0], dim=DIM, dtype=dtype) as w:
        w.add([f"p{i}" for i in range(N)], hidden={0: x})
    ds = actstore.open_dataset(path)
    want = f32_to_bf16_bits(x.astype(np.float32))  # float16 -> float32 is exact
    np.testing.assert_array_equal(ds.layer(0, dtype="bfloat16").view(np.uint16), want)
    np.testing.assert_array_equal(ds.get([7, 2], dtype="bfloat16")[:, 0].view(np.uint16), want[[7, 2]])


def test_numpy_bfloat16_into_float32_storage_widens_exactly(tmp_path):
    bits = _bits(1)
    path = str(tmp_path / "ds")
    with DatasetWriter(path, model="m", layers=[0], dim=DIM, dtype="float32") as w:
        w.add([f"p{i}" for i in range(N)], hidden={0: bits.view(ml_dtypes.bfloat16)})
    np.testing.assert_array_equal(actstore.open_dataset(path).layer(0), bf16_bits_to_f32(bits))


@pytest.mark.parametrize("bad", [0x7F80, 0xFF80, 0x7FC1])  # +inf, -inf, NaN
def test_a_numpy_bfloat16_nan_or_inf_is_refused_with_its_row(tmp_path, bad):
    bits = _bits(2)
    bits[33, 5] = bad
    w = DatasetWriter(str(tmp_path / "ds"), model="m", layers=[0], dim=DIM, dtype="bfloat16")
    with pytest.raises(actstore.InvalidArgumentError, match=r"hidden\[0\] holds NaN or inf \(first at row 33\)"):
        w.add([f"p{i}" for i in range(N)], hidden={0: bits.view(ml_dtypes.bfloat16)})
    w.abort()


def test_rounding_cut_across_threads_equals_torch_bit_for_bit(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(dtypes, "PARALLEL_BYTES", 4096)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    x = np.random.default_rng(4).standard_normal((257, 33)).astype(np.float32) * 1e3
    x.reshape(-1)[::7] = np.float32(1.00390625)  # exactly halfway between two bfloat16 values
    x.reshape(-1)[1::7] = np.float32(3.3895314e38)  # rounds up to the largest finite or inf
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    spawned = []
    real = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: (spawned.append(self), real(self))[1])
    np.testing.assert_array_equal(f32_to_bf16_bits(x), want)
    assert len(spawned) == 3  # four pieces: three threads and the caller


def test_shard_files_hash_on_several_threads_and_every_sha256_is_right(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    threads: set[int] = set()
    real = hashlib.sha256

    class Spy:  # records which thread hashes; hashlib's own object does the work
        def __init__(self, data: bytes = b"") -> None:
            self._h = real(data)

        def update(self, data) -> None:
            threads.add(threading.get_ident())
            self._h.update(data)

        def hexdigest(self) -> str:
            return self._h.hexdigest()

    monkeypatch.setattr(shardfile.hashlib, "sha256", Spy)
    layers = [0, 1, 2, 3, 4, 5]
    x = np.random.default_rng(5).standard_normal((N, DIM)).astype(np.float32)
    path = str(tmp_path / "ds")
    with DatasetWriter(path, model="m", layers=layers, dim=DIM, num_rows=N, shard_bytes=DIM * 4 * 9) as w:
        for a in range(0, N, 11):
            w.add([f"p{i}" for i in range(a, min(N, a + 11))], hidden={L: x[a : a + 11] + L for L in layers})
    monkeypatch.undo()
    assert len(threads) >= 2, threads
    ds = actstore.open_dataset(path)
    report = ds.verify()
    assert report.ok, report
    for L in layers:
        np.testing.assert_array_equal(ds.layer(L), x + L)
