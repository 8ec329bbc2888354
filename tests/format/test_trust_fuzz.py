"""Fuzzing the reader: mutated metadata JSON, safetensors headers and index columns.

Whatever a mutation does, reading the dataset (open, info, every layer of every view, a
gather, the logits, verify) must either give back exactly the stored values the (mutated)
index points at, or raise an :class:`actstore.ActstoreError` - within 2 s and without
large memory growth per example. ~150 examples in all, a few seconds each module run.
"""

from __future__ import annotations

import json
import resource
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actstore
from actstore import DatasetWriter

INDEX = "index/train-00000-of-00001.parquet"
TIME_BOUND_S = 2.0
RSS_BOUND_KB = 256 << 10  # ru_maxrss is in KiB on Linux
SETTINGS = settings(max_examples=50, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

N, DIM = 9, 4


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    base = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(7)
    X = {L: rng.normal(size=(N, DIM)).astype(np.float32) for L in (0, 1)}
    M = {L: rng.normal(size=(N, DIM)).astype(np.float32) for L in (0, 1)}
    values, indices = rng.normal(size=(N, 2)).astype(np.float32), rng.integers(0, 99, (N, 2))
    with DatasetWriter(str(base / "ds"), model="m", layers=[0, 1], dim=DIM, shard_bytes=4 * DIM * 4,
                       logits_k=2, pooling=["last_token", "mean"]) as w:
        w.add([f"t{i}" for i in range(N)], hidden=X, views={"mean": M}, labels=[i % 2 for i in range(N)],
              logits_topk=(values, indices))
    ds = actstore.open_dataset(str(base / "ds"))
    # what each (shard, offset) of each view/layer holds, to check reads after index mutations
    t = ds.index
    stored = {("last_token", L): {(int(s), int(o)): X[L][i] for i, (s, o) in
                                  enumerate(zip(t.column("shard_index").to_pylist(),
                                                t.column("row_offset").to_pylist()))} for L in (0, 1)}
    for L in (0, 1):
        stored[("mean", L)] = {k: M[L][i] for i, k in enumerate(stored[("last_token", L)])}
    return base / "ds", {"X": X, "M": M, "stored": stored, "logits": (values, indices)}


def _peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def exercise(root: Path, check) -> None:
    """Read everything; ``check(ds, view, layer, array)`` validates values that came back."""
    start, peak = time.perf_counter(), _peak_kb()
    try:
        ds = actstore.open_dataset(str(root))
        info = ds.info
        repr(ds)
        for name in info.views:
            for L in ds._view(name).layers:
                check(ds, name, L, ds.layer(L, view=name))
        ds.get([0, N - 1], layers=list(ds._view(None).layers)[:1])
        ds.logits_topk()
        ds.verify()
    except actstore.ActstoreError:
        pass
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_BOUND_S, f"one example took {elapsed:.1f} s"
    assert _peak_kb() - peak < RSS_BOUND_KB, f"peak RSS grew by {(_peak_kb() - peak) >> 10} MiB"


def exact(origin_data: dict[str, Any]):
    """Values must be what the index (possibly mutated) points at in the stored files."""
    def check(ds, name, layer, arr):
        t = ds.index
        key = ("last_token" if name == ds._view(None).name else name, layer)
        assert key in origin_data["stored"], f"read view {name!r} layer {layer} that was never written"
        table = origin_data["stored"][key]
        for i, (s, o) in enumerate(zip(t.column("shard_index").to_pylist(), t.column("row_offset").to_pylist())):
            np.testing.assert_array_equal(arr[i], table[(s, o)])
    return check


def _copy(src: Path) -> tuple[tempfile.TemporaryDirectory, Path]:
    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name) / "ds"
    shutil.copytree(src, root)
    return tmp, root


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


@SETTINGS
@given(data=st.data())
def test_fuzz_metadata_json(origin, data):
    src, truth = origin
    tmp, root = _copy(src)
    with tmp:
        t = pq.read_table(root / INDEX)
        raw = dict(t.schema.metadata)
        key = data.draw(st.sampled_from(sorted(k for k in raw if k.startswith((b"lmprobe:", b"actstore:")))))
        how = data.draw(st.sampled_from(["replace", "delete", "bytes"]))
        if how == "bytes":
            blob = bytearray(raw[key])
            for _ in range(data.draw(st.integers(1, 4))):
                i = data.draw(st.integers(0, max(0, len(blob) - 1)))
                blob[i:i + 1] = data.draw(st.binary(min_size=0, max_size=3))
            raw[key] = bytes(blob)
        else:
            doc = json.loads(raw[key])
            path = data.draw(st.sampled_from(_paths(doc)))
            if not path:
                doc = data.draw(json_values) if how == "replace" else None
            else:
                node = doc
                for p in path[:-1]:
                    node = node[p]
                if how == "replace":
                    node[path[-1]] = data.draw(json_values)
                else:
                    node.pop(path[-1])
            raw[key] = json.dumps(doc).encode() if doc is not None else b""
        pq.write_table(t.replace_schema_metadata(raw), root / INDEX)
        exercise(root, exact(truth))


@SETTINGS
@given(data=st.data())
def test_fuzz_safetensors_headers(origin, data):
    src, truth = origin
    tmp, root = _copy(src)
    with tmp:
        t = pq.read_table(root / INDEX)  # as lmprobe writes: no recorded sizes to stop at
        pq.write_table(t.replace_schema_metadata(
            {k: v for k, v in t.schema.metadata.items() if k != b"actstore:files"}), root / INDEX)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*.safetensors"))
        rel = data.draw(st.sampled_from(files))
        blob = bytearray((root / rel).read_bytes())
        n = struct.unpack("<Q", blob[:8])[0]
        if data.draw(st.booleans()):  # JSON-level: one value replaced
            doc = json.loads(blob[8:8 + n])
            path = data.draw(st.sampled_from(_paths(doc)[1:]))
            node = doc
            for p in path[:-1]:
                node = node[p]
            node[path[-1]] = data.draw(json_values)
            head = json.dumps(doc).encode()
            head += b" " * (-len(head) % 8)
            blob = bytearray(struct.pack("<Q", len(head)) + head + bytes(blob[8 + n:]))
        else:  # byte-level, the length prefix included
            for _ in range(data.draw(st.integers(1, 4))):
                i = data.draw(st.integers(0, 8 + n - 1))
                blob[i] = data.draw(st.integers(0, 255))
        (root / rel).write_bytes(bytes(blob))
        exercise(root, exact(truth))


column_values = {
    "int": st.lists(st.integers(-3, 12), min_size=N, max_size=N).map(lambda v: pa.array(v, pa.int64())),
    "big": st.lists(st.integers(-(2**63), 2**63 - 1), min_size=N, max_size=N).map(lambda v: pa.array(v, pa.int64())),
    "uint": st.lists(st.integers(0, 2**64 - 1), min_size=N, max_size=N).map(lambda v: pa.array(v, pa.uint64())),
    "float": st.lists(st.floats(-3, 12), min_size=N, max_size=N).map(lambda v: pa.array(v, pa.float64())),
    "null": st.lists(st.none() | st.integers(0, 3), min_size=N, max_size=N).map(lambda v: pa.array(v, pa.int32())),
    "str": st.lists(st.text(max_size=4), min_size=N, max_size=N).map(pa.array),
    "binary": st.lists(st.binary(max_size=4), min_size=N, max_size=N).map(lambda v: pa.array(v, pa.binary())),
}


@SETTINGS
@given(data=st.data())
def test_fuzz_index_columns(origin, data):
    src, truth = origin
    tmp, root = _copy(src)
    with tmp:
        t = pq.read_table(root / INDEX)
        name = data.draw(st.sampled_from(t.column_names))
        how = data.draw(st.sampled_from(sorted(column_values) + ["drop", "shuffle"]))
        if how == "drop":
            t2 = t.drop_columns([name])
        elif how == "shuffle":
            perm = data.draw(st.permutations(range(N)))
            t2 = t.set_column(t.column_names.index(name), name, t.column(name).take(pa.array(perm)))
        else:
            t2 = t.set_column(t.column_names.index(name), name, data.draw(column_values[how]))
        pq.write_table(t2.replace_schema_metadata(t.schema.metadata), root / INDEX)
        exercise(root, exact(truth))


# ---------------------------------------------------------------- full-sequence datasets

TOKENS = (2, 5, 3, 1)


@pytest.fixture(scope="module")
def full_origin(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    base = tmp_path_factory.mktemp("fuzz_full")
    rng = np.random.default_rng(3)
    states = [rng.normal(size=(t, 3)).astype(np.float32) for t in TOKENS]
    with DatasetWriter(str(base / "ds"), model="m", layers=[0], dim=3, pooling="all",
                       shard_bytes=4 * 3 * 4) as w:
        w.add([f"p{i}" for i in range(len(TOKENS))], hidden={0: states})
    ds = actstore.open_dataset(str(base / "ds"))
    t = ds.index
    tokens = {}
    for r in range(len(TOKENS)):
        got = ds.tokens(r, 0)
        for j, key in enumerate(zip(t.column("token_shard_ids")[r].as_py(), t.column("token_shard_offsets")[r].as_py())):
            tokens[key] = got[j]
    last = {(int(s), int(o)): states[i][-1] for i, (s, o) in
            enumerate(zip(t.column("shard_index").to_pylist(), t.column("row_offset").to_pylist()))}
    return base / "ds", {"tokens": tokens, "last": last}


def exercise_full(root: Path, truth: dict[str, Any]) -> None:
    start, peak = time.perf_counter(), _peak_kb()
    try:
        ds = actstore.open_dataset(str(root))
        _ = ds.info
        repr(ds)
        X = ds.layer(0)
        t = ds.index
        for i, key in enumerate(zip(t.column("shard_index").to_pylist(), t.column("row_offset").to_pylist())):
            np.testing.assert_array_equal(X[i], truth["last"][key])
        for r in range(len(ds)):
            got = ds.tokens(r, 0)
            keys = list(zip(t.column("token_shard_ids")[r].as_py(), t.column("token_shard_offsets")[r].as_py()))
            for j, key in enumerate(keys):
                np.testing.assert_array_equal(got[j], truth["tokens"][key])
        ds.verify()
    except actstore.ActstoreError:
        pass
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_BOUND_S, f"one example took {elapsed:.1f} s"
    assert _peak_kb() - peak < RSS_BOUND_KB, f"peak RSS grew by {(_peak_kb() - peak) >> 10} MiB"


token_lists = st.lists(st.none() | st.lists(st.integers(-2, 12), max_size=6), min_size=len(TOKENS),
                       max_size=len(TOKENS)).map(lambda v: pa.array(v, pa.list_(pa.int64())))


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_full_sequence(full_origin, data):
    src, truth = full_origin
    tmp, root = _copy(src)
    with tmp:
        t = pq.read_table(root / INDEX)
        raw = dict(t.schema.metadata)
        if data.draw(st.booleans()):
            doc = json.loads(raw[b"lmprobe:tensors"])
            path = data.draw(st.sampled_from(_paths(doc)[1:]))
            node = doc
            for p in path[:-1]:
                node = node[p]
            node[path[-1]] = data.draw(json_values)
            raw[b"lmprobe:tensors"] = json.dumps(doc).encode()
        else:
            name = data.draw(st.sampled_from(["token_shard_ids", "token_shard_offsets", "shard_index",
                                              "row_offset"]))
            col = data.draw(token_lists) if name.startswith("token") else data.draw(
                st.lists(st.integers(-2, 12), min_size=len(TOKENS), max_size=len(TOKENS)).map(pa.array))
            t = t.set_column(t.column_names.index(name), name, col)
        pq.write_table(t.replace_schema_metadata(raw), root / INDEX)
        exercise_full(root, truth)


# ---------------------------------------------------------------- lmprobe-written layouts

@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_lmprobe_layouts(valid_examples, data):
    """lmprobe's float32 claim over F16/BF16 shards, I64 logits: headers and descriptor values."""
    name = data.draw(st.sampled_from(["lmprobe-f16-claims-f32", "lmprobe-bf16-claims-f32", "logits-i64"]))
    src, expected = valid_examples[name]
    tmp, root = _copy(src)
    with tmp:
        if data.draw(st.booleans()):
            rel = data.draw(st.sampled_from(sorted(str(p.relative_to(root)) for p in root.rglob("*.safetensors"))))
            blob = bytearray((root / rel).read_bytes())
            n = struct.unpack("<Q", blob[:8])[0]
            for _ in range(data.draw(st.integers(1, 3))):
                blob[data.draw(st.integers(0, 8 + n - 1))] = data.draw(st.integers(0, 255))
            (root / rel).write_bytes(bytes(blob))
        else:
            t = pq.read_table(root / INDEX)
            raw = dict(t.schema.metadata)
            doc = json.loads(raw[b"lmprobe:tensors"])
            path = data.draw(st.sampled_from(_paths(doc)[1:]))
            node = doc
            for p in path[:-1]:
                node = node[p]
            node[path[-1]] = data.draw(json_values)
            raw[b"lmprobe:tensors"] = json.dumps(doc).encode()
            pq.write_table(t.replace_schema_metadata(raw), root / INDEX)
        start, peak = time.perf_counter(), _peak_kb()
        try:
            ds = actstore.open_dataset(str(root))
            _ = ds.info
            for L in ds._view(None).layers:
                got = ds.layer(L)
                assert L in expected["X"], f"layer {L} was never written"
                np.testing.assert_array_equal(got, expected["X"][L])
            values, indices = ds.logits_topk()
            np.testing.assert_array_equal(values, expected["values"])
            np.testing.assert_array_equal(indices, expected["indices"])
        except actstore.ActstoreError:
            pass
        assert time.perf_counter() - start < TIME_BOUND_S
        assert _peak_kb() - peak < RSS_BOUND_KB
