"""Compact storage codecs: int8 and fp8 (e4m3) codes with float32 scales (spec section 2b).

One concept: turning float rows into one-byte codes plus positive scales and back.

- Encoding: ``code = round(x / scale)`` clipped to ``[-127, 127]`` (int8), or
  ``code = e4m3(x / scale)`` with ``|x / scale| <= 448`` (fp8 e4m3fn, round to nearest even).
- Decoding: ``x = code * scale``, with ``scale`` a float32 per channel (one ``[dim]`` vector
  per shard file, the default) or per row (``[rows]``); or ``x = code * scale + offset``
  (``per_channel_affine``: a ``[dim]`` offset per shard file too, the middle of each
  channel's range, so a channel riding on a large constant keeps its variation).
- Scales are computed from the data's largest magnitude, so nothing clips and e4m3 never
  overflows into NaN; NaN and inf inputs are refused (there is no scale for them).
- Error statistics (relative L2, mean cosine, max abs error, clipped values) are measured
  while encoding, by decoding every chunk again, and recorded in the metadata.

Readers dequantise a bounded chunk of rows at a time (:func:`read_coded`): codes are read
into a small scratch array and widened straight into the caller's output, so no full-size
temporary exists.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import IntegrityError, InvalidArgumentError, WriteError
from . import spec
from .codec_spec import (  # noqa: F401 (re-exported: the codec's description)
    CODECS,
    DEFAULT_SCALE,
    SCALES,
    Codec,
    CodecSpec,
    check_codec,
    float_dtype,
    parse_codec,
)
from .dtypes import f32_to_bf16_bits
from .header import TensorEntry, build_header
from .parallel import in_pieces, piece_count
from .rows import PAGE, _phased, read_rows
from .shardfile import _write_all  # every byte written, or a WriteError
from .source import ByteSource, LocalSource, pread_exact

__all__ = [
    "CODECS",
    "CODEC_MAX_SHARD_BYTES",
    "DEFAULT_SCALE",
    "SCALES",
    "Codec",
    "CodecShardFile",
    "CodecSpec",
    "ErrorStats",
    "QuantizedRows",
    "Scales",
    "card_lines",
    "check_codec",
    "codec_record",
    "compute_offsets",
    "compute_scales",
    "decode",
    "encode",
    "float_dtype",
    "gather_codes",
    "info_summary",
    "load_scales",
    "parse_codec",
    "read_coded",
]

#: Codes read per request while dequantising (one ``pread`` for a run of rows, else one
#: ``read_rows`` call); 1 MiB stays in cache while it is widened (measured 1.1-1.2x faster
#: than 4 MiB for a whole layer here).
CHUNK_BYTES = 1 << 20
#: The same for scattered rows (one ``read_rows`` call each, whose fixed cost is larger):
#: 4 MiB measured 1.1x faster than 1 MiB for ``get`` of every 4th row here.
GATHER_CHUNK_BYTES = 4 << 20
#: Codes widened per step (256 KiB of codes widen into 1 MiB of float32, cache-resident).
DECODE_BYTES = 256 << 10
#: Largest codec shard file a writer makes (its float32 spill is 4x this while it is open).
CODEC_MAX_SHARD_BYTES = 64 << 20
#: Outputs at least this large are dequantised on parallel threads (local files).
PARALLEL_BYTES = 16 << 20
_F8_MAGIC = np.float32(2.0**120)  # e4m3 bits placed in a float32's exponent, rescaled exactly
_F8_MASK = np.int32(0x87F00000 - (1 << 32))  # bit 31 (sign) + bits 26-20 (exponent, mantissa)


# -- scales, encoding, decoding --------------------------------------------------------
def compute_scales(maxabs: np.ndarray, qmax: float) -> np.ndarray:
    """Positive float32 scales with ``maxabs / scale <= qmax`` (1.0 where ``maxabs`` is 0)."""
    m = np.asarray(maxabs, dtype=np.float32)
    s = m / np.float32(qmax)
    tiny = np.finfo(np.float32).tiny
    s = np.where(m == 0, np.float32(1.0), np.maximum(s, tiny)).astype(np.float32)
    over = m / s > np.float32(qmax)  # rounding may put the largest value just past the range
    if over.any():
        s[over] = np.nextafter(s[over], np.float32(np.inf))
    return s


def compute_offsets(lo: np.ndarray, hi: np.ndarray, *, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(offset, maxabs)`` of an affine codec from the channels' minima ``lo``
    and maxima ``hi``: ``offset = float32((lo + hi) / 2)`` (computed in float64) and
    ``maxabs = max(hi - offset, offset - lo)`` in float32, which bounds ``|x - offset|`` of
    every ``x`` in ``[lo, hi]`` (float32 subtraction is monotonic).

    Raises :class:`InvalidArgumentError` when a channel's range is too wide for float32.
    """
    lo64, hi64 = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    off = ((lo64 + hi64) / 2).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        m = np.maximum(np.asarray(hi, np.float32) - off, off - np.asarray(lo, np.float32))
    if not np.all(np.isfinite(m)):
        c = int(np.flatnonzero(~np.isfinite(m))[0])
        raise InvalidArgumentError(
            f"{where}: channel {c} spans [{float(lo64[c])!r}, {float(hi64[c])!r}], wider than float32 can "
            "hold around its middle; use scale='per_channel' for these activations."
        )
    return off, m.astype(np.float32)


def encode(x: np.ndarray, scale: np.ndarray, codec: Codec, codes: np.ndarray,
           scratch: np.ndarray, offset: np.ndarray | None = None) -> int:
    """Encode float32 rows ``x`` into ``codes`` (int8 storage); returns the clipped count.

    ``scale`` broadcasts against ``x`` (``[dim]`` or ``[rows, 1]``); ``offset`` (affine
    codecs, ``[dim]``) is subtracted first, in float32; ``scratch`` is a float32 array of
    ``x``'s shape.
    """
    if offset is not None:
        np.subtract(x, offset, out=scratch)
        np.divide(scratch, scale, out=scratch)
    else:
        np.divide(x, scale, out=scratch)
    clipped = int(np.count_nonzero(np.abs(scratch) > codec.qmax))
    np.clip(scratch, -codec.qmax, codec.qmax, out=scratch)
    if codec.code == "I8":
        np.rint(scratch, out=scratch)
        codes[...] = scratch
    else:
        import ml_dtypes

        codes[...] = scratch.astype(ml_dtypes.float8_e4m3fn).view(np.int8)
    return clipped


def _multipliers(scale: np.ndarray, codec: Codec) -> tuple[np.ndarray, np.ndarray | None]:
    """What :func:`_dequantize` multiplies by: the scale (int8), or for fp8 the scale times
    2^120 (``(m, None)``), or 2^120 then the scale where that product would overflow."""
    s = np.asarray(scale, dtype=np.float32)
    if codec.code == "I8":
        return s, None
    if float(np.max(s, initial=0.0)) < 2.0**7:  # scale x 2^120 stays finite: one multiply
        return s * _F8_MAGIC, None
    return np.asarray(_F8_MAGIC), s


def _check_fp8(codes: np.ndarray, where: str) -> None:
    """Refuse fp8 NaN codes, naming ``where``: ``0x7F`` is the largest int8 and ``0xFF`` the
    largest uint8, so two reductions find them with no temporary."""
    if codes.size and (int(codes.view(np.int8).max()) == 0x7F or int(codes.view(np.uint8).max()) == 0xFF):
        raise IntegrityError(f"{where}: holds fp8 NaN codes (0x7F/0xFF); the file is corrupt.")


def _dequantize(codes: np.ndarray, mult: tuple[np.ndarray, np.ndarray | None], code: str,
                out: np.ndarray, offset: np.ndarray | None = None) -> None:
    """``out = code * scale (+ offset)`` for checked codes and :func:`_multipliers` (no
    checks): the product rounded to float32, then the sum (two roundings, never fused)."""
    if code == "I8":
        # a plain cast then an in-place multiply: both SIMD loops, measured ~1.6x faster
        # than one mixed-type multiply (numpy buffers that through small casts)
        np.copyto(out, codes, casting="unsafe")
    else:
        bits = out.view(np.int32)
        np.copyto(bits, codes.view(np.int8), casting="unsafe")  # sign-extended: a SIMD cast
        np.left_shift(bits, 20, out=bits)
        np.bitwise_and(bits, _F8_MASK, out=bits)
    np.multiply(out, mult[0], out=out)
    if mult[1] is not None:
        np.multiply(out, mult[1], out=out)
    if offset is not None:
        np.add(out, offset, out=out)


def decode(codes: np.ndarray, scale: np.ndarray, codec: Codec, out: np.ndarray, *, where: str,
           offset: np.ndarray | None = None) -> None:
    """``out = code * scale`` in float32, exactly as spec section 2b defines it (then
    ``+ offset``, rounded again, for an affine codec).

    int8 codes are widened by a cast. fp8 codes are widened by placing their bits in a
    float32: the sign-extended code shifted left by 20 and masked holds the sign on bit 31 and
    the 7 exponent/mantissa bits on bits 26-20, which is the e4m3 value times 2^-120 exactly
    (subnormals included); the scale times 2^120 then restores it in the one multiply.
    fp8 NaN codes (``0x7F``, ``0xFF``) are refused first, naming ``where``. Call it on
    cache-sized blocks: ``out`` is rewritten in place (measured here, 64-256 KiB of codes:
    int8 ~15 GB/s, fp8 ~10 GB/s of float32 output; a 256-entry table gathered with
    ``np.take`` reached 4 GB/s, its uint8 indices being widened to intp first).
    """
    if codec.code != "I8":
        _check_fp8(codes, where)
    _dequantize(codes, _multipliers(scale, codec), codec.code, out, offset)


# -- error statistics ----------------------------------------------------------------
@dataclass
class ErrorStats:
    """Running error of one layer: sums in float64, merged across shards."""

    rows: int = 0
    values: int = 0
    sq_x: float = 0.0
    sq_err: float = 0.0
    cos_sum: float = 0.0
    max_abs_err: float = 0.0
    clipped: int = 0

    def add(self, x: np.ndarray, xhat: np.ndarray, clipped: int) -> None:
        if x.size == 0:
            return
        err = xhat - x
        self.rows += x.shape[0]
        self.values += x.size
        self.sq_x += float(np.einsum("ij,ij->", x, x, dtype=np.float64))
        self.sq_err += float(np.einsum("ij,ij->", err, err, dtype=np.float64))
        self.max_abs_err = max(self.max_abs_err, float(np.max(np.abs(err))))
        dots = np.einsum("ij,ij->i", x, xhat, dtype=np.float64)
        nx = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
        nh = np.sqrt(np.einsum("ij,ij->i", xhat, xhat, dtype=np.float64))
        denom = nx * nh
        cos = np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), np.where(nx == nh, 1.0, 0.0))
        self.cos_sum += float(cos.sum())
        self.clipped += clipped

    def to_dict(self) -> dict[str, Any]:
        rel = math.sqrt(self.sq_err / self.sq_x) if self.sq_x > 0 else 0.0
        return {
            "rel_l2": rel,
            "mean_cosine": self.cos_sum / self.rows if self.rows else 1.0,
            "max_abs_err": self.max_abs_err,
            "clipped": self.clipped,
            "rows": self.rows,
        }


def info_summary(record: object, primary: str) -> dict[str, Any] | None:
    """``ds.info.codec``: the recorded ``actstore:codec`` of the primary view, summarised.

    Metadata comes from strangers: anything malformed yields None (these numbers are only
    shown, never used to read).
    """
    if not isinstance(record, dict) or not isinstance(record.get("layers"), dict):
        return None
    per_view = record["layers"].get(primary)
    if not isinstance(per_view, dict):
        return None
    layers: dict[int | str, dict[str, Any]] = {}
    for key, st in per_view.items():
        if not isinstance(st, dict) or not all(
            isinstance(st.get(f), (int, float)) and not isinstance(st.get(f), bool)
            for f in ("rel_l2", "mean_cosine", "max_abs_err", "clipped")
        ):
            return None
        try:
            L = int(key)
        except ValueError:
            return None
        layers["embeddings" if L == -1 else L] = {f: st[f] for f in ("rel_l2", "mean_cosine", "max_abs_err", "clipped")}
    if not layers:
        return None
    stats = list(layers.values())
    return {
        "dtype": record.get("dtype"),
        "scale": record.get("scale"),
        "rel_l2": max(s["rel_l2"] for s in stats),
        "mean_cosine": min(s["mean_cosine"] for s in stats),
        "max_abs_err": max(s["max_abs_err"] for s in stats),
        "clipped": sum(int(s["clipped"]) for s in stats),
        "layers": layers,
    }


# -- writing -----------------------------------------------------------------------------
class CodecShardFile:
    """One codec shard file (codes, then scales), written when its rows are complete.

    Per-channel scales need the whole shard's largest magnitudes before the first code, so
    rows are first spilled as float32 to ``<path>.f32`` beside the staged file (the first
    pass: it tracks the per-channel maxima, or minima and maxima for an affine codec), and
    encoded from there at :meth:`close`, a chunk at a time (memory stays bounded by a chunk,
    disk by one float32 shard).
    The interface matches :class:`~actstore.format.shardfile.StreamingTensorFile`.
    """

    def __init__(self, path: str, *, layer: int, dim: int, codec: CodecSpec, stats: ErrorStats) -> None:
        self.path = path
        self.dim, self.codec, self.stats = dim, codec, stats
        self.codes_key = spec.CODES_KEY.format(layer=layer)
        self.scale_key = spec.SCALE_KEY.format(layer=layer)
        self.offset_key = spec.OFFSET_KEY.format(layer=layer)
        self.rows = 0
        self._spill_path = path + ".f32"
        self._spill = open(self._spill_path, "wb", buffering=0)  # noqa: SIM115 - closed in close()/discard()
        self._maxabs = np.zeros(dim, dtype=np.float32)
        self._lo = np.full(dim, np.inf, dtype=np.float32)  # affine codecs: the channels' range
        self._hi = np.full(dim, -np.inf, dtype=np.float32)

    def append(self, block: np.ndarray) -> None:
        """Append float32 ``(rows, dim)`` rows (finite: NaN/inf cannot be scaled)."""
        block = np.ascontiguousarray(block, dtype=np.float32)
        if block.size:
            m = np.max(np.abs(block), axis=0)
            if not np.all(np.isfinite(m)):
                raise InvalidArgumentError(
                    f"{self.codes_key}: the {self.codec.codec.name} codec cannot store NaN or inf "
                    "(no scale represents them); clean the activations or store a float dtype."
                )
            np.maximum(self._maxabs, m, out=self._maxabs)
            if self.codec.affine:
                np.minimum(self._lo, block.min(axis=0), out=self._lo)
                np.maximum(self._hi, block.max(axis=0), out=self._hi)
        _write_all(self._spill, memoryview(block).cast("B"), self._spill_path)
        self.rows += block.shape[0]

    def wait(self) -> None:
        """Nothing is pending (the interface of StreamingTensorFile)."""

    def close(self, *, sync: bool = False) -> tuple[int, str]:
        """Encode the spilled rows into the final file; returns ``(size, sha256)``
        (``sync``: flush the file to the disk before it is committed, as
        :meth:`StreamingTensorFile.close` does)."""
        self._spill.close()
        c, dim, rows = self.codec, self.dim, self.rows
        tensors = [(self.codes_key, c.codec.code, (rows, dim)),
                   (self.scale_key, "F32", c.scale_shape(rows, dim))]
        if c.affine:
            tensors.append((self.offset_key, "F32", (dim,)))
        header = build_header(tensors)
        h = hashlib.sha256(header)
        per_channel = c.per_channel
        offset: np.ndarray | None = None
        maxabs = self._maxabs
        if c.affine:
            if rows:
                offset, maxabs = compute_offsets(self._lo, self._hi, where=f"{self.path} ({self.codes_key})")
            else:
                offset = np.zeros(dim, dtype=np.float32)
        channel_scale = compute_scales(maxabs, c.codec.qmax) if per_channel else None
        row_scales: list[np.ndarray] = []
        step = max(1, CHUNK_BYTES // max(dim, 1))
        x = np.empty((min(step, max(rows, 1)), dim), dtype=np.float32)
        scratch, back = np.empty_like(x), np.empty_like(x)
        codes = np.empty(x.shape, dtype=np.int8)
        written = 0
        with open(self._spill_path, "rb", buffering=0) as src, open(self.path, "wb", buffering=0) as f:
            _write_all(f, header, self.path)
            written += len(header)
            for lo in range(0, rows, step):
                k = min(step, rows - lo)
                view = memoryview(x[:k]).cast("B")
                if src.readinto(view) != view.nbytes:
                    raise WriteError(f"{self._spill_path}: the spilled rows came back short.")
                if per_channel:
                    s: np.ndarray = channel_scale  # type: ignore[assignment]
                else:
                    rs = compute_scales(np.max(np.abs(x[:k]), axis=1), c.codec.qmax)
                    row_scales.append(rs)
                    s = rs[:, None]
                clipped = encode(x[:k], s, c.codec, codes[:k], scratch[:k], offset)
                decode(codes[:k], s, c.codec, back[:k], where=self.path, offset=offset)
                self.stats.add(x[:k], back[:k], clipped)
                data = memoryview(codes[:k]).cast("B")
                h.update(data)
                _write_all(f, data, self.path)
                written += data.nbytes
            scales = channel_scale if per_channel else (
                np.concatenate(row_scales) if row_scales else np.zeros(0, np.float32))
            blob = np.ascontiguousarray(scales, dtype="<f4").tobytes()
            if offset is not None:  # the affine codec's offsets follow the scales
                blob += np.ascontiguousarray(offset, dtype="<f4").tobytes()
            h.update(blob)
            _write_all(f, blob, self.path)
            written += len(blob)
            size = f.seek(0, os.SEEK_END)
            if sync:
                os.fsync(f.fileno())
        os.remove(self._spill_path)
        if size != written:
            raise WriteError(f"{self.path}: holds {size} bytes after writing {written}; the write came out short.")
        return size, h.hexdigest()

    def discard(self) -> None:
        """Close and delete the spill and the file (an aborted write)."""
        self._spill.close()
        for p in (self._spill_path, self.path):
            if os.path.exists(p):
                os.remove(p)


# -- reading -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Scales:
    """The checked scales of one codec shard file, and its offsets for an affine codec.

    ``scale`` is ``[dim]`` (per channel) or ``[rows]`` (per row); ``offset`` is ``[dim]``
    (``per_channel_affine``) or None.
    """

    scale: np.ndarray
    offset: np.ndarray | None = None


def _checked_f32(source: ByteSource, path: str, entries: dict[str, TensorEntry], key: str,
                 want: tuple[int], what: str, codec: CodecSpec) -> np.ndarray:
    """A float32 tensor of a codec shard file, its presence, dtype and shape checked."""
    e = entries.get(key)
    if e is None:
        raise IntegrityError(f"{path}: has no {what} tensor {key!r} (found {sorted(entries)[:8]}).")
    if e.dtype != "F32" or tuple(e.shape) != want:
        raise IntegrityError(
            f"{path}: {what} tensor {key!r} is {e.dtype} {list(e.shape)}; expected F32 {list(want)} "
            f"({codec.scale} scales)."
        )
    (blob,) = source.read_ranges(path, [(e.start, e.end)])
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def load_scales(source: ByteSource, path: str, entries: dict[str, TensorEntry], layer: int,
                codec: CodecSpec, rows: int, dim: int) -> Scales:
    """The checked float32 scales (and offsets, for an affine codec) of one codec shard file.

    Raises :class:`IntegrityError`, naming the file and key, when the scale tensor is
    missing, not F32, has the wrong shape, or holds a value that is not finite and positive;
    when an affine codec's offset tensor is missing, not F32 ``[dim]``, or holds a value that
    is not finite; and when a file of a codec without offsets has an offset tensor (it would
    be ignored, and every value read wrong). Byte ranges were checked against the file by the
    header parser, so a hostile header cannot make this read outside the shard.
    """
    key, okey = spec.SCALE_KEY.format(layer=layer), spec.OFFSET_KEY.format(layer=layer)
    s = _checked_f32(source, path, entries, key, codec.scale_shape(rows, dim), "scale", codec)
    bad = ~(np.isfinite(s) & (s > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise IntegrityError(
            f"{path}: scale tensor {key!r} holds {float(s[i])!r} at position {i}; every scale must "
            "be finite and positive. The file is corrupt."
        )
    if not codec.affine:
        if okey in entries:
            raise IntegrityError(
                f"{path}: holds an offset tensor {okey!r}, but the dataset records {codec.scale} "
                "scales (no offsets); reading it would ignore the offsets. The file or the index "
                "is corrupt."
            )
        return Scales(s)
    off = _checked_f32(source, path, entries, okey, (dim,), "offset", codec)
    bad = ~np.isfinite(off)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise IntegrityError(
            f"{path}: offset tensor {okey!r} holds {float(off[i])!r} at position {i}; every offset "
            "must be finite. The file is corrupt."
        )
    return Scales(s, off)


def _per_row(mult: tuple[np.ndarray, np.ndarray | None]) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-row multipliers as columns (``[rows, 1]``), so they broadcast over a row's values."""
    a, b = mult
    return (a[:, None] if a.ndim == 1 else a), (None if b is None else b[:, None])


def _tiled(a: np.ndarray | None, rows: int) -> np.ndarray | None:
    """A ``[dim]`` multiplier or offset repeated over ``rows`` rows, so that the decode block's
    multiply is one flat contiguous loop (measured 1.15-1.3x faster than broadcasting a
    ``[dim]`` vector over 16-256 rows of 1024); scalars stay as they are."""
    if a is None or a.ndim != 1:
        return a
    return np.tile(a, (rows, 1))


def _block(mult: tuple[np.ndarray, np.ndarray | None], rows: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The first ``rows`` rows of tiled multipliers (scalars as they are)."""
    a, b = mult
    return (a[:rows] if a.ndim == 2 else a), (b[:rows] if b is not None and b.ndim == 2 else b)


def _rows(mult: tuple[np.ndarray, np.ndarray | None], x: int, y: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows ``x:y`` of per-row multipliers (a scalar multiplier applies to every row)."""
    a, b = mult
    return (a[x:y] if a.ndim == 2 else a), (None if b is None else b[x:y])


def read_coded(source: ByteSource, path: str, entry: TensorEntry, scales: Scales,
               codec: CodecSpec, offsets: np.ndarray, dest: np.ndarray, out: np.ndarray) -> None:
    """Copy rows ``offsets`` of a codec tensor, dequantised, into ``out[dest]``
    (``scales``: the file's checked :class:`Scales`, from :func:`load_scales`).

    Rows are read a chunk (``CHUNK_BYTES`` of codes) at a time into a scratch array and
    decoded straight into ``out`` where they land on consecutive rows of a float32 output;
    other outputs (float16, bfloat16, scattered rows) go through a chunk-sized float32 scratch.
    """
    if offsets.size == 0:
        return
    dim = out.shape[1]
    order = np.argsort(offsets, kind="stable")
    offs, dst = offsets[order].astype(np.int64), dest[order].astype(np.int64)
    n = offs.size
    one_run = int(offs[-1]) - int(offs[0]) == n - 1
    step = max(1, (CHUNK_BYTES if one_run else GATHER_CHUNK_BYTES) // max(dim, 1))
    sub = max(1, min(step, DECODE_BYTES // max(dim, 1)))
    chunks = -(-n // step)
    per_channel = codec.per_channel
    shift = scales.offset  # affine codecs: added after the multiply
    is_bf16 = out.dtype.name == "bfloat16" and out.dtype.itemsize == 2
    if out.dtype.kind != "f" and not is_bf16:  # an int8 output would silently truncate values
        raise InvalidArgumentError(
            f"{path}: a {codec.codec.name} dataset dequantises to a float dtype; got dtype "
            f"{out.dtype}. Use codes() for the stored codes and scales."
        )
    where = f"{path} ({entry.key})"

    code = codec.codec.code
    channel_mult = _multipliers(scales.scale, codec.codec) if per_channel else None
    block = min(sub, n)  # per-channel multipliers and offsets tiled to a decode block
    if channel_mult is not None:
        channel_mult = (_tiled(channel_mult[0], block), _tiled(channel_mult[1], block))  # type: ignore[assignment]
    shift = _tiled(shift, block)

    local = isinstance(source, LocalSource)
    if int(offs[0]) < 0 or int(offs[-1]) >= entry.shape[0]:  # the direct reads below trust them
        raise IntegrityError(f"{where}: asked for row {int(offs[-1]) if offs[-1] >= 0 else int(offs[0])} of a tensor "
                             f"of {entry.shape[0]} rows; the index is corrupt.")

    def piece(lo_c: int, hi_c: int) -> None:
        slack = np.empty(min(step, n) * dim + PAGE, dtype=np.int8)
        f32: list[np.ndarray] = []  # a cache-block scratch, made when first needed
        fd = source.open_fd(path) if local else -1  # type: ignore[attr-defined]
        try:
            for c in range(lo_c, hi_c):
                _chunk(c, fd, slack, f32)
        finally:
            if fd >= 0:
                os.close(fd)

    def _chunk(c: int, fd: int, slack: np.ndarray, f32: list[np.ndarray]) -> None:
        a, b = c * step, min(n, (c + 1) * step)
        k = b - a
        at = entry.start + int(offs[a]) * dim
        one_span = int(offs[b - 1]) - int(offs[a]) == k - 1
        table = None
        if fd >= 0 and one_span:
            # one run of rows (a whole layer, a batch in order): one pread per chunk, into a
            # scratch at the file's page phase (no aliased kernel copy; see rows._aliased)
            codes = _phased(slack.view(np.uint8), at, k * dim).view(np.int8).reshape(k, dim)
            pread_exact(fd, path, at, memoryview(codes).cast("B"))
        elif local:
            # scattered local rows: gathered from the file's mapping a cache block at a time
            # (offsets were checked against the tensor above), so the codes are still in
            # cache when they are widened
            m = source.mapped(path, entry.end)  # type: ignore[attr-defined]
            table = np.frombuffer(m, dtype=np.int8, count=entry.shape[0] * dim,
                                  offset=entry.start).reshape(entry.shape[0], dim)
            codes = slack[: min(sub, k) * dim].reshape(-1, dim)
        else:
            codes = _phased(slack.view(np.uint8), at, k * dim).view(np.int8).reshape(k, dim)
            read_rows(source, path, entry, offs[a:b], np.arange(k), codes)
        if code != "I8" and table is None:
            _check_fp8(codes, where)  # once per chunk, not per cache block
        # per-channel multipliers are made once per call, per-row ones once per chunk
        mult = channel_mult or _per_row(_multipliers(scales.scale[offs[a:b]], codec.codec))
        d = dst[a:b]
        run = int(d[-1]) - int(d[0]) == k - 1 and (k == 1 or bool(np.all(np.diff(d) == 1)))
        for x in range(0, k, sub):  # widen a cache-sized block at a time
            y = min(k, x + sub)
            if table is not None:
                block = codes[: y - x]
                np.take(table, offs[a + x : a + y], axis=0, out=block, mode="clip")
                if code != "I8":
                    _check_fp8(block, where)
            else:
                block = codes[x:y]
            m = _block(mult, y - x) if per_channel else _rows(mult, x, y)
            add = None if shift is None else shift[: y - x]
            if run and out.dtype == np.float32:  # straight into the caller's rows
                d0 = int(d[x])
                _dequantize(block, m, code, out[d0 : d0 + y - x], add)
                continue
            if not f32:
                f32.append(np.empty((min(sub, n), dim), dtype=np.float32))
            tmp = f32[0][: y - x]
            _dequantize(block, m, code, tmp, add)
            _place(tmp, d[x:y], run)

    def _place(tmp: np.ndarray, d: np.ndarray, run: bool) -> None:
        d0, k = int(d[0]), d.size
        if is_bf16:
            bits = out.view(np.uint16)
            if run:
                bits[d0 : d0 + k] = f32_to_bf16_bits(tmp)
            else:
                bits[d] = f32_to_bf16_bits(tmp)
        elif run:
            out[d0 : d0 + k] = tmp
        else:
            out[d] = tmp

    in_pieces(piece, chunks, piece_count(chunks, n * dim * 4, PARALLEL_BYTES) if local else 1)


@dataclass(frozen=True)
class QuantizedRows:
    """Stored codes and their scales, for callers that dequantise themselves (on a GPU).

    ``x[i] = codes[i] * scales[scale_index[i]]`` (per-channel scales: ``scales`` is
    ``(groups, dim)``, one row per shard file the rows came from) or
    ``x[i] = codes[i] * scales[i]`` (per-row scales: ``scales`` is ``(n,)`` and
    ``scale_index`` is None); ``per_channel_affine`` adds ``offsets[scale_index[i]]``
    (``offsets`` is ``(groups, dim)``, None for the other scales) after the product, rounded
    to float32 first. int8 codes are ``int8``; fp8 codes are their ``uint8`` bit
    patterns (``codes.view(ml_dtypes.float8_e4m3fn)`` in numpy,
    ``torch.from_numpy(codes).view(torch.float8_e4m3fn)`` in torch).
    """

    codes: np.ndarray
    scales: np.ndarray
    scale_index: np.ndarray | None
    dtype: str
    scale: str
    offsets: np.ndarray | None = None

    def dequantize(self) -> np.ndarray:
        """The float32 rows, exactly as the reader's own dequantisation gives them."""
        codec = CODECS[self.dtype]
        out = np.empty(self.codes.shape, dtype=np.float32)
        codes = self.codes.view(np.int8)
        if self.scale_index is None:
            decode(codes, self.scales[:, None], codec, out, where="codes")
            return out
        for g in range(self.scales.shape[0]):
            sel = np.flatnonzero(self.scale_index == g)
            tmp = np.empty((sel.size, codes.shape[1]), dtype=np.float32)
            decode(codes[sel], self.scales[g], codec, tmp, where="codes",
                   offset=None if self.offsets is None else self.offsets[g])
            out[sel] = tmp
        return out


def gather_codes(codec: CodecSpec, dim: int, shard: np.ndarray, off: np.ndarray,
                 read: Callable[[int, np.ndarray, np.ndarray, np.ndarray], None],
                 scales_of: Callable[[int], Scales]) -> QuantizedRows:
    """Codes and scales of the rows at ``(shard, off)``; ``read(sh, offsets, dest, out)``
    copies raw codes, ``scales_of(sh)`` gives a shard's checked :class:`Scales`."""
    n = shard.size
    codes = np.empty((n, dim), dtype=np.int8)
    groups = [int(s) for s in np.unique(shard)]
    per_channel = codec.per_channel
    scales = np.empty((len(groups), dim) if per_channel else (n,), dtype=np.float32)
    offsets = np.empty((len(groups), dim), dtype=np.float32) if codec.affine else None
    index = np.empty(n, dtype=np.int64) if per_channel else None
    for g, sh in enumerate(groups):
        sel = np.flatnonzero(shard == sh)
        read(sh, off[sel], sel, codes)
        s = scales_of(sh)
        if per_channel:
            scales[g] = s.scale
            index[sel] = g  # type: ignore[index]
        else:
            scales[sel] = s.scale[off[sel]]
        if offsets is not None:
            offsets[g] = s.offset
    out_codes = codes if codec.codec.code == "I8" else codes.view(np.uint8)
    return QuantizedRows(out_codes, scales, index, codec.codec.name, codec.scale, offsets)


def codec_record(stats: dict[tuple[str, int], ErrorStats]) -> dict[str, dict[str, dict[str, Any]]]:
    """``actstore:codec.layers``: view -> stored layer (as a string) -> error statistics."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (view, layer), st in sorted(stats.items()):
        out.setdefault(view, {})[str(layer)] = st.to_dict()
    return out


def card_lines(summary: dict[str, Any]) -> list[str]:
    """Markdown for a dataset card: the codec and the error measured per layer at write."""
    lines = [
        "## Storage codec", "",
        f"Lossy **{summary.get('dtype')}** codes with float32 **{summary.get('scale')}** scales "
        "(actstore format section 2b): readers that know the `codecs` extension dequantise "
        f"transparently (`x = code × scale{' + offset' if summary.get('scale') == 'per_channel_affine' else ''}`); lmprobe 0.10.3 refuses the files. Error measured "
        "against the original activations when they were written:", "",
        "| layer | relative L2 | mean cosine | max abs error | clipped |", "|---|---|---|---|---|",
    ]
    for layer, st in summary.get("layers", {}).items():
        lines.append(f"| {layer} | {100 * st['rel_l2']:.3f} % | {st['mean_cosine']:.6f} "
                     f"| {st['max_abs_err']:.4g} | {int(st['clipped'])} |")
    return [*lines, ""]
