"""Warm reads of cached pieces: read straight into the caller's buffer, checked there."""

from __future__ import annotations

import os

import numpy as np

import actstore
from actstore.cache import UnifiedCache
from actstore.cache.store import SegmentStore


def test_warm_scattered_rows_are_read_directly_and_checked(served, http_root, tmp_path, write_ds, monkeypatch):
    rows, dim = 3000, 64
    arrays = write_ds(os.path.join(http_root, "direct"), rows=rows, dim=dim, shard_bytes=rows * dim * 4 // 2)
    url = f"{served.url}/direct"
    pick = np.sort(np.random.default_rng(1).choice(rows, 300, replace=False))
    actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache")).get(pick, layers=[1])  # fill
    ds = actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache"))
    np.testing.assert_array_equal(ds.get(pick, layers=[1])[:, 0], arrays[1][pick])
    general = []
    real = SegmentStore.get_many
    monkeypatch.setattr(SegmentStore, "get_many", lambda self, k, **kw: general.append(k) or real(self, k, **kw))
    served.reset()
    for order in (pick, pick[::-1]):
        np.testing.assert_array_equal(ds.get(order, layers=[1])[:, 0], arrays[1][order])
    # only the (small, whole-piece) header probes take the general path; every row is direct
    assert all(len(keys) == 1 for keys in general) and served.bytes_sent() == 0
