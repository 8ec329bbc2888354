"""Hostile or broken compact token layouts (spec section 5b) are refused with an error naming
the index file and the first bad row (or shard file), before anything sized from them is
allocated; and a property: whatever the writer accepts reads back identical."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actstore
from actstore.format.writer import DatasetWriter

INDEX = "index/train-00000-of-00001.parquet"
TOKENS = [3, 1, 5, 2, 4, 6]
DIM = 3


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    base = tmp_path_factory.mktemp("tok_bad")
    rng = np.random.default_rng(2)
    states = [rng.standard_normal((t, DIM)).astype(np.float32) for t in TOKENS]
    for compat in (True, False):
        with DatasetWriter(str(base / f"c{int(compat)}"), model="m", layers=[0], dim=DIM, pooling="all",
                           shard_bytes=6 * DIM * 4, lmprobe_compat=compat) as w:
            w.add([f"p{i}" for i in range(len(TOKENS))], hidden={0: states})
    return base


def edit(src, dst, column=None, change=None, meta=None):
    shutil.copytree(src, dst)
    t = pq.read_table(dst / INDEX)
    raw = dict(t.schema.metadata)
    if column is not None:
        values = t.column(column).to_pylist()
        change(values)
        typ = t.schema.field(column).type
        t = t.set_column(t.column_names.index(column), column, pa.array(values, typ))
    if meta is not None:
        doc = json.loads(raw[b"actstore:format"])
        meta(doc)
        raw[b"actstore:format"] = json.dumps(doc).encode()
    pq.write_table(t.replace_schema_metadata(raw), dst / INDEX)
    return dst


def starts(src):
    t = pq.read_table(src / INDEX)
    return t.column("token_shard").to_pylist(), t.column("token_start").to_pylist()


def first_nonzero_start(src):
    return next(i for i, s in enumerate(starts(src)[1]) if s > 0 and TOKENS[i] >= 2)


def _set(i, v):
    def change(values):
        values[i] = v
    return change


def _add(i, d):
    def change(values):
        values[i] += d
    return change


CASES = [
    # (name, column, change(origin) -> function, error, message)
    ("negative-count", "num_tokens", lambda o: _set(1, -1), r"index row 1 has num_tokens -1"),
    ("zero-count", "num_tokens", lambda o: _set(3, 0), r"index row 3 has num_tokens 0"),
    ("null-count", "num_tokens", lambda o: _set(2, None), r"index row 2 has a null 'num_tokens'"),
    ("null-start", "token_start", lambda o: _set(0, None), r"index row 0 has a null 'token_start'"),
    ("count-past-shard-end", "num_tokens", lambda o: _add(len(TOKENS) - 1, 1),
     r"place \d+ tokens in tensors/hidden_layer000_shard\d+\.safetensors, which holds \d+ .*run past its end"),
    ("count-short", "num_tokens", lambda o: _add(len(TOKENS) - 1, -1), r"fill only part of it"),
    ("huge-count", "num_tokens", lambda o: _set(len(TOKENS) - 1, 2**31 - 1), r"run past its end"),
    ("overlap", "token_start", lambda o: _add(first_nonzero_start(o), -1),
     r"index row \d+ has token_start \d+ .* overlaps the row before it"),
    ("gap", "token_start", lambda o: _add(first_nonzero_start(o), 1), r"leaves a gap"),
    ("shard-of-last-tokens", "token_shard", lambda o: _set(0, 0), r"index row 0 has token_shard 0, outside"),
    ("shard-past-end", "token_shard", lambda o: _set(0, 99), r"index row 0 has token_shard 99, outside"),
    ("out-of-order", "token_shard", lambda o: _set(0, max(starts(o)[0])), r"index row \d+ has its tokens in an "
     r"earlier shard .*out of order|index row \d+ has token_start"),
]


@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_broken_compact_columns_are_refused_naming_row_and_file(origin, tmp_path, case, compat):
    name, column, change, message = case
    src = origin / f"c{int(compat)}"
    root = edit(src, tmp_path / "ds", column, change(src))
    ds = actstore.open_dataset(str(root))  # opening reads no token column
    for action in (lambda: ds.tokens(0, 0), lambda: ds.get_tokens([0]), lambda: ds.num_tokens_total,
                   lambda: ds.token_range(0)):
        with pytest.raises(actstore.IntegrityError, match=message) as err:
            action()
        assert INDEX in str(err.value)
    np.testing.assert_array_equal(ds.layer(0).shape, (len(TOKENS), DIM))  # last tokens still read


def test_compact_index_without_its_must_understand_is_refused(origin, tmp_path):
    root = edit(origin / "c0", tmp_path / "ds", meta=lambda d: d.update(must_understand=[]))
    with pytest.raises(actstore.FormatError, match=rf"{INDEX}: .*must_understand does not list 'compact_tokens'"):
        actstore.open_dataset(str(root))


def test_a_reader_that_does_not_know_the_extension_refuses_it(origin, tmp_path, monkeypatch):
    from actstore.format import metadata
    monkeypatch.setattr(metadata, "KNOWN_EXTENSIONS", metadata.KNOWN_EXTENSIONS - {"compact_tokens"})
    with pytest.raises(actstore.UnsupportedVersionError, match="compact_tokens"):
        actstore.open_dataset(str(origin / "c0"))


def test_layouts_that_disagree_are_refused(origin, tmp_path):
    def swap(values):
        values[2][0], values[2][1] = values[2][1], values[2][0]
    root = edit(origin / "c1", tmp_path / "ds", "token_shard_offsets", swap)
    with pytest.raises(actstore.IntegrityError, match=rf"{INDEX}: index row 2, token 0: .*disagree"):
        actstore.open_dataset(str(root)).tokens(2, 0)


def test_layouts_with_different_counts_are_refused(origin, tmp_path):
    def longer(values):
        values[0] = values[0] + [values[0][-1]]
    root = tmp_path / "ds"
    edit(origin / "c1", root, "token_shard_ids", longer)
    edit(root, tmp_path / "ds2", "token_shard_offsets", longer)
    with pytest.raises(actstore.IntegrityError, match=r"index row 0 has 4 tokens in token_shard_ids.*num_tokens 3"):
        actstore.open_dataset(str(tmp_path / "ds2")).tokens(0, 0)


def test_a_compact_column_of_floats_is_refused(origin, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(origin / "c0", root)
    t = pq.read_table(root / INDEX)
    i = t.column_names.index("token_start")
    t = t.set_column(i, "token_start", pa.array([float(x) for x in t.column(i).to_pylist()]))
    pq.write_table(t, root / INDEX)
    with pytest.raises(actstore.FormatError, match="'token_start' column must hold integers"):
        actstore.open_dataset(str(root)).tokens(0, 0)


# ---------------------------------------------------------------- property

@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(tokens=st.lists(st.integers(1, 9), min_size=1, max_size=12), shard=st.integers(1, 12),
       compat=st.sampled_from([True, False, None]), dtype=st.sampled_from(["float32", "bfloat16"]),
       cut=st.integers(0, 12), seed=st.integers(0, 2**16),
       mask=st.sampled_from([None, "prompt", "continuation"]), skip=st.sampled_from([False, True, "special"]))
def test_what_the_writer_accepts_reads_back_identical(tmp_path_factory, tokens, shard, compat, dtype, cut,
                                                      seed, mask, skip):
    """Through tokens, get_tokens, token_ids (the masks of spec 5c) and the stream loader."""
    from actstore.format.dtypes import bf16_bits_to_f32, f32_to_bf16_bits
    root = tmp_path_factory.mktemp("prop") / "ds"
    rng = np.random.default_rng(seed)
    states = [rng.standard_normal((t, 2)).astype(np.float32) for t in tokens]
    if dtype == "bfloat16":
        states = [bf16_bits_to_f32(f32_to_bf16_bits(s)) for s in states]
    prompt = [int(rng.integers(0, t + 1)) for t in tokens]
    special = [bool(rng.integers(0, 2)) for _ in tokens]
    cut = min(cut, len(tokens))
    with DatasetWriter(str(root), model="m", layers=[1], dim=2, dtype=dtype, pooling="all",
                       shard_bytes=shard * 2 * 4, lmprobe_compat=compat) as w:
        for a, b in ((0, cut), (cut, len(tokens))):
            if b > a:
                w.add([f"p{i}" for i in range(a, b)], hidden={1: states[a:b]},
                      prompt_tokens=prompt[a:b], special_first_token=special[a:b])
    ds = actstore.open_dataset(str(root))
    assert ds.num_tokens_total == sum(tokens)
    flat = np.concatenate(states)
    for r, s in enumerate(states):
        np.testing.assert_array_equal(ds.tokens(r, 1), s)
        a, b = ds.token_range(r)
        np.testing.assert_array_equal(ds.get_tokens(np.arange(a, b), layers=[1])[:, 0], s)
    ids = rng.integers(0, flat.shape[0], 3 * flat.shape[0])
    np.testing.assert_array_equal(ds.get_tokens(ids, layers=[1])[:, 0], flat[ids])
    # the masks: the kept (row, position) pairs, by the rules of spec section 5c
    keep = [(r, j) for r, t in enumerate(tokens) for j in range(t)
            if (mask != "prompt" or j < prompt[r]) and (mask != "continuation" or j >= prompt[r])
            and not (j == 0 and (skip is True or (skip == "special" and special[r])))]
    starts = np.concatenate(([0], np.cumsum(tokens)))
    assert ds.token_ids(mask, skip_first_token=skip).tolist() == [int(starts[r]) + j for r, j in keep]
    if keep:
        got = {}
        for batch in actstore.stream(ds, tokens=True, mask=mask, skip_first_token=skip, batch_size=5,
                                     block_rows=3, window=6, seed=seed, numpy=True, dtype="float32"):
            for r, j, x in zip(batch["row"].tolist(), batch["token"].tolist(), batch["layer_1"]):
                assert (r, j) not in got
                got[(r, j)] = x
        assert sorted(got) == keep
        for (r, j), x in got.items():
            np.testing.assert_array_equal(x.astype(np.float32), states[r][j])
    assert ds.verify().ok


def test_a_huge_claimed_count_is_refused_before_allocating(origin, tmp_path):
    """Counts and metadata agree on 2**26 tokens the shard file does not hold: the header is
    checked before anything of that size is allocated."""
    import resource

    root = tmp_path / "ds"
    shutil.copytree(origin / "c0", root)
    t = pq.read_table(root / INDEX)
    raw = dict(t.schema.metadata)
    doc = json.loads(raw[b"lmprobe:tensors"])
    extra = 2**26
    doc["hidden_layers"]["shards"][-1]["num_tokens"] += extra
    raw[b"lmprobe:tensors"] = json.dumps(doc).encode()
    counts = t.column("num_tokens").to_pylist()
    counts[-1] += extra
    t = t.set_column(t.column_names.index("num_tokens"), "num_tokens", pa.array(counts, pa.int32()))
    pq.write_table(t.replace_schema_metadata(raw), root / INDEX)
    ds = actstore.open_dataset(str(root))
    assert ds.token_range(len(TOKENS) - 1)[1] - ds.token_range(len(TOKENS) - 1)[0] == TOKENS[-1] + extra
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(actstore.IntegrityError, match=r"hidden_layer000_shard\d+\.safetensors: tensor .* has shape"):
        ds.tokens(len(TOKENS) - 1, 0)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB
