"""Bad input gets a clear error that names the file or field (issue 2, point 6).

A conformance table in two halves, complementing ``test_conformance.py`` (which covers versions,
escaping patterns, truncated/lying shards and checksums on hidden shards):

* WRITE_CASES: calls the DatasetWriter must refuse (labels/metadata/logits whose length differs
  from the texts, missing layers, NaN/inf, a finite value that overflows float16), and nothing
  readable is left behind;
* READ_CASES: a valid dataset broken in one place (index columns, descriptors, missing layers,
  full-sequence offsets, logits shards, recorded sizes) with the error class, the message regex
  and when it must fire (at open, or on the read that needs the broken part).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import actstore
from actstore.format.writer import DatasetWriter

INDEX = "index/train-00000-of-00001.parquet"
LOGITS = "tensors/logits_topk_000.safetensors"
SHARD1 = "tensors/hidden_layer001_shard000.safetensors"
X = np.arange(6, dtype=np.float32).reshape(2, 3)


# ---------------------------------------------------------------- writer refusals

def nan_at(row: int, col: int, value: float = np.nan) -> np.ndarray:
    y = X.copy()
    y[row, col] = value
    return y


# (id, writer kwargs, add kwargs, error class, message regex)
WRITE_CASES = [
    ("labels-length", {}, dict(labels=[1]), actstore.InvalidArgumentError, r"labels has 1 entries .* texts has 2"),
    ("metadata-length", {}, dict(metadata={"src": ["x"]}), actstore.InvalidArgumentError,
     r"metadata column 'src' has 1 values"),
    ("num-tokens-length", {}, dict(num_tokens=[1, 2, 3]), actstore.InvalidArgumentError, r"num_tokens has 3"),
    ("num-tokens-negative", {}, dict(num_tokens=[3, -1]), actstore.InvalidArgumentError,
     r"num_tokens\[1\] is -1; .*non-negative"),
    ("num-tokens-over-int32", {}, dict(num_tokens=[2**31, 1]), actstore.InvalidArgumentError,
     r"num_tokens\[0\] is 2147483648"),
    ("logits-shape", dict(logits_k=2), dict(logits_topk=(np.zeros((1, 2)), np.zeros((1, 2)))),
     actstore.InvalidArgumentError, r"logits_topk .*expected \(2, 2\)"),
    # token ids are stored as int32 (lmprobe's I32): a value that does not fit must not wrap
    ("logits-index-overflow", dict(logits_k=2), dict(logits_topk=(np.zeros((2, 2)), np.array([[0, 2**31], [1, 2]]))),
     actstore.InvalidArgumentError, r"logits_topk indices .*int32.*2147483648"),
    ("missing-layer", {}, dict(hidden={0: X}), actstore.LayerNotFoundError, r"hidden .*missing \[1\]"),
    ("unexpected-layer", {}, dict(hidden={0: X, 1: X, 5: X}), actstore.LayerNotFoundError, r"unexpected \[5\]"),
    ("wrong-dim", {}, dict(hidden={0: X, 1: X[:, :2]}), actstore.InvalidArgumentError, r"hidden\[1\] has shape \(2, 2\)"),
    ("nan", {}, dict(hidden={0: X, 1: nan_at(1, 2)}), actstore.InvalidArgumentError,
     r"hidden\[1\] holds NaN or inf \(first at row 1\)"),
    ("inf-in-view", dict(pooling=["last_token", "mean"]), dict(views={"mean": {0: nan_at(0, 0, np.inf), 1: X}}),
     actstore.InvalidArgumentError, r"views\['mean'\]\[0\] holds NaN or inf"),
    ("nan-bfloat16", dict(dtype="bfloat16"), dict(hidden={0: nan_at(1, 0), 1: X}), actstore.InvalidArgumentError,
     r"hidden\[0\] holds NaN or inf \(first at row 1\)"),
    # finite float32 input that overflows the float16 storage dtype must not become a stored inf
    ("float16-overflow", dict(dtype="float16"), dict(hidden={0: X, 1: nan_at(0, 1, 1e6)}),
     actstore.InvalidArgumentError, r"hidden\[1\] .*too large for float16"),
    # the same for bfloat16: float32 values >= 3.3962e38 round up to the bfloat16 inf, and a
    # cancelling pair keeps a plain float32 sum finite
    ("bfloat16-overflow", dict(dtype="bfloat16"), dict(hidden={0: X, 1: nan_at(1, 1, 3.4e38)}),
     actstore.InvalidArgumentError, r"hidden\[1\] .*row 1.*too large for bfloat16"),
    ("bfloat16-overflow-cancelling", dict(dtype="bfloat16"),
     dict(hidden={0: np.array([[3.4e38, -3.4e38, 0], [0, 0, 0]], np.float32), 1: X}),
     actstore.InvalidArgumentError, r"hidden\[0\] .*row 0.*too large for bfloat16"),
    ("float64-overflows-bfloat16", dict(dtype="bfloat16"), dict(hidden={0: X, 1: np.array([[1e39, 0, 0], [0, 0, 0]])}),
     actstore.InvalidArgumentError, r"hidden\[1\] .*too large for bfloat16"),
]


@pytest.mark.parametrize("case", WRITE_CASES, ids=[c[0] for c in WRITE_CASES])
def test_writer_refuses_bad_input_and_leaves_nothing_readable(tmp_path, case):
    _, writer_kw, add_kw, error, message = case
    path = tmp_path / "ds"
    add = dict(hidden={0: X, 1: X}, **add_kw) if "hidden" not in add_kw else dict(add_kw)
    with pytest.raises(error, match=message):
        with DatasetWriter(str(path), model="m", layers=[0, 1], dim=3, **writer_kw) as w:
            w.add(["a", "b"], **add)
    with pytest.raises(actstore.DatasetNotFoundError):
        actstore.open_dataset(str(path))


# (id, DatasetWriter kwargs, error class, message regex): refused before anything is written
CTOR_CASES = [
    ("duplicate-layers", dict(layers=[1, 1]), actstore.InvalidArgumentError, r"layers lists \[1\] more than once"),
    ("fractional-layer", dict(layers=[0, 1.5]), actstore.InvalidArgumentError,
     r"layers=\.\.\.\): a layer must be a block number \(0, 1, \.\.\.\) or 'embeddings'; got 1\.5"),
    ("shard-bytes-zero", dict(shard_bytes=0), actstore.InvalidArgumentError,
     r"shard_bytes must be a positive integer; got 0"),
    ("shard-bytes-negative", dict(shard_bytes=-5), actstore.InvalidArgumentError, r"shard_bytes .* got -5"),
    ("dtype", dict(dtype="fp8"), actstore.InvalidArgumentError, r"'dtype' .*'float32'.*got 'fp8'"),
    ("dim", dict(dim=0), actstore.InvalidArgumentError, r"dim must be a positive integer; got 0"),
    ("logits-k", dict(logits_k=0), actstore.InvalidArgumentError, r"logits_k must be a positive integer"),
    ("all-not-first", dict(pooling=["mean", "all"]), actstore.InvalidArgumentError, r"'all' .*must be the first"),
]


@pytest.mark.parametrize("case", CTOR_CASES, ids=[c[0] for c in CTOR_CASES])
def test_writer_refuses_bad_arguments_before_writing(tmp_path, case):
    _, kw, error, message = case
    args = dict(model="m", layers=[0, 1], dim=3)
    with pytest.raises(error, match=message):
        DatasetWriter(str(tmp_path / "ds"), **{**args, **kw})
    assert not (tmp_path / "ds").exists() or not any((tmp_path / "ds").rglob("*.parquet"))


def test_check_finite_false_stores_nan_as_given(tmp_path):
    with DatasetWriter(str(tmp_path / "ds"), model="m", layers=[0], dim=3, check_finite=False) as w:
        w.add(["a", "b"], hidden={0: nan_at(1, 2)})
    got = actstore.open_dataset(str(tmp_path / "ds")).layer(0)
    assert np.isnan(got[1, 2]) and np.array_equal(got[0], X[0])


# ---------------------------------------------------------------- reader refusals

@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    base = tmp_path_factory.mktemp("valid")
    rng = np.random.default_rng(0)
    with DatasetWriter(str(base / "pooled"), model="m", layers=[0, 1], dim=4, shard_bytes=4 * 4 * 5,
                       logits_k=2, pooling=["last_token", "mean"]) as w:
        w.add([f"t{i}" for i in range(8)], hidden={L: rng.normal(size=(8, 4)) for L in (0, 1)},
              views={"mean": {L: rng.normal(size=(8, 4)) for L in (0, 1)}},
              labels=[0, 1] * 4, logits_topk=(np.ones((8, 2)), np.zeros((8, 2))))
    with DatasetWriter(str(base / "full"), model="m", layers=[0], dim=3, pooling="all",
                       shard_bytes=4 * 3 * 4) as w:
        w.add(["a", "b", "c"], hidden={0: [rng.normal(size=(t, 3)) for t in (2, 5, 3)]})
    return base


def edit_meta(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def run(root: Path) -> None:
        t = pq.read_table(root / INDEX)
        meta = {k.decode(): json.loads(v) for k, v in t.schema.metadata.items()}
        fn(meta)
        raw = {k: json.dumps(v) for k, v in meta.items()}
        pq.write_table(t.replace_schema_metadata(raw), root / INDEX)
    return run


def raw_meta(key: str, value: bytes) -> Callable[[Path], None]:
    def run(root: Path) -> None:
        t = pq.read_table(root / INDEX)
        pq.write_table(t.replace_schema_metadata({**t.schema.metadata, key.encode(): value}), root / INDEX)
    return run


def drop_column(name: str) -> Callable[[Path], None]:
    def run(root: Path) -> None:
        t = pq.read_table(root / INDEX)
        pq.write_table(t.drop_columns([name]).replace_schema_metadata(t.schema.metadata), root / INDEX)
    return run


def set_column(name: str, values: list) -> Callable[[Path], None]:
    def run(root: Path) -> None:
        t = pq.read_table(root / INDEX)
        i = t.column_names.index(name)
        t2 = t.set_column(i, name, pa.array(values, type=t.schema.field(name).type))
        pq.write_table(t2.replace_schema_metadata(t.schema.metadata), root / INDEX)
    return run


def hidden(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    return edit_meta(lambda m: fn(m["lmprobe:tensors"]["hidden_layers"]))


def rename_key(root: Path) -> None:
    """Rename the tensor inside a shard (same length, same data bytes)."""
    blob = (root / SHARD1).read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    header = blob[8:8 + n].replace(b'"hidden.layer_1"', b'"hidden.layer_9"')
    (root / SHARD1).write_bytes(blob[:8] + header + blob[8 + n:])


def flip_last_byte(rel: str) -> Callable[[Path], None]:
    def run(root: Path) -> None:
        blob = bytearray((root / rel).read_bytes())
        blob[-1] ^= 0x01
        (root / rel).write_bytes(bytes(blob))
    return run


def open_ds(root: Path, **kw) -> actstore.Dataset:
    return actstore.open_dataset(str(root), **kw)


# (id, dataset, breakage, action on the broken root, error class, message regex)
READ_CASES = [
    ("no-text-column", "pooled", drop_column("text"), open_ds, actstore.FormatError, r"'text' column"),
    ("no-shard_index", "pooled", drop_column("shard_index"), open_ds, actstore.FormatError, r"'shard_index' column"),
    ("no-logits-offsets", "pooled", drop_column("row_offset_logits"), lambda r: open_ds(r).logits_topk(),
     actstore.FormatError, r"'row_offset_logits' column"),
    ("negative-row_offset", "pooled", set_column("row_offset", [0, 1, 2, 3, -1, 0, 1, 2]), open_ds,
     actstore.FormatError, r"Index row 4 .*offset -1"),
    ("null-row_offset", "pooled", set_column("row_offset", [0, 1, 2, 3, None, 0, 1, 2]), open_ds,
     actstore.FormatError, r"'row_offset' column .*null .*row 4"),
    ("logits-k-huge", "pooled", edit_meta(lambda m: m["lmprobe:tensors"]["logits_topk"].update({"k": 10**12})),
     lambda r: open_ds(r).logits_topk(), actstore.IntegrityError,
     r"logits_topk_000\.safetensors.*not shaped \[\d+, 1000000000000\]"),
    ("logits-k-negative", "pooled", edit_meta(lambda m: m["lmprobe:tensors"]["logits_topk"].update({"k": -1})),
     lambda r: open_ds(r).logits_topk(), actstore.FormatError, r"logits_topk\.k must be a positive integer; got -1"),
    ("logits-offset-out-of-range", "pooled", set_column("row_offset_logits", [0] * 7 + [50]),
     lambda r: open_ds(r).logits_topk(), actstore.FormatError, r"Index row 7 .*offset 50"),
    ("tensors-not-json", "pooled", raw_meta("lmprobe:tensors", b"{not json"), open_ds, actstore.FormatError,
     r"lmprobe:tensors"),
    ("no-hidden-descriptor", "pooled", edit_meta(lambda m: [m["lmprobe:tensors"].pop("hidden_layers"),
                                                 m.pop("actstore:views")]), open_ds,
     actstore.FormatError, r"lmprobe:tensors\.hidden_layers"),
    ("layers-absent", "pooled", hidden(lambda h: h.pop("layers")), open_ds, actstore.FormatError,
     r"hidden_layers\.layers must be a list of integers"),
    ("layers-not-ints", "pooled", hidden(lambda h: h.update({"layers": ["a"]})), open_ds, actstore.FormatError,
     r"hidden_layers\.layers .*\['a'\]"),
    ("layer-not-stored", "pooled", hidden(lambda h: h.update({"layers": [0]})), lambda r: open_ds(r).layer(1),
     actstore.LayerNotFoundError, r"Layer 1 is not stored .*\[0\]"),
    ("layer-listed-but-no-file", "pooled", hidden(lambda h: h.update({"layers": [0, 1, 2]})),
     lambda r: open_ds(r).layer(2), actstore.IntegrityError, r"hidden_layer002_shard000\.safetensors.*missing"),
    ("shard-list-too-short", "pooled", hidden(lambda h: h["shards"].pop()), open_ds, actstore.FormatError,
     r"Index row 5 .*shard 1.*outside the 1 shards"),
    ("dim-lies", "pooled", hidden(lambda h: h.update({"dim": 5})), lambda r: open_ds(r).layer(1),
     actstore.IntegrityError, r"hidden_layer001_shard000\.safetensors.*shape \[5, 4\].*\[5, 5\]"),
    ("key-pattern", "pooled", hidden(lambda h: h.update({"key_pattern": "hidden"})), open_ds,
     actstore.FormatError, r"key_pattern must contain '\{layer\}'"),
    ("storage-unknown", "pooled", hidden(lambda h: h.update({"storage": "zip"})), open_ds, actstore.FormatError,
     r"hidden_layers\.storage .*'zip'"),
    ("tensor-key-missing", "pooled", rename_key, lambda r: open_ds(r).layer(1), actstore.IntegrityError,
     r"hidden_layer001_shard000\.safetensors.*no tensor 'hidden\.layer_1'"),
    # a width is data from strangers too: {layer:0999999999d} built a 1 GB name (40 s) before failing
    ("pattern-huge-width", "pooled", hidden(lambda h: h.update({"file_pattern": "t/{layer:09999999d}_{shard:03d}"})),
     open_ds, actstore.FormatError, r"hidden_layers\.file_pattern .*width"),
    ("view-pattern-escapes", "pooled",
     edit_meta(lambda m: m["actstore:views"]["mean"].update({"file_pattern": "../../{layer}{shard}"})), open_ds,
     actstore.UnsafePathError, r"actstore:views\.mean\.file_pattern escapes the dataset root"),
    ("actstore-major", "pooled", edit_meta(lambda m: m["actstore:format"].update({"version": "3.0"})), open_ds,
     actstore.UnsupportedVersionError, r"3\.0 .*2\.1"),
    ("logits-shard-missing", "pooled", lambda r: os.remove(r / LOGITS), lambda r: open_ds(r).logits_topk(),
     actstore.IntegrityError, r"logits_topk_000\.safetensors.*missing"),
    ("logits-checksum", "pooled", flip_last_byte(LOGITS),
     lambda r: open_ds(r, verify_checksums=True).logits_topk(), actstore.IntegrityError,
     r"logits_topk_000\.safetensors.*sha256"),
    ("view-checksum-on-get", "pooled", flip_last_byte("tensors/mean/hidden_layer000_shard001.safetensors"),
     lambda r: open_ds(r, verify_checksums=True).get([6], layers=[0], view="mean"), actstore.IntegrityError,
     r"mean/hidden_layer000_shard001\.safetensors.*sha256"),
    ("last-token-shards", "full", hidden(lambda h: h.update({"last_token_shards": 99})), open_ds,
     actstore.FormatError, r"last_token_shards must be between 1 and \d+ .*99"),
    ("token-shard-out-of-range", "full", set_column("token_shard_ids", [[9], [1], [1]]),
     lambda r: open_ds(r).tokens(0, 0), actstore.FormatError, r"Index row 0 .*token_shard_ids"),
    ("token-offset-out-of-range", "full", set_column("token_shard_offsets", [[999], [0], [0]]),
     lambda r: open_ds(r).tokens(0, 0), actstore.FormatError, r"Index row 0 .*token_shard_offsets"),
    ("row-out-of-range", "pooled", lambda r: None, lambda r: open_ds(r).get([8]),
     actstore.InvalidArgumentError, r"Row 8 is out of range .* 8 rows"),
]


@pytest.mark.parametrize("case", READ_CASES, ids=[c[0] for c in READ_CASES])
def test_broken_dataset_raises_the_documented_error(valid, tmp_path, case):
    _, which, breakage, action, error, message = case
    root = tmp_path / which
    shutil.copytree(valid / which, root)
    breakage(root)
    with pytest.raises(error, match=message):
        action(root)


@pytest.mark.parametrize("rel", [LOGITS, "tensors/mean/hidden_layer000_shard001.safetensors"])
def test_verify_names_every_corrupt_file_kind(valid, tmp_path, rel):
    root = tmp_path / "ds"
    shutil.copytree(valid / "pooled", root)
    flip_last_byte(rel)(root)
    report = open_ds(root).verify()
    assert not report.ok and len(report.problems) == 1 and rel in report.problems[0]
    assert "sha256" in report.problems[0]


def test_recorded_size_mismatch_is_reported_by_verify(valid, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(valid / "pooled", root)
    rel = "tensors/hidden_layer000_shard000.safetensors"
    edit_meta(lambda m: m["actstore:files"][rel].update({"size": 3}))(root)
    report = open_ds(root).verify()
    assert not report.ok and any(rel in p and "3" in p for p in report.problems)


# ---------------------------------------------------------------- nothing outside the root

_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    # "open" is raised by builtins.open, io.open and os.open (and mmap by "mmap.__new__" on the fd)
    if _OPENED is not None and event in ("open", "os.listdir", "os.scandir") and args:
        target = args[0]
        if isinstance(target, (str, bytes, os.PathLike)):
            _OPENED.append(os.fsdecode(target))


sys.addaudithook(_audit)  # permanent for the process, inert while _OPENED is None

_OUTSIDE = "outside/hidden_layer{layer:03d}_shard{shard:03d}.safetensors"
ESCAPES = [
    ("pattern-relative", lambda m, o: hidden_of(m).update({"file_pattern": "../" + _OUTSIDE})),
    ("pattern-absolute", lambda m, o: hidden_of(m).update({"file_pattern": str(o / _OUTSIDE)})),
    ("view-pattern", lambda m, o: m["actstore:views"]["mean"].update({"file_pattern": "../" + _OUTSIDE})),
    ("logits-file-relative", lambda m, o: m["lmprobe:tensors"]["logits_topk"]["shards"][0].update(
        {"file": "../outside/logits_topk_000.safetensors"})),
    ("logits-file-absolute", lambda m, o: m["lmprobe:tensors"]["logits_topk"]["shards"][0].update(
        {"file": str(o / "outside" / "logits_topk_000.safetensors")})),
    ("files-entry", lambda m, o: m["actstore:files"].update({"../outside/x.safetensors": {"size": 1, "sha256": "0" * 64}})),
    ("files-entry-absolute", lambda m, o: m["actstore:files"].update({str(o / "outside" / "x"): {"size": 1, "sha256": "0" * 64}})),
]


def hidden_of(meta: dict) -> dict:
    return meta["lmprobe:tensors"]["hidden_layers"]


@pytest.mark.parametrize("case", ESCAPES, ids=[c[0] for c in ESCAPES])
def test_entries_pointing_at_real_files_outside_are_refused_unopened(valid, tmp_path, case):
    """The escaping entry points at *valid* shards outside the root, so a reader that followed it
    would succeed; it must refuse at open, before any file outside the root is opened."""
    global _OPENED
    _, edit = case
    root = tmp_path / "ds"
    shutil.copytree(valid / "pooled", root)
    shutil.copytree(valid / "pooled" / "tensors", tmp_path / "outside")  # look-alike shards
    (tmp_path / "outside" / "x").write_bytes(b"x")
    edit_meta(lambda m: edit(m, tmp_path))(root)
    _OPENED = []
    try:
        with pytest.raises(actstore.UnsafePathError, match=r"escapes the dataset root|absolute"):
            actstore.open_dataset(str(root))
        opened = list(_OPENED)
    finally:
        _OPENED = None
    inside = str(root) + os.sep
    assert opened, "the audit hook saw no open at all (the index must have been opened)"
    assert not [p for p in opened if str(tmp_path) in p and not p.startswith(inside)], opened
