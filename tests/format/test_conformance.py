"""Conformance cases: each invalid dataset with the exact error it must raise (zarr-style).

Every case starts from a valid dataset, breaks one thing (metadata or bytes), and asserts the
error class and that the message names the offending file or field. None may read outside
the dataset root.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable

import numpy as np
import pyarrow.parquet as pq
import pytest

import actstore
from actstore.format.writer import DatasetWriter

INDEX = "index/train-00000-of-00001.parquet"
SHARD = "tensors/hidden_layer001_shard000.safetensors"


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    path = tmp_path_factory.mktemp("valid") / "ds"
    rng = np.random.default_rng(0)
    with DatasetWriter(str(path), model="m", layers=[0, 1], dim=4, shard_bytes=4 * 4 * 5, logits_k=2) as w:
        w.add([f"t{i}" for i in range(8)], hidden={L: rng.normal(size=(8, 4)) for L in (0, 1)},
              labels=[0, 1] * 4, logits_topk=(np.ones((8, 2)), np.zeros((8, 2))))
    return path


def edit_meta(root, fn: Callable[[dict], None]) -> None:
    t = pq.read_table(root / INDEX)
    meta = {k.decode(): json.loads(v) for k, v in t.schema.metadata.items()}
    fn(meta)
    pq.write_table(t.replace_schema_metadata({k: json.dumps(v) for k, v in meta.items()}), root / INDEX)


def edit_index(root, column: str, values) -> None:
    import pyarrow as pa

    t = pq.read_table(root / INDEX)
    i = t.column_names.index(column)
    t2 = t.set_column(i, column, pa.array(values, type=t.schema.field(column).type))
    pq.write_table(t2.replace_schema_metadata(t.schema.metadata), root / INDEX)


def hidden(meta):
    return meta["lmprobe:tensors"]["hidden_layers"]


def rewrite_header(root, header: dict) -> None:
    """Replace the shard's header JSON (same data bytes after it)."""
    import struct

    blob = (root / SHARD).read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    body = json.dumps(header).encode()
    (root / SHARD).write_bytes(struct.pack("<Q", len(body)) + body + blob[8 + n :])


def shard_header(root) -> dict:
    import struct

    blob = (root / SHARD).read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + n])


def lie_shape(root):
    h = shard_header(root)
    h["hidden.layer_1"]["shape"] = [5, 8]
    h["hidden.layer_1"]["data_offsets"] = [0, 160]
    rewrite_header(root, h)


def lie_dtype(root):
    h = shard_header(root)
    h["hidden.layer_1"]["dtype"] = "F16"
    h["hidden.layer_1"]["data_offsets"] = [0, 40]
    rewrite_header(root, h)


def lie_size(root):
    h = shard_header(root)
    h["hidden.layer_1"]["shape"] = [500, 4]
    h["hidden.layer_1"]["data_offsets"] = [0, 8000]
    rewrite_header(root, h)


def huge_header_length(root):
    import struct

    blob = bytearray((root / SHARD).read_bytes())
    blob[:8] = struct.pack("<Q", 10**9)
    (root / SHARD).write_bytes(bytes(blob))


# (id, breakage, error class, message regex, when: "open" or "read")
CASES = [
    ("missing-index", lambda r: os.remove(r / INDEX), actstore.DatasetNotFoundError, "No dataset index", "open"),
    ("newer-major", lambda r: edit_meta(r, lambda m: m.update({"lmprobe:format_version": "3.0"})),
     actstore.UnsupportedVersionError, r"3\.0 is newer .*2\.0", "open"),
    ("v1-layout", lambda r: edit_meta(r, lambda m: m.update({"lmprobe:format_version": "1.2"})),
     actstore.FormatError, r"1\.2 is a v1 layout", "open"),
    ("no-version", lambda r: edit_meta(r, lambda m: m.pop("lmprobe:format_version")),
     actstore.FormatError, "lmprobe:format_version", "open"),
    ("must-understand", lambda r: edit_meta(r, lambda m: m["actstore:format"].update({"must_understand": ["zzz"]})),
     actstore.UnsupportedVersionError, r"\['zzz'\]", "open"),
    ("pattern-escapes", lambda r: edit_meta(r, lambda m: hidden(m).update({"file_pattern": "../../x{layer}{shard}"})),
     actstore.UnsafePathError, "escapes the dataset root", "open"),
    ("pattern-absolute", lambda r: edit_meta(r, lambda m: hidden(m).update({"file_pattern": "/etc/passwd{layer}{shard}"})),
     actstore.UnsafePathError, "absolute", "open"),
    ("pattern-attribute", lambda r: edit_meta(r, lambda m: hidden(m).update({"file_pattern": "t/{layer.__class__}{shard}"})),
     actstore.FormatError, r"file_pattern .*\{layer\}", "open"),
    ("pattern-url", lambda r: edit_meta(r, lambda m: hidden(m).update({"file_pattern": "s3://b/{layer}{shard}"})),
     actstore.UnsafePathError, "URL", "open"),
    ("files-escape", lambda r: edit_meta(r, lambda m: m["actstore:files"].update({"../secret": {"size": 1, "sha256": "0" * 64}})),
     actstore.UnsafePathError, "actstore:files", "open"),
    ("logits-escape", lambda r: edit_meta(r, lambda m: m["lmprobe:tensors"]["logits_topk"]["shards"][0].update({"file": "/etc/passwd"})),
     actstore.UnsafePathError, "logits_topk.shards", "open"),
    ("duplicate-layers", lambda r: edit_meta(r, lambda m: hidden(m).update({"layers": [0, 0]})),
     actstore.FormatError, r"layers lists layers \[0\] more than once", "open"),
    ("offset-out-of-range", lambda r: edit_index(r, "row_offset", [0, 1, 2, 3, 4, 0, 1, 99]),
     actstore.FormatError, "Index row 7 .* offset 99", "open"),
    ("shard-out-of-range", lambda r: edit_index(r, "shard_index", [0, 0, 0, 0, 0, 1, 1, 7]),
     actstore.FormatError, "Index row 7 .* shard 7", "open"),
    ("missing-shard", lambda r: os.remove(r / SHARD), actstore.IntegrityError, "hidden_layer001_shard000.*missing", "read"),
    ("truncated-shard", lambda r: (r / SHARD).write_bytes((r / SHARD).read_bytes()[:-7]),
     actstore.IntegrityError, "hidden_layer001_shard000.*bytes", "read"),
    ("header-lies-shape", lie_shape, actstore.IntegrityError, r"hidden_layer001_shard000.*(shape|bytes)", "read"),
    ("header-lies-dtype", lie_dtype, actstore.IntegrityError, r"hidden_layer001_shard000.*(F16|bytes)", "read"),
    ("header-lies-size", lie_size, actstore.IntegrityError, r"hidden_layer001_shard000.*truncated", "read"),
    ("header-length-too-big", huge_header_length, actstore.IntegrityError, r"hidden_layer001_shard000.*header claims", "read"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_invalid_dataset_raises_the_documented_error(valid, tmp_path, case):
    _, breakage, error, message, when = case
    root = tmp_path / "ds"
    shutil.copytree(valid, root)
    breakage(root)
    if when == "open":
        with pytest.raises(error, match=message):
            actstore.open_dataset(str(root))
    else:
        ds = actstore.open_dataset(str(root))
        with pytest.raises(error, match=message):
            ds.layer(1)
        report = ds.verify()
        assert not report.ok and "hidden_layer001_shard000" in str(report)


def test_a_pattern_pointing_outside_is_refused_before_any_read(valid, tmp_path, monkeypatch):
    root = tmp_path / "ds"
    shutil.copytree(valid, root)
    secret = tmp_path / "secret_layer1_shard0.safetensors"
    secret.write_bytes(b"not yours")
    edit_meta(root, lambda m: hidden(m).update({"file_pattern": "../secret_layer{layer}_shard{shard}.safetensors"}))
    opened = []
    real_open = os.open

    def spy(path, *a, **k):
        opened.append(os.fspath(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", spy)
    with pytest.raises(actstore.UnsafePathError):
        actstore.open_dataset(str(root))
    assert not any("secret" in p for p in opened)


def test_checksum_mismatch_found_by_verify_and_by_checked_reads(valid, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(valid, root)
    blob = bytearray((root / SHARD).read_bytes())
    blob[-3] ^= 0x40  # same size, different bytes
    (root / SHARD).write_bytes(bytes(blob))
    assert "hidden_layer001_shard000" in str(actstore.open_dataset(str(root)).verify())
    with pytest.raises(actstore.IntegrityError, match="hidden_layer001_shard000.*sha256"):
        actstore.open_dataset(str(root), verify_checksums=True).layer(1)
