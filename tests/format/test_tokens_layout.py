"""The compact token layout (spec section 5b): the writer's rule, both layouts read alike, and
global token addressing (num_tokens_total, token_range, get_tokens, token_rows)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import actstore
from actstore.format import spec
from actstore.format.writer import DatasetWriter

INDEX = "index/train-00000-of-00001.parquet"
TOKENS = [3, 1, 5, 2, 7, 1, 4, 6]
LAYERS = [0, 2]
DIM = 4


def write(path, *, compat, dtype="float32", tokens=TOKENS, seed=0, shard_tokens=5, batches=2):
    rng = np.random.default_rng(seed)
    states = {L: [rng.standard_normal((t, DIM)).astype(np.float32) for t in tokens] for L in LAYERS}
    item = spec.STORED_DTYPES[dtype][1]
    with DatasetWriter(str(path), model="m", layers=LAYERS, dim=DIM, dtype=dtype, pooling="all",
                       shard_bytes=shard_tokens * DIM * item, lmprobe_compat=compat) as w:
        cuts = np.linspace(0, len(tokens), batches + 1).astype(int)
        for a, b in zip(cuts[:-1], cuts[1:]):
            w.add([f"p{i}" for i in range(a, b)], hidden={L: s[a:b] for L, s in states.items()})
    return states


def stored(x, dtype):
    """What a float32 input reads back as (float32 output) after storing as ``dtype``."""
    if dtype == "bfloat16":
        from actstore.format.dtypes import bf16_bits_to_f32, f32_to_bf16_bits
        return bf16_bits_to_f32(f32_to_bf16_bits(x))
    return x.astype(dtype).astype(np.float32)


def index_of(path):
    t = pq.read_table(path / INDEX)
    return t, json.loads(t.schema.metadata[b"actstore:format"])


@pytest.mark.parametrize("compat", [True, False])
def test_columns_and_must_understand_follow_lmprobe_compat(tmp_path, compat):
    write(tmp_path / "ds", compat=compat)
    t, fmt = index_of(tmp_path / "ds")
    assert {"token_shard", "token_start", "num_tokens"} <= set(t.column_names)
    assert ("token_shard_ids" in t.column_names) is compat
    assert ("token_offset" in t.column_names) is compat
    assert (spec.COMPACT_TOKENS_EXTENSION in fmt["must_understand"]) is (not compat)
    assert spec.COMPACT_TOKENS_EXTENSION in fmt["extensions"]
    assert t.schema.field("token_start").type == "int64" and t.schema.field("token_shard").type == "int32"


def test_default_writes_the_lists_up_to_the_size_rule(tmp_path, monkeypatch):
    write(tmp_path / "small", compat=None)
    assert "token_shard_ids" in index_of(tmp_path / "small")[0].column_names
    monkeypatch.setattr(spec, "COMPAT_MAX_TOKENS", sum(TOKENS) - 1)
    write(tmp_path / "big", compat=None)
    t, fmt = index_of(tmp_path / "big")
    assert "token_shard_ids" not in t.column_names and "compact_tokens" in fmt["must_understand"]


def test_lmprobe_compat_must_be_a_bool(tmp_path):
    with pytest.raises(actstore.InvalidArgumentError, match="lmprobe_compat"):
        DatasetWriter(str(tmp_path / "x"), model="m", layers=[0], dim=2, pooling="all", lmprobe_compat="yes")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_both_layouts_read_identically(tmp_path, dtype):
    states = write(tmp_path / "compat", compat=True, dtype=dtype)
    write(tmp_path / "compact", compat=False, dtype=dtype)
    a, b = actstore.open_dataset(str(tmp_path / "compat")), actstore.open_dataset(str(tmp_path / "compact"))
    assert a.num_tokens_total == b.num_tokens_total == sum(TOKENS)
    for r in range(len(TOKENS)):
        assert a.token_range(r) == b.token_range(r) == (sum(TOKENS[:r]), sum(TOKENS[: r + 1]))
        for L in LAYERS:
            x, y = a.tokens(r, L), b.tokens(r, L)
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
            np.testing.assert_array_equal(y.astype(np.float32), stored(states[L][r], dtype))
    np.testing.assert_array_equal(a.layer(0), b.layer(0))  # the last tokens, as before


def test_get_tokens_gathers_arbitrary_ids_across_layers(tmp_path):
    states = write(tmp_path / "ds", compat=False)
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    flat = {L: np.concatenate(states[L]) for L in LAYERS}
    ids = np.random.default_rng(1).integers(0, ds.num_tokens_total, 200)
    got = ds.get_tokens(ids, layers=LAYERS)
    assert got.shape == (200, 2, DIM)
    np.testing.assert_array_equal(got[:, 0], flat[0][ids])
    np.testing.assert_array_equal(got[:, 1], flat[2][ids])
    np.testing.assert_array_equal(ds.get_tokens(ids[::-1], layers=2)[:, 0], flat[2][ids[::-1]])
    np.testing.assert_array_equal(ds.get_tokens([], layers=[0]).shape, (0, 1, DIM))
    rows = ds.token_rows(ids)
    np.testing.assert_array_equal(rows, np.repeat(np.arange(len(TOKENS)), TOKENS)[ids])
    bf = ds.get_tokens(ids[:5], layers=[0], dtype="float64")
    assert bf.dtype == np.float64


def test_get_tokens_refuses_bad_ids(tmp_path):
    write(tmp_path / "ds", compat=False)
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    for bad in ([sum(TOKENS)], [-1]):
        with pytest.raises(actstore.InvalidArgumentError, match=rf"Token id {bad[0]} is out of range"):
            ds.get_tokens(bad)
    with pytest.raises(actstore.InvalidArgumentError, match="integers"):
        ds.get_tokens([0.5])


def test_selections_follow_their_rows(tmp_path):
    states = write(tmp_path / "ds", compat=False)
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    sel = ds.select([4, 0, 7])
    assert len(sel) == 3 and sel.num_tokens_total == TOKENS[4] + TOKENS[0] + TOKENS[7]
    assert sel.token_range(0) == ds.token_range(4)
    np.testing.assert_array_equal(sel.tokens(2, 2), states[2][7])
    a, b = sel.token_range(1)
    np.testing.assert_array_equal(sel.get_tokens(range(a, b), layers=[0])[:, 0], states[0][0])


def test_pooled_dataset_has_no_tokens(tmp_path):
    with DatasetWriter(str(tmp_path / "p"), model="m", layers=[0], dim=2) as w:
        w.add(["a"], hidden={0: np.ones((1, 2), np.float32)})
    ds = actstore.open_dataset(str(tmp_path / "p"))
    with pytest.raises(actstore.LayerNotFoundError, match="full-sequence"):
        ds.get_tokens([0])
    with pytest.raises(actstore.LayerNotFoundError, match="full-sequence"):
        _ = ds.num_tokens_total


def test_int8_full_sequence_reads_through_the_compact_layout(tmp_path):
    write(tmp_path / "f", compat=True)
    states = write(tmp_path / "q", compat=False, dtype="int8")
    ds = actstore.open_dataset(str(tmp_path / "q"))
    for r in range(len(TOKENS)):
        x = ds.tokens(r, 0)
        assert np.abs(x - states[0][r]).max() < 0.05
    ids = np.random.default_rng(4).permutation(ds.num_tokens_total)
    every = np.concatenate([ds.tokens(r, 0) for r in range(len(TOKENS))])
    np.testing.assert_array_equal(ds.get_tokens(ids, layers=[0, 2])[:, 0], every[ids])


def _column_bytes(path):
    md = pq.read_metadata(path / INDEX)
    return sum(md.row_group(g).column(c).total_uncompressed_size
               for g in range(md.num_row_groups) for c in range(md.num_columns))


def test_the_compact_index_grows_with_rows_not_tokens(tmp_path):
    for n in (40, 400):
        write(tmp_path / f"compat{n}", compat=True, tokens=[n] * 30, shard_tokens=4000)
        write(tmp_path / f"compact{n}", compat=False, tokens=[n] * 30, shard_tokens=4000)
    assert _column_bytes(tmp_path / "compact400") < 1.5 * _column_bytes(tmp_path / "compact40")
    assert _column_bytes(tmp_path / "compat400") > 3 * _column_bytes(tmp_path / "compat40")
    assert _column_bytes(tmp_path / "compat400") > 20 * _column_bytes(tmp_path / "compact400")
