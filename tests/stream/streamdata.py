"""Small real datasets for the stream tests, written by DatasetWriter.

Each sample's values encode where it came from, so a test can check which sample a batch row
is without trusting the loader: in a pooled dataset, row ``i`` of layer ``L`` holds
``i + 1000 * L`` in every column; in a full-sequence one, token ``t`` of row ``i`` holds
``i * 100 + t + 10000 * L``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from actstore.format.writer import DatasetWriter

DIM = 8
LAYERS = (0, 3)


def pooled_values(n: int, layer: int) -> np.ndarray:
    return np.repeat((np.arange(n) + 1000 * layer)[:, None], DIM, axis=1).astype(np.float32)


def write_pooled(path: Path, n: int, *, dtype: str = "float32", shard_bytes: int = 2048) -> Path:
    labels = (np.arange(n) * 4 // n).tolist()  # sorted labels: the worst case for mixing
    with DatasetWriter(str(path), model="m", layers=list(LAYERS), dim=DIM, dtype=dtype,
                       shard_bytes=shard_bytes, overwrite=True) as w:
        for lo in range(0, n, 50):
            hi = min(n, lo + 50)
            w.add([f"t{i}" for i in range(lo, hi)],
                  hidden={L: pooled_values(n, L)[lo:hi] for L in LAYERS},
                  labels=labels[lo:hi], metadata={"score": [float(i) / 2 for i in range(lo, hi)]})
    return path


def token_counts(n: int) -> list[int]:
    return [1 + (i * 7) % 5 for i in range(n)]


def write_full(path: Path, n: int = 40, *, shard_bytes: int = 1024) -> Path:
    counts = token_counts(n)
    seqs = {L: [np.repeat((i * 100 + np.arange(c) + 10000 * L)[:, None], DIM, axis=1).astype(np.float32)
                for i, c in enumerate(counts)] for L in LAYERS}
    with DatasetWriter(str(path), model="m", layers=list(LAYERS), dim=DIM, pooling="all",
                       shard_bytes=shard_bytes, overwrite=True) as w:
        w.add([f"t{i}" for i in range(n)], hidden=seqs, labels=[i % 2 for i in range(n)],
              num_tokens=counts)
    return path
