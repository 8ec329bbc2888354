"""The streaming pass reads the next block in a thread while the current one is computed."""

from __future__ import annotations

import threading
import time

import numpy as np

from actstore.probe.streaming_blocks import blocks, memory_needed


class _SlowDataset:
    """``get`` takes 0.2 s (a slow network) and records when and on which thread it ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float, str]] = []

    def get(self, rows, layers, view=None, dtype=None):
        start = time.perf_counter()
        time.sleep(0.2)
        self.calls.append((start, time.perf_counter(), threading.current_thread().name))
        return np.zeros((len(rows), len(layers), 3), dtype=np.float32) + rows[:, None, None]


def test_next_block_is_read_while_this_one_is_computed():
    ds = _SlowDataset()
    t0 = time.perf_counter()
    seen = []
    for rows, block in blocks(ds, np.arange(10), [0, 1], None, 3):
        assert block.shape == (rows.size, 2, 3) and (block[:, 0, 0] == rows).all()
        seen.append(rows.tolist())
        time.sleep(0.2)  # "compute" as long as a read
    elapsed = time.perf_counter() - t0
    assert seen == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert all(name.startswith("actstore-stream") for *_, name in ds.calls)
    # 4 reads and 4 computes of 0.2 s each: overlapped ~1.0 s, one after the other 1.6 s
    assert elapsed < 1.4, elapsed
    # the read of block k + 1 started before the compute of block k ended
    assert ds.calls[1][0] < ds.calls[0][1] + 0.15


def test_memory_estimate_counts_the_square_statistics():
    small = memory_needed(dim=256, n_layers=4, n_groups=2, fourth=True, block_rows=2048)
    big = memory_needed(dim=2048, n_layers=4, n_groups=2, fourth=True, block_rows=2048)
    assert big > 4 * 2 * 3 * 2048 * 2048 * 8  # the 4 layers' per-class scatter + fourth moments
    assert big / small > 20
