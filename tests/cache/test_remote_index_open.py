"""A remote open reads the index footer and the location columns' chunks by byte ranges, not
the whole index; texts, labels and metadata columns come on first use, from the index version
pinned at open (issue #14 point 2). Real loopback HTTP range server and moto S3."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import actstore
from actstore.cache import UnifiedCache
from actstore.errors import DatasetChangedError
from actstore.format import spec
from actstore.format.writer import DatasetWriter

N = 4000


def write(path: str, *, tag: str = "", seed: int = 0) -> tuple[list[str], np.ndarray]:
    """A dataset whose index is mostly texts (long, distinct prompts), as real ones are."""
    rng = np.random.default_rng(seed)
    texts = [f"{tag}{i} " + " ".join(map(str, rng.integers(0, 10**6, 30))) for i in range(N)]
    x = rng.standard_normal((N, 4)).astype(np.float32)
    with DatasetWriter(path, model="m", layers=[0], dim=4, shard_bytes=1000 * 16, overwrite=True) as w:
        w.add(texts, hidden={0: x}, labels=[i % 2 for i in range(N)],
              metadata={"source": [f"s{i}" for i in range(N)]})
    return texts, x


def index_gets(served, name: str) -> int:
    return served.bytes_sent(f"{name}/{spec.INDEX_PATH}")


@pytest.mark.parametrize("cached", [False, True], ids=["plain", "cached"])
def test_http_open_reads_a_small_part_of_the_index(served, http_root, tmp_path, cached, monkeypatch):
    # cached: an index this small is fetched whole at the first open (for offline reads of
    # every column, tests/cache/test_offline_index.py) unless the bound is lowered, as here
    monkeypatch.setenv("ACTSTORE_INDEX_CACHE_WHOLE_BYTES", "0")
    name = f"ix-{tmp_path.name}"
    texts, x = write(os.path.join(http_root, name))
    size = os.path.getsize(os.path.join(http_root, name, spec.INDEX_PATH))
    cache = UnifiedCache(tmp_path / "cache") if cached else False
    ds = actstore.open_dataset(f"{served.url}/{name}", cache=cache)
    opened = index_gets(served, name)
    assert 0 < opened < 0.10 * size, (opened, size)
    np.testing.assert_array_equal(ds.get([3, N - 1], layers=[0])[:, 0], x[[3, N - 1]])
    repr(ds)
    assert index_gets(served, name) == opened  # rows and the repr need no more of the index
    assert ds.select([N - 2, 1]).texts == [texts[N - 2], texts[1]]
    assert ds.texts == texts and list(ds.labels[:4]) == [0, 1, 0, 1]
    assert ds.column("source")[9] == "s9"
    assert index_gets(served, name) < 1.1 * size  # each byte of the index read about once


def test_texts_come_from_the_index_version_pinned_at_open(served, http_root, tmp_path):
    name = f"pin-{tmp_path.name}"
    write(os.path.join(http_root, name))
    ds = actstore.open_dataset(f"{served.url}/{name}", cache=False)
    time.sleep(0.01)  # a new mtime, so a new ETag
    write(os.path.join(http_root, name), tag="new ", seed=1)  # overwritten while open
    with pytest.raises(DatasetChangedError, match=spec.INDEX_PATH):
        ds.texts  # noqa: B018 - reading the property is the test


def test_s3_open_fetches_footer_and_locations_only(s3, tmp_path):
    import s3fs

    opts, bucket = s3
    texts, x = write(str(tmp_path / "ds"))
    fs = s3fs.S3FileSystem(**opts)
    fs.put(str(tmp_path / "ds"), f"{bucket}/ds", recursive=True)
    size = os.path.getsize(tmp_path / "ds" / spec.INDEX_PATH)
    ds = actstore.open_dataset(f"s3://{bucket}/ds", storage_options=opts, cache=False)
    assert 0 < ds._s.table.fetched < 0.10 * size
    np.testing.assert_array_equal(ds.get([7], layers=[0])[:, 0], x[[7]])
    other = actstore.open_dataset(f"s3://{bucket}/ds", storage_options=opts, cache=False)
    assert other.select([10]).texts == [texts[10]] and other.texts == texts
    write(str(tmp_path / "ds2"), tag="new ", seed=1)  # a different index under the same name
    fs.put(str(tmp_path / "ds2" / spec.INDEX_PATH), f"{bucket}/ds/{spec.INDEX_PATH}")
    with pytest.raises(DatasetChangedError, match=spec.INDEX_PATH):
        ds.texts  # noqa: B018 - its text chunks were not fetched before the index was replaced
