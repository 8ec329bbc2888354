"""Memory is bounded by the window, not the dataset: the peak of numpy allocations during an
epoch stays flat when the dataset grows 4x (tracemalloc sees numpy's buffers)."""

from __future__ import annotations

import tracemalloc

import numpy as np

import actstore
from actstore.format.writer import DatasetWriter

DIM = 256


def write(path, rows: int) -> None:
    block = np.ones((1000, DIM), dtype=np.float32)
    with DatasetWriter(str(path), model="m", layers=[0], dim=DIM, shard_bytes=4 << 20) as w:
        for _ in range(0, rows, 1000):
            w.add([""] * 1000, hidden={0: block})


def peak(path) -> int:
    ds = actstore.open_dataset(str(path))
    s = actstore.stream(ds, layers=0, batch_size=500, block_rows=100, window=1000, prefetch=1)
    tracemalloc.start()
    tracemalloc.reset_peak()
    for b in s:
        del b  # a training loop keeps no batch
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top


def test_peak_memory_is_flat_in_dataset_size(tmp_path):
    write(tmp_path / "small", 10_000)
    write(tmp_path / "big", 40_000)
    small, big = peak(tmp_path / "small"), peak(tmp_path / "big")
    window = 1000 * DIM * 4  # 1 MB: a 10,000-row epoch is 10 MB, a 40,000-row one 41 MB
    assert big < 1.5 * small + window
    assert big < 8 * window  # (prefetch + 2) windows, a spare, two batches, index arrays
