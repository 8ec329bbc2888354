"""Dataset reader: lazy open, fast layer reads, gathers, selections, batches."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

import actstore
import actstore.format.reader  # noqa: F401 (the tests call actstore.format.reader.open_dataset)
from actstore.format.source import LocalSource
from actstore.format.writer import DatasetWriter


class CountingSource:
    """A byte source over a local folder that records every byte range it serves (used the
    way remote sources are: ranges only, no local mapping)."""

    def __init__(self, root: str) -> None:
        self._local = LocalSource(root)
        self.reads: list[tuple[str, int, int]] = []

    def size(self, path):
        return self._local.size(path)

    def read_ranges(self, path, ranges):
        self.reads += [(path, s, e) for s, e in ranges]
        return self._local.read_ranges(path, ranges)

    def readinto(self, path, requests):
        self.reads += [(path, off, off + buf.nbytes) for off, buf in requests]
        self._local.readinto(path, requests)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("r") / "ds")
    rng = np.random.default_rng(7)
    data = {L: rng.standard_normal((100, 32)).astype(np.float32) for L in (1, 2)}
    with DatasetWriter(path, model="m", layers=[1, 2], dim=32, shard_bytes=32 * 4 * 30) as w:
        w.add([f"t{i}" for i in range(100)], hidden=data, labels=[i % 3 for i in range(100)],
              metadata={"group": [i // 10 for i in range(100)]})
    return path, data


def test_open_reads_only_the_index(dataset):
    path, _ = dataset
    src = CountingSource(path)
    ds = actstore.format.reader.open_dataset(path, source=src)
    assert {p for p, _, _ in src.reads} == {"index/train-00000-of-00001.parquet"}
    assert len(ds) == 100


def test_get_reads_about_the_requested_bytes(dataset):
    path, data = dataset
    src = CountingSource(path)
    ds = actstore.format.reader.open_dataset(path, source=src)
    src.reads.clear()
    rows = [5, 61, 62, 99]
    got = ds.get(rows, layers=[2])
    np.testing.assert_array_equal(got[:, 0], data[2][rows])
    data_bytes = sum(e - s for p, s, e in src.reads if s >= 8 and e - s < 64 * 1024 and (e - s) % 128 == 0)
    assert data_bytes == 4 * 32 * 4  # exactly the four rows, adjacent rows coalesced
    assert len([r for r in src.reads if r[2] - r[1] == 256]) == 1  # rows 61-62 in one read


def test_selection_filter_and_negative_rows(dataset):
    path, data = dataset
    ds = actstore.open_dataset(path)
    sel = ds.select([10, -1, 3])
    assert sel.texts == ["t10", "t99", "t3"]
    np.testing.assert_array_equal(sel.layer(1), data[1][[10, 99, 3]])
    sub = ds.filter(pc.field("group") == 4)
    assert sub.texts == [f"t{i}" for i in range(40, 50)]
    np.testing.assert_array_equal(sub.select([0, 9]).layer(2), data[2][[40, 49]])
    masked = ds.filter(ds.labels == 0)
    assert len(masked) == 34
    with pytest.raises(actstore.InvalidArgumentError, match="Row 100 is out of range"):
        ds.get([100])
    with pytest.raises(actstore.LayerNotFoundError, match=r"stored layers are \[1, 2\]"):
        ds.layer(7)
    with pytest.raises(actstore.InvalidArgumentError, match="no column 'nope'"):
        ds.column("nope")


def test_iter_batches_covers_every_row_once_and_shuffles_by_seed(dataset):
    path, data = dataset
    ds = actstore.open_dataset(path)
    seen = []
    for X, pos in ds.iter_batches(1, batch_size=16, shuffle=True, seed=3):
        np.testing.assert_array_equal(X, data[1][pos])
        seen += pos.tolist()
    assert sorted(seen) == list(range(100))
    again = [p.tolist() for _, p in ds.iter_batches(1, batch_size=16, shuffle=True, seed=3)]
    assert sum(again, []) == seen
    assert seen != list(range(100))


def test_verify_checksums_on_read(dataset, tmp_path):
    import shutil

    path, _ = dataset
    copy = str(tmp_path / "copy")
    shutil.copytree(path, copy)
    shard = f"{copy}/tensors/hidden_layer001_shard001.safetensors"
    blob = bytearray(open(shard, "rb").read())
    blob[-1] ^= 0xFF
    open(shard, "wb").write(bytes(blob))
    ds = actstore.open_dataset(copy)
    report = ds.verify()
    assert not report.ok and "hidden_layer001_shard001" in str(report)
    strict = actstore.open_dataset(copy, verify_checksums=True)
    with pytest.raises(actstore.IntegrityError, match="hidden_layer001_shard001.*sha256"):
        strict.layer(1)
    np.testing.assert_array_equal(strict.layer(2).shape, (100, 32))
