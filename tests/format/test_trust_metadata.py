"""Hostile schema metadata, headers and index columns: only ActstoreError, naming key and file.

Each case edits a valid dataset so that one value has the wrong JSON type, range or shape;
today's code raised KeyError, IndexError, ValueError, OverflowError, RecursionError,
UnicodeDecodeError or TypeError for them, or silently accepted them.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import actstore
from actstore import DatasetWriter

INDEX = "index/train-00000-of-00001.parquet"
SHARD0 = "tensors/hidden_layer000_shard000.safetensors"


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    base = tmp_path_factory.mktemp("trust")
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


def raw_meta(key: str, value: bytes) -> Callable[[Path], None]:
    def run(root: Path) -> None:
        t = pq.read_table(root / INDEX)
        pq.write_table(t.replace_schema_metadata({**t.schema.metadata, key.encode(): value}), root / INDEX)
    return run


def edit(key: str, fn: Callable[[object], object]) -> Callable[[Path], None]:
    """Replace ``meta[key]`` (decoded) by ``fn(value)``; the result is written as raw JSON text
    (``fn`` may return bytes to write something json.dumps would not)."""
    def run(root: Path) -> None:
        t = pq.read_table(root / INDEX)
        value = json.loads(t.schema.metadata[key.encode()])
        new = fn(value)
        raw_meta(key, new if isinstance(new, bytes) else json.dumps(new).encode())(root)
    return run


def hidden(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def f(t: dict) -> dict:
        fn(t["hidden_layers"])
        return t
    return edit("lmprobe:tensors", f)


def set_(d: dict, **kw: object) -> None:
    d.update(kw)


def replace_column(name: str, array: pa.Array) -> Callable[[Path], None]:
    def run(root: Path) -> None:
        t = pq.read_table(root / INDEX)
        i = t.column_names.index(name)
        t2 = t.set_column(i, name, array).replace_schema_metadata(t.schema.metadata)
        pq.write_table(t2, root / INDEX)
    return run


def shard_header(fn: Callable[[dict], None], rel: str = SHARD0, raw: bytes | None = None):
    """Rewrite one shard's header JSON in place, keeping the data bytes."""
    def run(root: Path) -> None:
        blob = (root / rel).read_bytes()
        n = struct.unpack("<Q", blob[:8])[0]
        data = blob[8 + n:]
        if raw is not None:
            text = raw
        else:
            doc = json.loads(blob[8:8 + n])
            fn(doc)
            text = json.dumps(doc).encode()
        text += b" " * (-len(text) % 8)
        (root / rel).write_bytes(struct.pack("<Q", len(text)) + text + data)
        t = pq.read_table(root / INDEX)  # drop the recorded sizes, so the header itself is read
        meta = {k: v for k, v in t.schema.metadata.items() if k != b"actstore:files"}
        pq.write_table(t.replace_schema_metadata(meta), root / INDEX)
    return run


def read_all(root: Path) -> None:
    ds = actstore.open_dataset(str(root))
    _ = ds.info
    for L in ds.info.layers:
        ds.layer(L)
    ds.logits_topk()


def open_only(root: Path) -> None:
    actstore.open_dataset(str(root))


def read_full(root: Path) -> None:
    ds = actstore.open_dataset(str(root))
    ds.layer(0)
    ds.tokens(0, 0)


K = "lmprobe:tensors"
# (id, dataset, breakage, action, regex the message must match: the key and the file)
CASES = [
    ("deep-json", "pooled", raw_meta(K, b"[" * 200_000 + b"]" * 200_000), open_only, r"lmprobe:tensors.*nests JSON"),
    ("deep-json-unclosed", "pooled", raw_meta("actstore:labels", b"{\"a\":" * 100_000), open_only,
     r"actstore:labels.*nests JSON"),
    ("not-utf8", "pooled", raw_meta(K, b"\xff\xfe{}"), open_only, r"lmprobe:tensors.*UTF-8"),
    ("must-understand-int", "pooled", edit("actstore:format", lambda v: {**v, "must_understand": 5}), open_only,
     r"must_understand must be a list of strings"),
    ("must-understand-dicts", "pooled", edit("actstore:format", lambda v: {**v, "must_understand": [{}]}),
     open_only, r"must_understand must be a list of strings"),
    ("format-not-object", "pooled", raw_meta("actstore:format", b"[1]"), open_only, r"actstore:format"),
    ("dtype-list", "pooled", hidden(lambda h: set_(h, dtype=["float32"])), open_only, r"hidden_layers\.dtype"),
    ("dtype-unknown", "pooled", hidden(lambda h: set_(h, dtype="int4")), open_only, r"hidden_layers\.dtype"),
    ("num-prompts-string", "pooled", hidden(lambda h: h["shards"][0].update(num_prompts="5")), open_only,
     r"shards\[0\]\.num_prompts"),
    ("num-prompts-float", "pooled", hidden(lambda h: h["shards"][0].update(num_prompts=5.0)), open_only,
     r"shards\[0\]\.num_prompts"),
    ("num-prompts-negative", "pooled", hidden(lambda h: h["shards"][0].update(num_prompts=-5)), open_only,
     r"shards\[0\]\.num_prompts"),
    ("num-tokens-string", "full", hidden(lambda h: h["shards"][-1].update(num_tokens="x")), open_only,
     r"num_tokens"),
    ("last-token-shards-inf", "full",
     edit(K, lambda t: json.dumps(t).replace('"last_token_shards": ', '"last_token_shards": 1e999, "x": ').encode()),
     open_only, r"last_token_shards"),
    ("last-token-shards-string", "full", hidden(lambda h: set_(h, last_token_shards="1")), open_only,
     r"last_token_shards"),
    ("layers-bool", "pooled", hidden(lambda h: set_(h, layers=[True, 1])), open_only, r"layers"),
    ("layer-huge", "pooled", hidden(lambda h: set_(h, layers=[0, 10**30])), open_only, r"layers"),
    ("dim-float", "pooled", hidden(lambda h: set_(h, dim=4.0)), open_only, r"hidden_layers\.dim"),
    ("key-pattern-index", "pooled", hidden(lambda h: set_(h, key_pattern="hidden.layer_{layer}{0}")), open_only,
     r"key_pattern"),
    ("key-pattern-attr", "pooled", hidden(lambda h: set_(h, key_pattern="{layer}{layer.real}")), open_only,
     r"key_pattern"),
    ("key-pattern-huge-width", "pooled",
     hidden(lambda h: set_(h, key_pattern="hidden.layer_{layer}{layer:0999999999d}")), open_only,
     r"key_pattern .*width"),
    ("view-not-object", "pooled", hidden(lambda h: set_(h, view=["x"])), open_only, r"hidden_layers\.view"),
    ("pooling-not-string", "pooled", hidden(lambda h: set_(h, pooling={"a": 1})), open_only, r"pooling"),
    ("hidden-not-object", "pooled", edit(K, lambda t: {**t, "hidden_layers": [1]}), open_only, r"hidden_layers"),
    ("logits-shard-no-rows", "pooled",
     edit(K, lambda t: (t["logits_topk"]["shards"][0].pop("num_prompts"), t)[1]), open_only,
     r"logits_topk\.shards\[0\]\.num_prompts"),
    ("logits-k-string", "pooled", edit(K, lambda t: (t["logits_topk"].update(k="2"), t)[1]), open_only,
     r"logits_topk\.k"),
    ("files-size-bool", "pooled",
     edit("actstore:files", lambda f: {p: {**e, "size": True} for p, e in f.items()}), open_only, r"actstore:files"),
    ("files-sha-not-hex", "pooled",
     edit("actstore:files", lambda f: {p: {**e, "sha256": "z" * 64} for p, e in f.items()}), open_only,
     r"actstore:files"),
    ("version-list", "pooled", raw_meta("lmprobe:format_version", b"[2]"), open_only, r"format_version"),
    ("num-prompts-disagrees", "pooled", raw_meta("lmprobe:num_prompts", b"99"), open_only,
     r"lmprobe:num_prompts is 99 .*8 rows"),
    ("num-prompts-string", "pooled", raw_meta("lmprobe:num_prompts", b'"8"'), open_only, r"lmprobe:num_prompts"),
    # index columns
    ("label-struct", "pooled", replace_column("label", pa.array([{"a": i} for i in range(8)])), open_only,
     r"'label' column"),
    ("text-binary", "pooled", replace_column("text", pa.array([b"\xff"] * 8, pa.binary())), open_only,
     r"'text' column must hold strings"),
    ("row-offset-fractional", "pooled",
     replace_column("row_offset", pa.array([0.0, 1.5, 2.0, 3.0, 4.0, 0.0, 1.0, 2.0])), open_only,
     r"'row_offset' column must hold integers"),
    ("shard-index-float", "pooled", replace_column("shard_index", pa.array([0.0] * 5 + [1.0] * 3)), open_only,
     r"'shard_index' column must hold integers"),
    # safetensors headers
    ("header-shape-float", "pooled", shard_header(lambda d: d["hidden.layer_0"].update(shape=[5.0, 4.0])),
     read_all, r"hidden_layer000_shard000.*shape"),
    ("header-shape-inf", "pooled",
     shard_header(None, raw=b'{"hidden.layer_0":{"dtype":"F32","shape":[1e999,4],"data_offsets":[0,80]}}'),
     read_all, r"hidden_layer000_shard000.*shape"),
    ("header-dtype-list", "pooled", shard_header(lambda d: d["hidden.layer_0"].update(dtype=["F32"])),
     read_all, r"hidden_layer000_shard000.*dtype"),
    ("header-offsets-strings", "pooled",
     shard_header(lambda d: d["hidden.layer_0"].update(data_offsets=["0", "80"])), read_all,
     r"hidden_layer000_shard000.*data_offsets"),
    ("header-deep", "pooled", shard_header(None, raw=b"[" * 100_000 + b"]" * 100_000), read_all,
     r"hidden_layer000_shard000.*nests JSON"),
    ("header-not-utf8", "pooled", shard_header(None, raw=b'{"\xff":1}'), read_all,
     r"hidden_layer000_shard000.*UTF-8"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_metadata_raises_an_actstore_error_naming_key_and_file(valid, tmp_path, case):
    _, which, breakage, action, message = case
    root = tmp_path / which
    shutil.copytree(valid / which, root)
    breakage(root)
    with pytest.raises(actstore.ActstoreError, match=message) as info:
        action(root)
    text = str(info.value)
    assert INDEX in text or ".safetensors" in text, text  # the file is named


@pytest.mark.parametrize("pattern", [
    "tensors/mean/hidden_layer{layer:03d}_shard{shard:03d}.safetensors",  # another view's files
    "tensors/hidden_layer{layer:03d}_shard000.safetensors",                # no {shard}, 2 shards
    "tensors/hidden_layer{layer:02d}_shard{shard:03d}.safetensors",
])
def test_primary_file_pattern_must_be_exactly_canonical(valid, tmp_path, pattern):
    root = tmp_path / "ds"
    shutil.copytree(valid / "pooled", root)
    if "{layer:02d}" in pattern:  # make the files exist under that name, so reading would work
        for p in (root / "tensors").glob("hidden_layer0*_shard*.safetensors"):
            p.rename(p.with_name(p.name.replace("hidden_layer0", "hidden_layer", 1)))
    hidden(lambda h: set_(h, file_pattern=pattern))(root)
    with pytest.raises(actstore.FormatError, match=r"file_pattern"):
        actstore.open_dataset(str(root))


def test_view_pattern_without_shard_field_is_refused(valid, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(valid / "pooled", root)
    edit("actstore:views", lambda v: (v["mean"].update(
        file_pattern="tensors/mean/hidden_layer{layer:03d}_shard000.safetensors"), v)[1])(root)
    with pytest.raises(actstore.FormatError, match=r"no \{shard\} field"):
        actstore.open_dataset(str(root))


@pytest.mark.parametrize("key,value", [
    ("lmprobe:model", b'{"name": ["x"], "revision": null}'),
    ("lmprobe:model", b'{"name": "m", "revision": {"a": 1}}'),
    ("actstore:description", b"[1, 2]"),
])
def test_info_fields_must_have_their_json_types(valid, tmp_path, key, value):
    root = tmp_path / "ds"
    shutil.copytree(valid / "pooled", root)
    raw_meta(key, value)(root)
    with pytest.raises(actstore.FormatError, match=key.split(":")[1].split(".")[0]):
        _ = actstore.open_dataset(str(root)).info


@pytest.mark.parametrize("column,values", [
    ("token_shard_ids", pa.array([None, [1], [1]], pa.list_(pa.int64()))),
    ("token_shard_offsets", pa.array([[2**64 - 1], [0], [0]], pa.list_(pa.uint64()))),
])
def test_hostile_token_columns_raise_format_error(valid, tmp_path, column, values):
    root = tmp_path / "full"
    shutil.copytree(valid / "full", root)
    replace_column(column, values)(root)
    with pytest.raises(actstore.FormatError, match=r"Index row 0 has invalid token_shard"):
        actstore.open_dataset(str(root)).tokens(0, 0)


@pytest.mark.parametrize("key,code", [("logits_topk.values", "I32"), ("logits_topk.indices", "F32")])
def test_logits_of_another_dtype_of_the_same_width_are_refused(valid, tmp_path, key, code):
    root = tmp_path / "pooled"
    shutil.copytree(valid / "pooled", root)
    shard_header(lambda d: d[key].update(dtype=code), rel="tensors/logits_topk_000.safetensors")(root)
    with pytest.raises(actstore.IntegrityError, match=rf"logits_topk_000.*{key}.*dtype {code}"):
        actstore.open_dataset(str(root)).logits_topk()
