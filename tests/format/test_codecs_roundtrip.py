"""int8 and fp8_e4m3 storage (spec section 2b): every read path dequantises the same values,
the recorded error is the real error, and the bounds of the formula hold (hypothesis)."""

from __future__ import annotations

import json
import subprocess
import sys

import ml_dtypes
import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import actstore
from actstore.format import codecs
from actstore.format.writer import DatasetWriter

DIM = 16
CASES = [("int8", "per_channel"), ("int8", "per_row"), ("int8", "per_channel_affine"),
         ("fp8_e4m3", "per_channel"), ("fp8_e4m3", "per_row"), ("fp8_e4m3", "per_channel_affine")]
SCALES = ["per_channel", "per_row", "per_channel_affine"]


def activations(n: int, seed: int = 0) -> np.ndarray:
    """Gaussian rows with two outlier channels 1000x the rest (massive activations)."""
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    x[:, 3] *= 1000.0
    x[:, 7] += 5000.0
    return x


def write(path, dtype, scale, x, *, layers=(0, 2), rows_per_shard=12, **kw):
    with DatasetWriter(str(path), model="m", layers=list(layers), dim=DIM, dtype=dtype, scale=scale,
                       shard_bytes=rows_per_shard * DIM, **kw) as w:
        n = len(x)
        for lo, hi in [(0, n // 3), (n // 3, n)]:  # two add() batches across shard boundaries
            w.add([f"t{i}" for i in range(lo, hi)], hidden={L: x[lo:hi] * (L + 1) for L in layers},
                  labels=[i % 2 for i in range(lo, hi)])
    return actstore.open_dataset(str(path))


def reference(x: np.ndarray, dtype: str, scale: str, rows_per_shard: int) -> np.ndarray:
    """The spec's formula, written out independently of the reader (ml_dtypes for e4m3)."""
    codec = codecs.CODECS[dtype]
    out = np.empty_like(x)
    for lo in range(0, len(x), rows_per_shard):
        part = x[lo : lo + rows_per_shard]
        off = np.float32(0)
        if scale == "per_channel_affine":  # offset: the middle of the range, in float64
            off = ((part.min(0).astype(np.float64) + part.max(0)) / 2).astype(np.float32)
            m = np.maximum(part.max(0) - off, off - part.min(0))
        else:
            m = np.abs(part).max(axis=1 if scale == "per_row" else 0)
        s = codecs.compute_scales(m, codec.qmax).astype(np.float32)
        s = s[:, None] if scale == "per_row" else s
        y = np.clip((part - off).astype(np.float64) / s, -codec.qmax, codec.qmax).astype(np.float32)
        q = np.rint(y) if dtype == "int8" else y.astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
        out[lo : lo + rows_per_shard] = (q * s).astype(np.float32) + off
    return out


@pytest.mark.parametrize(("dtype", "scale"), CASES)
def test_every_read_path_dequantises_the_same_values(tmp_path, dtype, scale):
    x = activations(40)
    ds = write(tmp_path / "ds", dtype, scale, x)
    assert ds.info.dtype == dtype and len(ds.info.tensors["hidden_layers"]["shards"]) == 4
    want = reference(x * 3, dtype, scale, 12)
    got = ds.layer(2)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(x).max())
    assert np.all(np.isfinite(got))
    rows = [39, 0, 13, 13, 25]
    np.testing.assert_array_equal(ds.get(rows, [2])[:, 0], got[rows])
    np.testing.assert_array_equal(ds.get(rows)[:, 1], got[rows])
    np.testing.assert_array_equal(ds.select([5, 30]).layer(2), got[[5, 30]])
    X = np.concatenate([b for b, _ in ds.iter_batches(2, 7)])
    np.testing.assert_array_equal(X, got)
    order = np.concatenate([p for _, p in ds.iter_batches(2, 5, shuffle=True, seed=3)])
    Xs = np.concatenate([b for b, _ in ds.iter_batches(2, 5, shuffle=True, seed=3)])
    np.testing.assert_array_equal(Xs, got[order])
    t = ds.torch(2)
    assert str(t.dtype) == "torch.float32" and np.array_equal(t.numpy(), got)
    b = ds.layer(2, dtype="bfloat16")
    assert b.dtype.name == "bfloat16"
    np.testing.assert_array_equal(b.astype(np.float32), got.astype(ml_dtypes.bfloat16).astype(np.float32))
    h = ds.get(rows, [2], dtype="float16")
    np.testing.assert_array_equal(h[:, 0], got[rows].astype(np.float16))
    q = ds.codes(2)
    np.testing.assert_array_equal(q.dequantize(), got)
    assert q.codes.dtype == (np.int8 if dtype == "int8" else np.uint8) and q.codes.nbytes == x.size
    assert ds.verify().ok


@pytest.mark.parametrize(("dtype", "scale"), CASES)
def test_recorded_error_is_the_measured_error(tmp_path, dtype, scale):
    x = activations(40, seed=1)
    ds = write(tmp_path / "ds", dtype, scale, x)
    c = ds.info.codec
    assert c["dtype"] == dtype and c["scale"] == scale and set(c["layers"]) == {0, 2}
    if scale == "per_channel_affine":
        assert "code × scale + offset" in "\n".join(codecs.card_lines(c))
    for L in (0, 2):
        truth, got = x * (L + 1), ds.layer(L)
        st_ = c["layers"][L]
        rel = np.linalg.norm(got - truth) / np.linalg.norm(truth)
        assert st_["rel_l2"] == pytest.approx(rel, rel=1e-4)
        assert st_["max_abs_err"] == pytest.approx(np.abs(got - truth).max(), rel=1e-5)
        cos = np.sum(got * truth, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(truth, axis=1)
        assert st_["mean_cosine"] == pytest.approx(cos.mean(), abs=1e-6)
        assert st_["clipped"] == 0
    meta = pq.read_schema(tmp_path / "ds" / "index/train-00000-of-00001.parquet").metadata
    fmt = json.loads(meta[b"actstore:format"])
    assert fmt["must_understand"] == ["codecs"]
    desc = json.loads(meta[b"lmprobe:tensors"])["hidden_layers"]
    assert desc["dtype"] == dtype and desc["key_pattern"] == "hidden.layer_{layer}.codes"
    assert desc["codec"] == {"name": dtype, "scale": scale, "scale_dtype": "float32"}
    assert desc["row_bytes"] == DIM


def test_per_channel_scales_belong_to_their_shard(tmp_path):
    """Each shard file has its own scales: a shard of small rows keeps its precision."""
    x = np.random.default_rng(2).standard_normal((24, DIM)).astype(np.float32)
    x[12:] *= 1e-3  # the second shard is 1000x smaller
    ds = write(tmp_path / "ds", "int8", "per_channel", x, layers=(0,))
    got = ds.layer(0)
    for lo in (0, 12):
        part = slice(lo, lo + 12)
        assert np.linalg.norm(got[part] - x[part]) / np.linalg.norm(x[part]) < 0.01
    q = ds.codes(0, [0, 23])
    assert q.scales.shape == (2, DIM) and list(q.scale_index) == [0, 1]


@pytest.mark.parametrize("dtype", ["int8", "fp8_e4m3"])
def test_affine_scales_keep_the_variation_of_a_channel_on_a_large_offset(tmp_path, dtype):
    """A channel at 5000 +- 1 (a massive activation): a per-channel scale spends its codes on
    the offset and keeps little of the variation; the affine codec stores the offset and
    spends every code on the variation (per shard file: its own offsets)."""
    x = activations(48)  # channel 7 is 5000 + N(0, 1)
    x[24:, 7] -= 9000.0  # the second shard's channel 7 sits at -4000
    plain = write(tmp_path / "p", dtype, "per_channel", x, layers=(0,), rows_per_shard=24).layer(0)
    ds = write(tmp_path / "a", dtype, "per_channel_affine", x, layers=(0,), rows_per_shard=24)
    affine = ds.layer(0)

    def kept(got):  # the variation's relative error on channel 7, per shard
        return [np.linalg.norm(got[p, 7] - x[p, 7]) / np.linalg.norm(x[p, 7] - x[p, 7].mean())
                for p in (slice(0, 24), slice(24, 48))]

    assert max(kept(affine)) < {"int8": 0.01, "fp8_e4m3": 0.05}[dtype]
    assert min(kept(plain)) > 5 * max(kept(affine))
    q = ds.codes(0, [0, 47])
    assert q.scale == "per_channel_affine" and q.offsets.shape == (2, DIM)
    assert abs(q.offsets[0, 7] - 5000) < 5 and abs(q.offsets[1, 7] + 4000) < 5
    np.testing.assert_array_equal(q.dequantize(), affine[[0, 47]])
    assert ds.info.codec["scale"] == "per_channel_affine" and ds.verify().ok


@pytest.mark.parametrize("dtype", ["int8", "fp8_e4m3"])
def test_default_scale_is_per_channel_affine_and_e4m3_never_overflows(tmp_path, dtype):
    """The default is the affine scale (measured: specs/format-v2.md 2b); values far above
    e4m3's 448 (and int8's 127) are scaled, never NaN or clipped."""
    x = activations(30) * 100.0  # outliers at 5e5
    ds = write(tmp_path / "ds", dtype, None, x, layers=(0,))
    assert ds.info.codec["scale"] == "per_channel_affine" and ds.codes(0).offsets is not None
    got = ds.layer(0)
    assert np.all(np.isfinite(got)) and ds.info.codec["clipped"] == 0
    assert np.abs(got[:, 7] - x[:, 7]).max() / np.abs(x[:, 7]).max() < 0.07


def test_fp8_decode_matches_ml_dtypes_for_every_code():
    codes = np.arange(256, dtype=np.uint8)
    finite = (codes & 0x7F) != 0x7F
    want = codes[finite].view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    for scale in (np.float32(1.0), np.float32(3.7), np.float32(1e-30), np.float32(1e30)):
        out = np.empty((1, int(finite.sum())), dtype=np.float32)
        codecs.decode(codes[finite].view(np.int8)[None], scale, codecs.CODECS["fp8_e4m3"], out, where="t")
        prod = (want.astype(np.float64) * scale).astype(np.float32)
        np.testing.assert_array_equal(out[0], prod)
        off = np.float32(-12345.678)  # affine: the product rounded to float32, then the sum
        codecs.decode(codes[finite].view(np.int8)[None], scale, codecs.CODECS["fp8_e4m3"], out, where="t",
                      offset=off)
        np.testing.assert_array_equal(out[0], (prod.astype(np.float64) + off).astype(np.float32))


@pytest.mark.parametrize("dtype", ["int8", "fp8_e4m3"])
@pytest.mark.parametrize("scale", SCALES)
def test_chunked_reads_are_the_formula_on_the_stored_codes(tmp_path, monkeypatch, dtype, scale):
    """Every read path, cut into small chunks and cache blocks, gives exactly
    ``float32(code * scale)`` of the stored codes (``+ offset``, rounded again, for the affine
    codec), also for fp8 scales above 2^7 (where the 2^120 rescale cannot be folded into the
    scale)."""
    monkeypatch.setattr(codecs, "CHUNK_BYTES", 5 * DIM)  # 5-row chunks
    monkeypatch.setattr(codecs, "GATHER_CHUNK_BYTES", 3 * DIM)  # 3-row chunks of scattered rows
    monkeypatch.setattr(codecs, "DECODE_BYTES", 2 * DIM)  # 2-row cache blocks
    x = activations(40)
    x[::3] *= 1e5  # scales up to ~1e6: far above 2^7
    ds = write(tmp_path / "ds", dtype, scale, x, layers=(0,))
    q = ds.codes(0)
    v = q.codes.view(ml_dtypes.float8_e4m3fn) if dtype == "fp8_e4m3" else q.codes
    s = q.scales[:, None] if scale == "per_row" else q.scales[q.scale_index]
    assert s.max() > 2.0**7
    want = (v.astype(np.float64) * s.astype(np.float64)).astype(np.float32)  # exact, then one rounding
    if scale == "per_channel_affine":
        assert np.abs(q.offsets).max() > 1000
        want = (want.astype(np.float64) + q.offsets[q.scale_index]).astype(np.float32)
    np.testing.assert_array_equal(ds.layer(0), want)
    rows = [39, 0, 13, 13, 25, 7, 8, 9]
    np.testing.assert_array_equal(ds.get(rows, [0])[:, 0], want[rows])
    np.testing.assert_array_equal(np.concatenate([b for b, _ in ds.iter_batches(0, 11)]), want)
    np.testing.assert_array_equal(ds.layer(0, dtype="bfloat16").astype(np.float32),
                                  want.astype(ml_dtypes.bfloat16).astype(np.float32))
    (b,) = actstore.stream(ds, layers=0, batch_size=40, shuffle=True, seed=2, numpy=True)
    np.testing.assert_array_equal(b["layer_0"], want[b["row"]])


def test_full_sequence_int8(tmp_path):
    """Full-sequence data: every token file (last-token and rest shards) has its own scales."""
    rng = np.random.default_rng(4)
    seqs = [rng.standard_normal((k, DIM)).astype(np.float32) * 10 for k in (3, 1, 5, 2)]
    with DatasetWriter(str(tmp_path / "ds"), model="m", layers=[1], dim=DIM, dtype="int8",
                       pooling="all", shard_bytes=4 * DIM) as w:
        w.add(["a", "b", "c", "d"], hidden={1: seqs})
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    assert ds.info.codec["layers"][1]["rel_l2"] < 0.01
    for i, s in enumerate(seqs):
        got = ds.tokens(i, 1)
        assert got.shape == s.shape and np.linalg.norm(got - s) / np.linalg.norm(s) < 0.01
    np.testing.assert_array_equal(ds.layer(1), np.stack([ds.tokens(i, 1)[-1] for i in range(4)]))
    assert ds.verify().ok


@pytest.mark.parametrize("dtype", ["int8", "fp8_e4m3"])
def test_stream_loader_dequantises(tmp_path, dtype):
    """The training loader (actstore.stream) returns the reader's dequantised rows, never codes."""
    x = activations(40)
    ds = write(tmp_path / "ds", dtype, "per_row" if dtype == "int8" else "per_channel", x)
    got, got0 = ds.layer(2), ds.layer(0)
    batches = list(actstore.stream(ds, layers=2, batch_size=7, shuffle=False, numpy=True))
    X = np.concatenate([b["layer_2"] for b in batches])
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X, got)
    mixed = list(actstore.stream(ds, layers=[0, 2], batch_size=5, shuffle=True, seed=1, numpy=True))
    rows = np.concatenate([b["row"] for b in mixed])
    assert sorted(rows.tolist()) == list(range(40))
    np.testing.assert_array_equal(np.concatenate([b["layer_2"] for b in mixed]), got[rows])
    np.testing.assert_array_equal(np.concatenate([b["layer_0"] for b in mixed]), got0[rows])
    (bf,) = actstore.stream(ds, layers=2, batch_size=40, shuffle=False, numpy=True, dtype="bfloat16")
    np.testing.assert_array_equal(bf["layer_2"].astype(np.float32),
                                  got.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_stream_tokens_of_an_int8_full_sequence_dataset(tmp_path):
    rng = np.random.default_rng(5)
    seqs = [rng.standard_normal((k, DIM)).astype(np.float32) * 10 for k in (3, 1, 5, 2)]
    with DatasetWriter(str(tmp_path / "ds"), model="m", layers=[1], dim=DIM, dtype="int8",
                       pooling="all", shard_bytes=4 * DIM) as w:
        w.add(["a", "b", "c", "d"], hidden={1: seqs})
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    batches = list(actstore.stream(ds, layers=1, tokens=True, batch_size=4, shuffle=False, numpy=True))
    X = np.concatenate([b["layer_1"] for b in batches])
    rows, toks = np.concatenate([b["row"] for b in batches]), np.concatenate([b["token"] for b in batches])
    assert X.shape == (11, DIM)
    for x, r, t in zip(X, rows, toks):
        np.testing.assert_array_equal(x, ds.tokens(int(r), 1)[int(t)])


def test_remote_read_dequantises(tmp_path):
    x = activations(20)
    local = write(tmp_path / "ds", "int8", "per_channel", x, layers=(0,))
    import fsspec

    fs = fsspec.filesystem("memory")
    for p in (tmp_path / "ds").rglob("*"):
        if p.is_file():
            fs.pipe(f"/codecs-remote/{p.relative_to(tmp_path / 'ds')}", p.read_bytes())
    remote = actstore.open_dataset("memory://codecs-remote")
    np.testing.assert_array_equal(remote.layer(0), local.layer(0))
    np.testing.assert_array_equal(remote.get([3, 1])[:, 0], local.layer(0)[[3, 1]])


def test_large_layer_read_in_chunks_in_parallel(tmp_path, monkeypatch):
    """A layer larger than several chunks (and than the parallel threshold) reads exactly."""
    monkeypatch.setattr(codecs, "CHUNK_BYTES", 64)
    monkeypatch.setattr(codecs, "GATHER_CHUNK_BYTES", 64)
    monkeypatch.setattr(codecs, "PARALLEL_BYTES", 256)
    x = activations(200)
    ds = write(tmp_path / "ds", "int8", "per_channel", x, layers=(0,), rows_per_shard=64)
    want = reference(x, "int8", "per_channel", 64)
    np.testing.assert_allclose(ds.layer(0), want, rtol=1e-6, atol=1e-6 * np.abs(x).max())


def test_info_cli_shows_the_codec(tmp_path):
    write(tmp_path / "ds", "int8", "per_channel", activations(20), layers=(0,))
    out = subprocess.run([sys.executable, "-m", "actstore", "info", str(tmp_path / "ds")],
                         capture_output=True, text=True, check=True).stdout
    assert "int8, per_channel scales" in out and "rel L2" in out
    js = json.loads(subprocess.run([sys.executable, "-m", "actstore", "info", "--json", str(tmp_path / "ds")],
                                   capture_output=True, text=True, check=True).stdout)
    assert js["codec"]["dtype"] == "int8" and js["dtype"] == "int8"


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(["int8", "fp8_e4m3"]),
    scale=st.sampled_from(SCALES),
    rows=st.integers(1, 9),
    magnitude=st.floats(1e-20, 1e20),
    seed=st.integers(0, 2**16),
)
def test_roundtrip_error_bound(dtype, scale, rows, magnitude, seed):
    """|x - decode(encode(x))| <= half a code step (int8) or 2^-4 relative + half the
    smallest subnormal step (e4m3), everywhere, for any magnitude; for the affine codec the
    same of ``x - offset``, plus the float32 roundings of the subtraction and the sum."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, 5)) * magnitude).astype(np.float32)
    x[:, 1] += np.float32(magnitude * 100)  # a channel on a large offset
    codec = codecs.CODECS[dtype]
    off = None
    if scale == "per_channel_affine":
        off, m = codecs.compute_offsets(x.min(0), x.max(0), where="t")
    else:
        m = np.abs(x).max(axis=1 if scale == "per_row" else 0)
    s = codecs.compute_scales(m, codec.qmax)
    s = s[:, None] if scale == "per_row" else s
    codes, scratch, back = np.empty(x.shape, np.int8), np.empty_like(x), np.empty_like(x)
    assert codecs.encode(x, s, codec, codes, scratch, off) == 0
    codecs.decode(codes, s, codec, back, where="t", offset=off)
    err = np.abs(back.astype(np.float64) - x)
    sb = np.broadcast_to(s, x.shape).astype(np.float64)
    centred = np.abs(x.astype(np.float64) - (0 if off is None else off))
    slack = 1e-6 * (np.abs(x) + (0 if off is None else np.broadcast_to(m, x.shape)))
    if dtype == "int8":
        bound = 0.5 * sb * (1 + 1e-5) + slack
    else:
        bound = centred * 2.0**-4 * (1 + 1e-5) + sb * 2.0**-10 + slack
    assert np.all(err <= bound + 1e-37)
    assert np.all(np.isfinite(back))


@settings(max_examples=15, deadline=None)
@given(
    dtype=st.sampled_from(["int8", "fp8_e4m3"]),
    scale=st.sampled_from(SCALES),
    n=st.integers(1, 30),
    rows_per_shard=st.integers(1, 11),
    seed=st.integers(0, 2**16),
)
def test_written_datasets_read_back_the_formula(dtype, scale, n, rows_per_shard, seed):
    """Any row count and shard size: the reader returns exactly the spec's formula applied
    per shard file, and the recorded error equals the measured one."""
    import tempfile

    x = activations(n, seed) * np.float32(np.random.default_rng(seed).uniform(1e-3, 1e3))
    with tempfile.TemporaryDirectory() as d:
        ds = write(f"{d}/ds", dtype, scale, x, layers=(0,), rows_per_shard=rows_per_shard)
        got = ds.layer(0)
        want = reference(x, dtype, scale, rows_per_shard)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * float(np.abs(x).max()))
        rel = np.linalg.norm(got - x) / np.linalg.norm(x)
        assert ds.info.codec["layers"][0]["rel_l2"] == pytest.approx(rel, rel=1e-3, abs=1e-9)
        rows = np.random.default_rng(seed).permutation(n)[: max(1, n // 2)]
        np.testing.assert_array_equal(ds.get(rows, [0])[:, 0], got[rows])


def test_codec_shards_are_capped_so_the_float32_spill_stays_bounded(tmp_path):
    w = DatasetWriter(str(tmp_path / "a"), model="m", layers=[0], dim=DIM, dtype="int8")
    assert w.shard_bytes == codecs.CODEC_MAX_SHARD_BYTES and w.rows_per_shard == (64 << 20) // DIM
    w.abort()
    f = DatasetWriter(str(tmp_path / "b"), model="m", layers=[0], dim=DIM, dtype="bfloat16")
    assert f.shard_bytes == 1 << 30
    f.abort()
