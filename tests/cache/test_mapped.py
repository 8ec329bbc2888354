"""Kept segment mappings: reused while a file is unchanged, never read once it has changed."""

from __future__ import annotations

import os

import numpy as np

import actstore
from actstore.cache import UnifiedCache
from actstore.cache.mapped import SegmentMaps


def test_a_mapping_is_reused_until_its_file_changes_and_never_read_stale(tmp_path):
    path = tmp_path / "a.seg"
    path.write_bytes(b"first version")
    maps = SegmentMaps()
    v1 = maps.view(str(path))
    assert bytes(v1) == b"first version"
    assert maps.view(str(path)) is v1  # unchanged: the same mapping
    replaced = tmp_path / "b.seg"
    replaced.write_bytes(b"second, longer version")
    os.replace(replaced, path)  # a new file (inode) under the same name
    assert bytes(maps.view(str(path))) == b"second, longer version"
    st = os.stat(path)
    with open(path, "r+b") as f:  # rewritten in place, same size: the mtime tells
        f.write(b"SECOND")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert bytes(maps.view(str(path))) == b"SECOND, longer version"
    os.remove(path)
    assert maps.view(str(path)) is None
    maps.close()


def test_at_most_limit_files_stay_mapped(tmp_path):
    maps = SegmentMaps(limit=3)
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.seg"
        p.write_bytes(bytes([i]) * 10)
        paths.append(str(p))
        assert bytes(maps.view(str(p))) == bytes([i]) * 10
    assert list(maps._maps) == paths[2:]
    maps.close()
    assert not maps._maps


def test_warm_scattered_rows_are_copied_from_kept_mappings(served, http_root, tmp_path, write_ds, monkeypatch):
    rows, dim = 3000, 64
    arrays = write_ds(os.path.join(http_root, "mapped"), rows=rows, dim=dim, shard_bytes=rows * dim * 4 // 2)
    url = f"{served.url}/mapped"
    pick = np.sort(np.random.default_rng(1).choice(rows, 300, replace=False))
    actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache")).get(pick, layers=[1])  # fill
    ds = actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache"))
    np.testing.assert_array_equal(ds.get(pick, layers=[1])[:, 0], arrays[1][pick])  # checks the entries
    used = []
    real = SegmentMaps.view
    monkeypatch.setattr(SegmentMaps, "view", lambda self, p: used.append(p) or real(self, p))
    served.reset()
    for order in (pick, pick[::-1]):
        np.testing.assert_array_equal(ds.get(order, layers=[1])[:, 0], arrays[1][order])
    assert used and served.bytes_sent() == 0
