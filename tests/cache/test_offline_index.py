"""Offline reads of index columns a dataset never read while online (issue #14 follow-up).

An online open through the cache fetches the whole index into the cache when it is at most
``actstore.config.index_cache_whole_bytes()`` (32 MiB, or
``ACTSTORE_INDEX_CACHE_WHOLE_BYTES``), so every column (texts, labels, metadata) reads offline later;
a larger index keeps only the columns read online, and an offline read of another raises an
``OfflineError`` that names the column and the fix.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import actstore
from actstore import config
from actstore.cache import UnifiedCache
from actstore.errors import OfflineError
from actstore.format.spec import INDEX_PATH

ROWS = 50_000  # an index larger than the footer read (TAIL_BYTES), so texts are separate reads


@pytest.fixture()
def remote(served, http_root, tmp_path, write_ds):
    name = f"ix-{tmp_path.name}"
    arrays = write_ds(os.path.join(http_root, name), rows=ROWS, dim=4)
    return f"{served.url}/{name}", name, arrays


def _index_gets(served, name):
    return [r for r in served.log if r["method"] == "GET" and r["path"].endswith(f"{name}/{INDEX_PATH}")]


def test_an_online_open_caches_the_whole_index_so_every_column_reads_offline(remote, served, tmp_path, monkeypatch):
    url, name, arrays = remote
    size = os.path.getsize(os.path.join(served.root, name, INDEX_PATH))
    assert size <= config.index_cache_whole_bytes()
    ds = actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache"))
    ds.get(np.arange(5), layers=[0])             # texts and labels never read online
    assert "text" not in ds._s.table.decoded
    assert served.bytes_sent(f"{name}/{INDEX_PATH}") >= size  # the whole index, once
    served.reset()
    again = actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache"))
    assert _index_gets(served, name) == [] and again.texts[:2] == ["prompt 0", "prompt 1"]
    served.reset()
    monkeypatch.setenv("ACTSTORE_OFFLINE", "1")
    off = actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache"))
    assert off.texts == [f"prompt {i}" for i in range(ROWS)]
    assert off.labels.tolist() == [i % 2 for i in range(ROWS)]
    assert off.select([7, ROWS - 1]).texts == ["prompt 7", f"prompt {ROWS - 1}"]
    np.testing.assert_array_equal(off.get(np.arange(5), layers=[0])[:, 0], arrays[0][:5])
    assert served.log == []


def test_a_large_index_read_offline_names_the_column_never_read_online(remote, served, tmp_path, monkeypatch):
    url, name, arrays = remote
    monkeypatch.setenv("ACTSTORE_INDEX_CACHE_WHOLE_BYTES", "0")  # as if this index were huge
    ds = actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache"))
    ds.get(np.arange(5), layers=[0])
    size = os.path.getsize(os.path.join(served.root, name, INDEX_PATH))
    assert served.bytes_sent(f"{name}/{INDEX_PATH}") < size  # only what the open needed
    assert ds.labels.size == ROWS  # read online: cached
    served.reset()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    off = actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache"))
    assert off.labels.tolist() == [i % 2 for i in range(ROWS)]
    np.testing.assert_array_equal(off.get(np.arange(5), layers=[0])[:, 0], arrays[0][:5])
    with pytest.raises(OfflineError, match=r"the column\(s\) \['text'\] of the index of .*never read "
                                           r"while online.*ds\.texts.*unset ACTSTORE_OFFLINE"):
        _ = off.texts
    assert served.log == []
