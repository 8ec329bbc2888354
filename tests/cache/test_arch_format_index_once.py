"""A remote open opens the index once (the cache used to read it, then the reader again)."""

from __future__ import annotations

import os

import numpy as np

import actstore
from actstore.cache import UnifiedCache
from actstore.format import reader


def test_remote_open_reads_the_index_once(served, http_root, tmp_path, write_ds, monkeypatch):
    name = f"ds-{tmp_path.name}"
    arrays = write_ds(os.path.join(http_root, name), rows=50, dim=8, shard_bytes=50 * 8 * 4 // 2)
    calls: list[str] = []
    real = reader.read_index_lazy

    def counting(source, path=reader.INDEX_PATH):
        calls.append(path)
        return real(source, path)

    monkeypatch.setattr(reader, "read_index_lazy", counting)
    ds = actstore.open_dataset(f"{served.url}/{name}", cache=UnifiedCache(tmp_path / "cache"))
    assert calls == [reader.INDEX_PATH]
    assert len(ds) == 50
    np.testing.assert_array_equal(ds.layer(0), arrays[0])
