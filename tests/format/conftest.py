"""Valid example datasets for the format tests, built by hand from specs/format-v2.md.

They are written with pyarrow and a ten-line safetensors writer, not with ``DatasetWriter``,
so the reader is checked against the spec rather than against its own writer (a change that
moved writer and reader together would pass every round trip). Each example is a variant a
reader MUST accept: what lmprobe 0.10.3 writes or needs (only ``lmprobe:*`` keys, a float32
claim over BF16 shards, null ``num_tokens``, no labels), forward-compatible additions (newer
minor versions, unknown keys, fields and tensor types), ``I64`` logits indices, files the
reader does not know, and a Hugging Face cache snapshot made of links into its blob store.

The invalid cases are tables next to their tests: ``test_invalid.py`` and ``test_conformance.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actstore.format.dtypes import f32_to_bf16_bits

INDEX = "index/train-00000-of-00001.parquet"
HIDDEN = "tensors/hidden_layer{layer:03d}_shard{shard:03d}.safetensors"
CODES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int32): "I32",
         np.dtype(np.int64): "I64"}


def save_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """Write ``{key: (dtype code, array)}`` as a safetensors file (spec §2.1)."""
    header, blobs, pos = {}, [], 0
    for key, (code, arr) in tensors.items():
        data = np.ascontiguousarray(arr).tobytes()
        header[key] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [pos, pos + len(data)]}
        blobs.append(data)
        pos += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def build_lmprobe_style(root: Path, *, n: int = 7, dim: int = 3, layers: tuple[int, ...] = (0, 2),
                        shard_rows: int = 3, dtype: str = "float32", labels: bool = True,
                        logits_index: type = np.int32, k: int = 2, seed: int = 0,
                        extra_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pooled v2 dataset as lmprobe 0.10.3 lays it out (descriptor dtype always 'float32',
    row_bytes dim*4, null num_tokens), with top-k logits on their own shard boundaries.

    Returns what a reader must give back: texts, labels, per-layer float32 values, logits.
    """
    rng = np.random.default_rng(seed)
    X = {L: rng.standard_normal((n, dim)).astype(np.float32) for L in layers}
    shards = [(a, min(n, a + shard_rows)) for a in range(0, n, shard_rows)]
    for s, (a, b) in enumerate(shards):
        for L in layers:
            block = X[L][a:b]
            if dtype == "bfloat16":
                stored = ("BF16", f32_to_bf16_bits(block))
            else:
                stored = (CODES[np.dtype(dtype)], block.astype(dtype))
            save_safetensors(root / HIDDEN.format(layer=L, shard=s), {f"hidden.layer_{L}": stored})
    want = {L: _as_read(x, dtype) for L, x in X.items()}
    values = rng.standard_normal((n, k)).astype(np.float32)
    indices = rng.integers(0, 50_000, (n, k)).astype(logits_index)
    logit_shards = [(a, min(n, a + 2)) for a in range(0, n, 2)]  # other boundaries than hidden
    for s, (a, b) in enumerate(logit_shards):
        save_safetensors(root / f"tensors/logits_topk_{s:03d}.safetensors",
                         {"logits_topk.values": ("F32", values[a:b]),
                          "logits_topk.indices": (CODES[np.dtype(logits_index)], indices[a:b])})
    texts = [f"example prompt {i}" for i in range(n)]
    label_values = [i % 3 for i in range(n)]
    cols: dict[str, pa.Array] = {"text": pa.array(texts, pa.string())}
    if labels:
        cols["label"] = pa.array(label_values, pa.int32())
    cols["num_tokens"] = pa.array([None] * n, pa.int32())
    cols["shard_index"] = pa.array([i // shard_rows for i in range(n)], pa.int32())
    cols["row_offset"] = pa.array([i % shard_rows for i in range(n)], pa.int32())
    cols["shard_index_logits"] = pa.array([i // 2 for i in range(n)], pa.int32())
    cols["row_offset_logits"] = pa.array([i % 2 for i in range(n)], pa.int32())
    meta = {
        "lmprobe:format_version": "2.0",
        "lmprobe:model": {"name": "org/example", "revision": None},
        "lmprobe:num_prompts": n,
        "lmprobe:prompt_ordering": "random",
        "lmprobe:tensors": {
            "hidden_layers": {
                "type": "hidden", "layers": list(layers), "dim": dim, "dtype": "float32",
                "layout": "per_layer", "file_pattern": HIDDEN, "key_pattern": "hidden.layer_{layer}",
                "storage": "pooled", "pooling": "last_token", "row_bytes": dim * 4,
                "shards": [{"num_prompts": b - a} for a, b in shards],
            },
            "logits_topk": {
                "type": "logits_topk", "k": k, "dtype": "float32", "pooling": "last_token",
                "file_pattern": "tensors/logits_topk_{shard:03d}.safetensors", "row_bytes": k * 12,
                "shards": [{"file": f"tensors/logits_topk_{s:03d}.safetensors", "num_prompts": b - a}
                           for s, (a, b) in enumerate(logit_shards)],
            },
        },
        "lmprobe:provenance": {"lmprobe_version": "0.10.3", "extraction_backend": "local"},
    }
    for key, value in (extra_meta or {}).items():  # dotted keys reach into nested dicts
        *path, last = key.split(".")
        node = meta
        for part in path:
            node = node[part]
        node[last] = value
    table = pa.table(cols).replace_schema_metadata({k_: json.dumps(v) for k_, v in meta.items()})
    (root / "index").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / INDEX)
    return {"texts": texts, "labels": label_values if labels else None, "X": want,
            "values": values, "indices": indices.astype(np.int64), "dtype": dtype}


def _as_read(x: np.ndarray, dtype: str) -> np.ndarray:
    """What ``Dataset.layer`` returns for float32 values stored as ``dtype``."""
    if dtype == "bfloat16":
        return (f32_to_bf16_bits(x).astype(np.uint32) << 16).view(np.float32)
    return x.astype(dtype)


def as_hf_snapshot(src: Path, cache: Path) -> Path:
    """Re-lay ``src`` as a Hugging Face cache entry: every file of the snapshot is a relative
    link into ``blobs/`` (outside the snapshot folder), as ``snapshot_download`` leaves it."""
    entry = cache / "datasets--org--example"
    snap = entry / "snapshots" / ("ab" * 20)
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = f.relative_to(src)
        blob = entry / "blobs" / hashlib.sha1(str(rel).encode()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(f.read_bytes())
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snap


# (name, builder keyword arguments): each variant a conforming reader MUST accept
VALID_EXAMPLES: dict[str, dict[str, Any]] = {
    "lmprobe-f32": {},
    "lmprobe-f16-claims-f32": {"dtype": "float16"},
    "lmprobe-bf16-claims-f32": {"dtype": "bfloat16", "shard_rows": 4},
    "no-label-column": {"labels": False},
    "logits-i64": {"logits_index": np.int64},
    "one-row-shards": {"shard_rows": 1, "n": 3},
    "newer-minor-and-unknown-keys": {"extra_meta": {
        "lmprobe:format_version": "2.7",
        "lmprobe:future_key": {"anything": [1, 2]},
        "actstore:format": {"version": "2.9", "must_understand": [], "future": True},
        "actstore:unknown_extension": {"x": 1},
        "lmprobe:tensors.hidden_layers.future_field": "ignored",
        "lmprobe:tensors.router_logits": {"type": "router", "layers": [0], "num_experts": 4,
                                          "dtype": "float32", "shards": []},
    }},
}


@pytest.fixture(scope="session")
def valid_examples(tmp_path_factory) -> dict[str, tuple[Path, dict[str, Any]]]:
    """``{name: (root, expected)}`` for every entry of :data:`VALID_EXAMPLES`, plus
    ``"extra-files"`` (files the reader does not know) and ``"hf-snapshot"`` (links into blobs)."""
    base = tmp_path_factory.mktemp("valid-examples")
    out = {name: (base / name, build_lmprobe_style(base / name, **kw)) for name, kw in VALID_EXAMPLES.items()}
    root = base / "extra-files"
    expected = build_lmprobe_style(root)
    for rel in ("lmprobe_info.json", "_stage_complete", "README.md", "tensors/notes.bin", "index/other.txt"):
        (root / rel).write_bytes(b"not part of the format")
    out["extra-files"] = (root, expected)
    out["hf-snapshot"] = (as_hf_snapshot(base / "lmprobe-f32", base / "hf-cache"), out["lmprobe-f32"][1])
    return out
