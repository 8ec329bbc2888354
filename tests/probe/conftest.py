"""Synthetic activations with a known signal, stored as a real v2 dataset."""

from __future__ import annotations

import numpy as np
import pytest

from actstore.format.writer import DatasetWriter

N, DIM, LAYERS = 300, 24, [0, 1, 2, 3]


def make_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, 4, dim) features where layer 2 carries the binary label and layer 1 a score."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, len(LAYERS), DIM)).astype(np.float32)
    y = (rng.random(N) > 0.5).astype(int)
    X[:, 2, :3] += (2 * y - 1)[:, None] * 1.2
    score = X[:, 1, 5] * 1.5 + 0.1 * rng.normal(size=N)
    return X, y, score


@pytest.fixture(scope="session")
def arrays():
    return make_arrays()


@pytest.fixture(scope="session")
def probe_dataset(tmp_path_factory, arrays):
    X, y, score = arrays
    path = str(tmp_path_factory.mktemp("probe") / "ds")
    with DatasetWriter(path, model="synthetic", layers=LAYERS, dim=DIM, shard_bytes=DIM * 4 * 70) as w:
        w.add([f"prompt {i}" for i in range(N)], hidden={L: X[:, j] for j, L in enumerate(LAYERS)},
              labels=y.tolist(), metadata={"score": score.tolist(), "topic": [i % 10 for i in range(N)]})
    return path
