"""Bad codec input is refused with errors naming the file and key (spec section 2b)."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pyarrow.parquet as pq
import pytest

import actstore
from actstore.errors import (
    FormatError,
    IntegrityError,
    InvalidArgumentError,
    UnsupportedVersionError,
)
from actstore.format.writer import DatasetWriter

DIM, N = 4, 6
INDEX = "index/train-00000-of-00001.parquet"
SHARD = "tensors/hidden_layer000_shard000.safetensors"
CODES_KEY, SCALE_KEY = "hidden.layer_0.codes", "hidden.layer_0.scale"
OFFSET_KEY = "hidden.layer_0.offset"


@pytest.fixture
def q(tmp_path):
    """A one-shard int8 dataset with per-channel scales (no offsets)."""
    x = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    with DatasetWriter(str(tmp_path / "q"), model="m", layers=[0], dim=DIM, dtype="int8",
                       scale="per_channel") as w:
        w.add([f"p{i}" for i in range(N)], hidden={0: x})
    return tmp_path / "q"


@pytest.fixture
def qa(tmp_path):
    """A one-shard int8 dataset with per-channel affine scales (a scale and an offset)."""
    x = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32) + 100
    with DatasetWriter(str(tmp_path / "qa"), model="m", layers=[0], dim=DIM, dtype="int8",
                       scale="per_channel_affine") as w:
        w.add([f"p{i}" for i in range(N)], hidden={0: x})
    return tmp_path / "qa"


def save(path, tensors):
    """A safetensors file of ``{key: (code, bytes, shape)}``, back to back in order."""
    header, blobs, pos = {}, [], 0
    for key, (code, data, shape) in tensors.items():
        header[key] = {"dtype": code, "shape": list(shape), "data_offsets": [pos, pos + len(data)]}
        blobs.append(data)
        pos += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def patch_meta(root, fn):
    t = pq.read_table(root / INDEX)
    meta = {k.decode(): json.loads(v) for k, v in t.schema.metadata.items()}
    fn(meta)
    pq.write_table(t.replace_schema_metadata({k.encode(): json.dumps(v).encode() for k, v in meta.items()}),
                   root / INDEX)


def rewrite_shard(root, tensors):
    """Replace the shard and record its new size and sha256, so only its content is wrong."""
    save(root / SHARD, tensors)
    blob = (root / SHARD).read_bytes()

    def fix(meta):
        meta["actstore:files"][SHARD] = {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}

    patch_meta(root, fix)


def codes_blob():
    return np.arange(N * DIM, dtype=np.int8).tobytes()


def f32(*values):
    return np.asarray(values, dtype="<f4").tobytes()


# -- the writer ------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(dtype="int4"), dict(dtype="fp8_e5m2"), dict(dtype="int8", scale="per_tensor"),
                                dict(dtype="bfloat16", scale="per_row")])
def test_writer_refuses_unknown_codecs_and_scales(tmp_path, kw):
    with pytest.raises(InvalidArgumentError) as err:
        DatasetWriter(str(tmp_path / "x"), model="m", layers=[0], dim=DIM, **kw)
    assert repr(kw.get("scale") or kw["dtype"]) in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["int8", "fp8_e4m3"])
def test_codecs_refuse_non_finite_even_without_the_finite_check(tmp_path, bad, dtype):
    x = np.ones((N, DIM), dtype=np.float32)
    x[2, 1] = bad
    with pytest.raises(InvalidArgumentError, match="NaN|inf|finite"):
        with DatasetWriter(str(tmp_path / "x"), model="m", layers=[0], dim=DIM, dtype=dtype,
                           check_finite=False) as w:
            w.add([f"p{i}" for i in range(N)], hidden={0: x})
    assert not (tmp_path / "x" / INDEX).exists()


# -- metadata ----------------------------------------------------------------------------
def _desc(meta):
    return meta["lmprobe:tensors"]["hidden_layers"]


@pytest.mark.parametrize(("change", "error", "words"), [
    (lambda m: _desc(m).update(dtype="int4"), FormatError, "dtype"),
    (lambda m: _desc(m).pop("codec"), FormatError, "codec"),
    (lambda m: _desc(m)["codec"].update(name="fp8_e4m3"), FormatError, "codec.name"),
    (lambda m: _desc(m)["codec"].update(scale="per_tensor"), FormatError, "codec.scale"),
    (lambda m: _desc(m)["codec"].update(scale_dtype="float16"), FormatError, "scale_dtype"),
    (lambda m: _desc(m).update(key_pattern="hidden.layer_{layer}"), FormatError, "key_pattern"),
    (lambda m: m["actstore:format"].update(must_understand=["codecs", "codecs-v9"]),
     UnsupportedVersionError, "codecs-v9"),
])
def test_malformed_codec_metadata_is_refused_at_open(q, change, error, words):
    patch_meta(q, change)
    with pytest.raises(error) as err:
        actstore.open_dataset(str(q)).layer(0)
    assert words in str(err.value) and INDEX in str(err.value)


def test_a_codec_dataset_must_declare_the_extension(q):
    """Without ``codecs`` in must_understand an older reader would not refuse it: corrupt."""
    patch_meta(q, lambda m: m["actstore:format"].update(must_understand=[]))
    with pytest.raises(FormatError, match="must_understand does not list 'codecs'") as err:
        actstore.open_dataset(str(q))
    assert "int8" in str(err.value)


def test_float_view_with_a_codec_field_is_refused(tmp_path):
    with DatasetWriter(str(tmp_path / "f"), model="m", layers=[0], dim=DIM) as w:
        w.add([f"p{i}" for i in range(N)], hidden={0: np.ones((N, DIM))})
    patch_meta(tmp_path / "f", lambda m: _desc(m).update(codec={"name": "int8", "scale": "per_row"}))
    with pytest.raises(FormatError, match="codec"):
        actstore.open_dataset(str(tmp_path / "f"))


# -- shard files ---------------------------------------------------------------------------
@pytest.mark.parametrize(("tensors", "words"), [
    ({CODES_KEY: ("I8", codes_blob(), (N, DIM))}, "has no scale tensor"),
    ({CODES_KEY: ("I8", codes_blob(), (N, DIM)), SCALE_KEY: ("F32", f32(1, 1, 1), (3,))}, "expected F32 [4]"),
    ({CODES_KEY: ("I8", codes_blob(), (N, DIM)), SCALE_KEY: ("F32", f32(*[1] * N), (N,))}, "expected F32 [4]"),
    ({CODES_KEY: ("I8", codes_blob(), (N, DIM)),
      SCALE_KEY: ("F16", np.ones(DIM, np.float16).tobytes(), (DIM,))}, "expected F32"),
    ({CODES_KEY: ("I8", codes_blob(), (N, DIM)), SCALE_KEY: ("F32", f32(1, 0, 1, 1), (DIM,))}, "finite and positive"),
    ({CODES_KEY: ("I8", codes_blob(), (N, DIM)), SCALE_KEY: ("F32", f32(1, 1, -2, 1), (DIM,))}, "finite and positive"),
    ({CODES_KEY: ("I8", codes_blob(), (N, DIM)), SCALE_KEY: ("F32", f32(1, 1, 1, np.nan), (DIM,))}, "finite and positive"),
    ({CODES_KEY: ("I8", codes_blob(), (N, DIM)), SCALE_KEY: ("F32", f32(np.inf, 1, 1, 1), (DIM,))}, "finite and positive"),
])
def test_bad_scale_tensors_are_refused_naming_file_and_key(q, tensors, words):
    rewrite_shard(q, tensors)
    ds = actstore.open_dataset(str(q))
    for read in (lambda: ds.layer(0), lambda: ds.get([1]), lambda: ds.codes(0)):
        with pytest.raises(IntegrityError) as err:
            read()
        assert SHARD in str(err.value) and words in str(err.value)
        if "no scale" not in words:
            assert SCALE_KEY in str(err.value)
    report = ds.verify()
    assert not report.ok and any(SHARD in p for p in report.problems)


_SC = ("F32", f32(1, 1, 1, 1), (DIM,))  # good scales


@pytest.mark.parametrize(("tensors", "words"), [
    ({CODES_KEY: ("I8", codes_blob(), (N, DIM)), SCALE_KEY: _SC}, "has no offset tensor"),
    ({CODES_KEY: ("I8", codes_blob(), (N, DIM)), SCALE_KEY: _SC,
      OFFSET_KEY: ("F32", f32(1, 1, 1), (3,))}, "expected F32 [4]"),
    ({CODES_KEY: ("I8", codes_blob(), (N, DIM)), SCALE_KEY: _SC,
      OFFSET_KEY: ("F32", f32(*[1] * N), (N,))}, "expected F32 [4]"),
    ({CODES_KEY: ("I8", codes_blob(), (N, DIM)), SCALE_KEY: _SC,
      OFFSET_KEY: ("F16", np.ones(DIM, np.float16).tobytes(), (DIM,))}, "expected F32"),
    ({CODES_KEY: ("I8", codes_blob(), (N, DIM)), SCALE_KEY: _SC,
      OFFSET_KEY: ("F32", f32(1, np.nan, 1, 1), (DIM,))}, "must be finite"),
    ({CODES_KEY: ("I8", codes_blob(), (N, DIM)), SCALE_KEY: _SC,
      OFFSET_KEY: ("F32", f32(1, 1, 1, -np.inf), (DIM,))}, "must be finite"),
    ({CODES_KEY: ("I8", codes_blob(), (N, DIM)), SCALE_KEY: ("F32", f32(1, 1, 0, 1), (DIM,)),
      OFFSET_KEY: ("F32", f32(1, 1, 1, 1), (DIM,))}, "finite and positive"),
])
def test_bad_offset_tensors_are_refused_naming_file_and_key(qa, tensors, words):
    """per_channel_affine: a missing, misshapen or non-finite offset is refused on every path."""
    rewrite_shard(qa, tensors)
    ds = actstore.open_dataset(str(qa))
    for read in (lambda: ds.layer(0), lambda: ds.get([1]), lambda: ds.codes(0),
                 lambda: next(iter(actstore.stream(ds, layers=0, batch_size=2, numpy=True)))):
        with pytest.raises(IntegrityError) as err:
            read()
        assert SHARD in str(err.value) and words in str(err.value)
        assert (SCALE_KEY if "positive" in words else OFFSET_KEY) in str(err.value)
    report = ds.verify()
    assert not report.ok and any(SHARD in p and words in p for p in report.problems)


def test_an_offset_tensor_in_a_file_without_offsets_is_refused(q):
    """A per_channel file with an offset tensor would be read without it: wrong values."""
    rewrite_shard(q, {CODES_KEY: ("I8", codes_blob(), (N, DIM)), SCALE_KEY: _SC,
                      OFFSET_KEY: ("F32", f32(5, 5, 5, 5), (DIM,))})
    with pytest.raises(IntegrityError, match="offset tensor") as err:
        actstore.open_dataset(str(q)).layer(0)
    assert SHARD in str(err.value) and OFFSET_KEY in str(err.value)


def test_an_affine_dataset_is_refused_by_a_reader_without_the_scale(qa, monkeypatch):
    """Readers refuse scale names they do not know (an older reader's list lacks the affine one)."""
    from actstore.format import codec_spec

    monkeypatch.setattr(codec_spec, "SCALES", ("per_channel", "per_row"))
    with pytest.raises(FormatError, match="codec.scale") as err:
        actstore.open_dataset(str(qa)).layer(0)
    assert "per_channel_affine" in str(err.value) and INDEX in str(err.value)


def test_codes_of_the_wrong_format_are_refused(q):
    rewrite_shard(q, {CODES_KEY: ("F8_E4M3", codes_blob(), (N, DIM)), SCALE_KEY: ("F32", f32(1, 1, 1, 1), (DIM,))})
    with pytest.raises(IntegrityError, match="must be I8; found F8_E4M3"):
        actstore.open_dataset(str(q)).layer(0)


def test_a_scale_tensor_pointing_outside_the_shard_is_refused_before_any_read(q):
    """A hostile header cannot make the scale read leave the file."""
    header = {CODES_KEY: {"dtype": "I8", "shape": [N, DIM], "data_offsets": [0, N * DIM]},
              SCALE_KEY: {"dtype": "F32", "shape": [DIM], "data_offsets": [10**9, 10**9 + 4 * DIM]}}
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    raw = struct.pack("<Q", len(body)) + body + codes_blob() + f32(1, 1, 1, 1)
    (q / SHARD).write_bytes(bytes(raw))
    patch_meta(q, lambda m: m["actstore:files"][SHARD].update(size=len(raw)))
    with pytest.raises(IntegrityError, match=SHARD):
        actstore.open_dataset(str(q)).layer(0)


def test_fp8_nan_codes_are_refused_on_read(tmp_path):
    with DatasetWriter(str(tmp_path / "f8"), model="m", layers=[0], dim=DIM, dtype="fp8_e4m3",
                       scale="per_channel") as w:
        w.add([f"p{i}" for i in range(N)], hidden={0: np.ones((N, DIM))})
    codes = np.full(N * DIM, 0x38, dtype=np.uint8)  # 1.0
    codes[5] = 0xFF  # an e4m3fn NaN
    rewrite_shard(tmp_path / "f8", {CODES_KEY: ("F8_E4M3", codes.tobytes(), (N, DIM)),
                                    SCALE_KEY: ("F32", f32(1, 1, 1, 1), (DIM,))})
    ds = actstore.open_dataset(str(tmp_path / "f8"))
    for read in (lambda: ds.layer(0), lambda: ds.get([1, 3]), lambda: ds.get([4, 1])):  # runs and scattered rows
        with pytest.raises(IntegrityError, match="NaN codes"):
            read()
    ds.get([0, 2])  # rows without the NaN code read


def test_codes_api_needs_a_codec_dataset(tmp_path):
    with DatasetWriter(str(tmp_path / "f"), model="m", layers=[0], dim=DIM, dtype="bfloat16") as w:
        w.add([f"p{i}" for i in range(N)], hidden={0: np.ones((N, DIM))})
    with pytest.raises(InvalidArgumentError, match="layer\\(\\)"):
        actstore.open_dataset(str(tmp_path / "f")).codes(0)


def test_an_integer_output_dtype_is_refused_not_truncated(q):
    ds = actstore.open_dataset(str(q))
    with pytest.raises(InvalidArgumentError, match="codes\\(\\)"):
        ds.layer(0, dtype="int8")


def test_raw_row_reads_never_return_codes_as_values(q):
    """A caller (a loader) that skips the codec and reads rows into floats is refused."""
    from actstore.format.rows import read_rows

    ds = actstore.open_dataset(str(q))
    v = ds._view(None)
    entry = ds._entry(v, 0, 0)
    out = np.empty((2, DIM), dtype=np.float32)
    with pytest.raises(InvalidArgumentError, match="read_coded"):
        read_rows(ds.source, SHARD, entry, np.array([0, 1]), np.array([0, 1]), out)
    raw = np.empty((2, DIM), dtype=np.int8)
    read_rows(ds.source, SHARD, entry, np.array([0, 1]), np.array([0, 1]), raw)
    np.testing.assert_array_equal(raw, ds.codes(0, [0, 1]).codes)


def test_location_reads_never_return_codes_as_values(q):
    """The loader's hook (read_locations) dequantises: float32 out only, the reader's values."""
    from actstore.format.locations import read_locations, stored_code

    ds = actstore.open_dataset(str(q))
    assert stored_code(ds, 0) == "F32"
    with pytest.raises(InvalidArgumentError, match="float32"):
        read_locations(ds, 0, np.zeros(2, np.int64), np.array([0, 1]), np.empty((2, DIM), np.int8))
    out = np.empty((2, DIM), np.float32)
    read_locations(ds, 0, np.zeros(2, np.int64), np.array([5, 0]), out)
    np.testing.assert_array_equal(out, ds.layer(0)[[5, 0]])
