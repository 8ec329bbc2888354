"""Token masks (spec section 5c): per-row prompt length and special-first-token flag, written
by the writer, checked and returned by the reader (token_ids, token_mask), kept by convert,
and used by the stream loader to skip tokens; broken mask columns are refused naming the row
and the index file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import actstore
from actstore.format import spec
from actstore.format.writer import DatasetWriter

INDEX = "index/train-00000-of-00001.parquet"
COUNTS = [4, 1, 6, 3, 5, 2]
PROMPT = [2, 1, 6, 0, 3, 2]  # row 2: no continuation; row 3: no prompt
SPECIAL = [True, False, True, True, False, True]


def write(path, *, compat=False, masks=True, prompt=PROMPT, special=SPECIAL, counts=COUNTS):
    # token j of row r holds r * 100 + j in every channel: values say which token they are
    seqs = [np.stack([np.full(3, r * 100 + j, np.float32) for j in range(c)]) for r, c in enumerate(counts)]
    kw = {"prompt_tokens": prompt, "special_first_token": special} if masks else {}
    with DatasetWriter(str(path), model="m", layers=[0], dim=3, pooling="all", shard_bytes=5 * 3 * 4,
                       lmprobe_compat=compat) as w:
        half = len(counts) // 2
        for a, b in ((0, half), (half, len(counts))):
            w.add([f"p{i}" for i in range(a, b)], hidden={0: seqs[a:b]},
                  **{k: v[a:b] for k, v in kw.items()})
    return path


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    return write(tmp_path_factory.mktemp("masks") / "ds")


def expected(mask):
    """(row, position) pairs a mask keeps, rows in order."""
    keep = {"prompt": lambda r, j: j < PROMPT[r], "continuation": lambda r, j: j >= PROMPT[r],
            "first": lambda r, j: j == 0, "special": lambda r, j: j == 0 and SPECIAL[r],
            None: lambda r, j: True}[mask]
    return [(r, j) for r in range(len(COUNTS)) for j in range(COUNTS[r]) if keep(r, j)]


@pytest.mark.parametrize("compat", [True, False])
def test_columns_and_extension(tmp_path, compat):
    root = write(tmp_path / "ds", compat=compat)
    t = pq.read_table(root / INDEX)
    fmt = json.loads(t.schema.metadata[b"actstore:format"])
    assert spec.TOKEN_MASKS_EXTENSION in fmt["extensions"]
    assert spec.TOKEN_MASKS_EXTENSION not in fmt["must_understand"]  # information only
    assert t.column("prompt_tokens").to_pylist() == PROMPT
    assert t.schema.field("prompt_tokens").type == pa.int32()
    assert t.column("special_first_token").to_pylist() == SPECIAL


@pytest.mark.parametrize("mask", ["prompt", "continuation", "first", "special", None])
def test_token_ids_and_token_mask(masked, mask):
    ds = actstore.open_dataset(str(masked))
    ids = ds.token_ids(mask)
    want = expected(mask)
    starts = np.concatenate(([0], np.cumsum(COUNTS)))
    assert ids.tolist() == [int(starts[r]) + j for r, j in want]
    got = ds.get_tokens(ids, layers=[0])[:, 0, 0]
    assert got.tolist() == [r * 100 + j for r, j in want]
    if mask is not None:
        flat = ds.token_mask(mask)
        assert flat.dtype == bool and flat.size == sum(COUNTS)
        assert np.flatnonzero(flat).tolist() == ids.tolist()


def test_selections_and_skip_first(masked):
    ds = actstore.open_dataset(str(masked)).select([4, 0, 2])
    ids = ds.token_ids("prompt", skip_first_token=True)
    assert (ds.get_tokens(ids, layers=[0])[:, 0, 0]).tolist() == [401, 402, 1] + [201, 202, 203, 204, 205]
    assert ds.token_mask("continuation", rows=[1]).tolist() == [False, False, True, True]
    ids = ds.token_ids(None, skip_first_token="special")  # rows 4 (not special), 0, 2 (special)
    assert ds.get_tokens(ids, layers=[0])[:, 0, 0].tolist() == [400, 401, 402, 403, 404, 1, 2, 3] + \
        [201, 202, 203, 204, 205]


def test_masks_need_their_columns(tmp_path):
    ds = actstore.open_dataset(str(write(tmp_path / "plain", masks=False)))
    assert ds.token_ids("first").size == len(COUNTS)  # needs no column
    for mask in ("prompt", "continuation", "special"):
        with pytest.raises(actstore.InvalidArgumentError, match=rf"mask {mask!r} needs the"):
            ds.token_ids(mask)
    with pytest.raises(actstore.InvalidArgumentError, match="mask must be one of"):
        ds.token_ids("prompts")
    with pytest.raises(actstore.InvalidArgumentError, match="skip_first_token"):
        ds.token_ids(None, skip_first_token="bos")


@pytest.mark.parametrize("prompt, message", [
    ([2, 1, 7, 0, 3, 2], r"prompt_tokens\[2\] is 7; it must lie in 0..6"),
    ([2, -1, 6, 0, 3, 2], r"prompt_tokens\[1\] is -1"),
    ([2, 1.5, 6, 0, 3, 2], r"prompt_tokens\[1\] must be an integer"),
])
def test_writer_refuses_bad_prompt_lengths(tmp_path, prompt, message):
    with pytest.raises(actstore.InvalidArgumentError, match=message):
        write(tmp_path / "ds", prompt=prompt)
    assert not (tmp_path / "ds" / INDEX).exists()


def test_writer_refuses_masks_on_some_batches_only(tmp_path):
    seq = [np.ones((2, 3), np.float32)]
    with pytest.raises(actstore.InvalidArgumentError, match="on every add"):
        with DatasetWriter(str(tmp_path / "ds"), model="m", layers=[0], dim=3, pooling="all") as w:
            w.add(["a"], hidden={0: seq}, prompt_tokens=[1])
            w.add(["b"], hidden={0: seq})
    with pytest.raises(actstore.InvalidArgumentError, match="special_first_token\\[0\\] must be True or False"):
        with DatasetWriter(str(tmp_path / "ds2"), model="m", layers=[0], dim=3, pooling="all") as w:
            w.add(["a"], hidden={0: seq}, special_first_token=[1])


def edit(src, dst, column, values, typ):
    shutil.copytree(src, dst)
    t = pq.read_table(dst / INDEX)
    i = t.column_names.index(column)
    t = t.set_column(i, column, pa.array(values, typ))
    pq.write_table(t, dst / INDEX)
    return dst


@pytest.mark.parametrize("values, typ, message", [
    ([2, 1, 6, 4, 3, 2], pa.int32(), r"index row 3 has prompt_tokens 4, more than its 3 tokens"),
    ([2, 1, -3, 0, 3, 2], pa.int32(), r"index row 2 has prompt_tokens -3, negative"),
    ([2, 1, 6, 0, None, 2], pa.int32(), r"index row 4 has a null prompt_tokens"),
    ([2.0, 1, 6, 0, 3, 2], pa.float64(), r"'prompt_tokens' column must hold integers"),
])
def test_reader_refuses_broken_prompt_lengths(masked, tmp_path, values, typ, message):
    root = edit(masked, tmp_path / "ds", "prompt_tokens", values, typ)
    ds = actstore.open_dataset(str(root))  # opening decodes no mask column
    for action in (lambda: ds.token_ids("prompt"), lambda: ds.token_mask("continuation"),
                   lambda: actstore.stream(ds, tokens=True, mask="prompt", numpy=True)):
        with pytest.raises(actstore.FormatError, match=message) as err:
            action()
        assert INDEX in str(err.value)
    assert ds.tokens(3, 0).shape == (3, 3)  # the tokens themselves still read


def test_reader_refuses_a_non_boolean_special_column(masked, tmp_path):
    root = edit(masked, tmp_path / "ds", "special_first_token", [1, 0, 1, 1, 0, 1], pa.int8())
    with pytest.raises(actstore.FormatError, match=rf"{INDEX}: .*'special_first_token' column must hold booleans"):
        actstore.open_dataset(str(root)).token_ids("special")


def test_undeclared_columns_are_not_masks(masked, tmp_path):
    """An index without the extension may hold a user column of the same name: not a mask."""
    root = tmp_path / "ds"
    shutil.copytree(masked, root)
    t = pq.read_table(root / INDEX)
    raw = dict(t.schema.metadata)
    fmt = json.loads(raw[b"actstore:format"])
    fmt["extensions"].remove(spec.TOKEN_MASKS_EXTENSION)
    raw[b"actstore:format"] = json.dumps(fmt).encode()
    pq.write_table(t.replace_schema_metadata(raw), root / INDEX)
    ds = actstore.open_dataset(str(root))
    with pytest.raises(actstore.InvalidArgumentError, match="needs the 'prompt_tokens'"):
        ds.token_ids("prompt")
    assert ds.column("prompt_tokens").tolist() == PROMPT


@pytest.mark.parametrize("mask, skip", [("prompt", False), ("continuation", True), (None, "special")])
def test_stream_skips_by_mask(masked, mask, skip):
    ds = actstore.open_dataset(str(masked))
    pairs = []
    for b in actstore.stream(ds, tokens=True, mask=mask, skip_first_token=skip, batch_size=3,
                             block_rows=2, window=4, numpy=True):
        r, t = b["row"], b["token"]
        np.testing.assert_array_equal(b["layer_0"][:, 1], r * 100 + t)
        pairs += list(zip(r.tolist(), t.tolist()))
    keep = expected(mask)
    if skip is True:
        keep = [(r, j) for r, j in keep if j > 0]
    elif skip == "special":
        keep = [(r, j) for r, j in keep if not (j == 0 and SPECIAL[r])]
    assert sorted(pairs) == keep


def test_stream_mask_needs_tokens(masked):
    with pytest.raises(actstore.InvalidArgumentError, match="needs tokens=True"):
        actstore.stream(actstore.open_dataset(str(masked)), mask="prompt", numpy=True)


def test_convert_keeps_the_masks(masked, tmp_path):
    out = actstore.convert(str(masked), str(tmp_path / "f16"), dtype="float16")
    assert out.column("prompt_tokens").tolist() == PROMPT
    assert out.token_ids("continuation").tolist() == actstore.open_dataset(str(masked)).token_ids("continuation").tolist()
