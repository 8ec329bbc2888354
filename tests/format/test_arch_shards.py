"""The shard catalog: one owner of headers, entries and checksums for the reader and verify.

Safetensors files whose tensors are each valid alone but not laid out back to back from data
offset 0 (two tensors sharing bytes, a hole before a tensor, bytes after the last one) are
refused by the reader and reported by ``verify``, naming the file (the rule of
``safetensors/src/tensor.rs::validate``). ``get()`` reads the header of the shards its rows
live in, and no other.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import actstore
from actstore import DatasetWriter
from actstore.format.reader import open_dataset
from actstore.format.shards import ShardCatalog
from actstore.format.source import LocalSource

INDEX = "index/train-00000-of-00001.parquet"
SHARD0 = "tensors/hidden_layer000_shard000.safetensors"
SHARD1 = "tensors/hidden_layer000_shard001.safetensors"


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A dataset of 10 rows of 4 float32 values, 5 rows per shard (two shards per layer)."""
    base = tmp_path_factory.mktemp("arch_shards")
    X = np.random.default_rng(3).standard_normal((10, 4)).astype(np.float32)
    with DatasetWriter(str(base / "ds"), model="m", layers=[0, 1], dim=4, shard_bytes=4 * 4 * 5) as w:
        w.add([f"t{i}" for i in range(10)], hidden={0: X, 1: X + 1}, labels=[i % 2 for i in range(10)])
    return base / "ds", X


def _copy(valid: tuple[Path, np.ndarray], tmp_path: Path) -> Path:
    return Path(shutil.copytree(valid[0], tmp_path / "ds"))


def _split(blob: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _rewrite(root: Path, rel: str, header: dict, data: bytes) -> None:
    """Write ``rel`` with this header and data, and record its new size and sha256 in the
    metadata, so that only the layout is wrong (size and checksum agree)."""
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    blob = struct.pack("<Q", len(body)) + body + data
    (root / rel).write_bytes(blob)
    t = pq.read_table(root / INDEX)
    meta = {k.decode(): v for k, v in t.schema.metadata.items()}
    files = json.loads(meta["actstore:files"])
    files[rel] = {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    meta["actstore:files"] = json.dumps(files)
    pq.write_table(t.replace_schema_metadata(meta), root / INDEX)


def _overlap(root: Path) -> None:
    """A second tensor whose bytes are the first row of the hidden tensor."""
    header, data = _split((root / SHARD0).read_bytes())
    header["alias"] = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    _rewrite(root, SHARD0, header, data)


def _hole(root: Path) -> None:
    """Eight unexplained bytes before the hidden tensor (its rows still read right)."""
    header, data = _split((root / SHARD0).read_bytes())
    (key,) = header
    begin, end = header[key]["data_offsets"]
    header[key]["data_offsets"] = [begin + 8, end + 8]
    _rewrite(root, SHARD0, header, b"\0" * 8 + data)


def _trailing(root: Path) -> None:
    """Sixteen bytes after the last tensor."""
    header, data = _split((root / SHARD0).read_bytes())
    _rewrite(root, SHARD0, header, data + b"\x7f" * 16)


def _gap_between(root: Path) -> None:
    """Two tensors with eight bytes between them."""
    header, data = _split((root / SHARD0).read_bytes())
    (key,) = header
    end = header[key]["data_offsets"][1]
    header["extra"] = {"dtype": "U8", "shape": [8], "data_offsets": [end + 8, end + 16]}
    _rewrite(root, SHARD0, header, data + b"\0" * 16)


LAYOUTS = [
    ("overlap", _overlap, r"'hidden.layer_0' starts at data offset 0 but tensor 'alias' ends at 16: the two overlap"),
    ("hole-at-start", _hole, r"starts at data offset 8 but the header ends at 0: a hole of 8 bytes"),
    ("trailing-bytes", _trailing, r"file is \d+ bytes; safetensors files hold nothing after"),
    ("hole-between", _gap_between, r"'extra'.*hole"),
]


@pytest.mark.parametrize("name,breakage,message", LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_reader_refuses_tensors_not_back_to_back(valid, tmp_path, name, breakage, message):
    root = _copy(valid, tmp_path)
    breakage(root)
    ds = actstore.open_dataset(str(root))
    with pytest.raises(actstore.IntegrityError, match=rf"{SHARD0}: .*{message}"):
        ds.layer(0)
    np.testing.assert_array_equal(ds.layer(1), valid[1] + 1)  # other files are unaffected


@pytest.mark.parametrize("name,breakage,message", LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_verify_reports_tensors_not_back_to_back(valid, tmp_path, name, breakage, message):
    root = _copy(valid, tmp_path)
    breakage(root)
    report = actstore.open_dataset(str(root)).verify()
    assert not report.ok
    assert any(p.startswith(f"{SHARD0}: ") and re.search(message, p) for p in report.problems), \
        report.problems


def test_verify_report_is_typed_and_clean_on_a_valid_dataset(valid):
    ds = actstore.open_dataset(str(valid[0]))
    report = ds.verify()
    assert isinstance(report, actstore.VerifyReport) and report.ok, report.problems
    assert report.files_checked == 4 and report.bytes_hashed > 0


class _CountingSource(LocalSource):
    """A local source that records every file whose bytes are read."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.paths: list[str] = []

    def read_ranges(self, path, ranges):
        self.paths.append(path)
        return super().read_ranges(path, ranges)


def test_get_reads_only_the_header_of_the_shard_its_rows_live_in(valid):
    src = _CountingSource(str(valid[0]))
    ds = open_dataset(str(valid[0]), source=src)
    src.paths.clear()
    out = ds.get([7, 9], layers=0)
    np.testing.assert_array_equal(out[:, 0], valid[1][[7, 9]])
    assert SHARD1 in src.paths
    assert SHARD0 not in src.paths  # the output dtype comes from shard 1's own header


def test_catalog_serves_entries_and_one_checksum_loop(valid):
    ds = actstore.open_dataset(str(valid[0]))
    cat = ds._s.catalog
    assert isinstance(cat, ShardCatalog)
    view = next(iter(cat.views.values()))
    e = cat.entry(view, 0, 1)
    assert e.shape == (5, 4) and e.dtype == "F32"
    assert cat.header(SHARD1)["hidden.layer_0"] == e
    size = (valid[0] / SHARD1).stat().st_size
    assert cat.sha256(SHARD1, size) == hashlib.sha256((valid[0] / SHARD1).read_bytes()).hexdigest()
    cat.check_sha256(SHARD1, size)  # agrees with actstore:files: no error


def test_verify_checksums_on_open_uses_the_catalog(valid, tmp_path):
    root = _copy(valid, tmp_path)
    blob = bytearray((root / SHARD1).read_bytes())
    blob[-1] ^= 0xFF  # same size, other bytes
    (root / SHARD1).write_bytes(bytes(blob))
    ds = actstore.open_dataset(str(root), verify_checksums=True)
    np.testing.assert_array_equal(ds.get([0, 1], layers=0)[:, 0], valid[1][[0, 1]])  # shard 0 is fine
    with pytest.raises(actstore.IntegrityError, match=rf"{SHARD1}: sha256 .* does not match"):
        ds.get([8], layers=0)
