"""Reading rows out of shard files: exact byte ranges, straight into the caller's array.

Rows of one shard are sorted by offset and cut into runs of adjacent rows. A run that maps
onto a contiguous slice of the output with no dtype change is read directly into that slice
(``readinto``, no intermediate copy); any other run is fetched with the others of the same
file in one ``read_ranges`` call (concurrent on remote filesystems) and scattered.
"""

from __future__ import annotations

import numpy as np

from .dtypes import bf16_bits_to_f32
from .header import TensorEntry
from .source import ByteSource

__all__ = ["MAX_READ_BYTES", "convert_rows", "read_rows"]

#: Largest single read; bounds the temporary memory of converting reads (bfloat16 → float32).
MAX_READ_BYTES = 64 << 20

_NUMPY = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
          "I32": np.int32, "I64": np.int64, "I16": np.int16, "U8": np.uint8}


def storage_numpy(code: str) -> np.dtype:
    """numpy dtype of a safetensors code's raw bytes (uint16 for BF16)."""
    return np.dtype(_NUMPY[code])


def convert_rows(raw: np.ndarray, code: str, out: np.ndarray) -> None:
    """Write raw stored rows into ``out`` (exact for bfloat16 → float32)."""
    if code == "BF16" and out.dtype == np.float32:
        bf16_bits_to_f32(raw, out=out)
    else:
        out[...] = raw


def _runs(offs: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """Index ranges ``[a, b)`` of sorted offsets whose gaps are at most ``max_gap`` rows."""
    if offs.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(offs) > max_gap + 1) + 1
    bounds = np.concatenate(([0], cuts, [offs.size]))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def read_rows(
    source: ByteSource,
    path: str,
    entry: TensorEntry,
    offsets: np.ndarray,
    dest: np.ndarray,
    out: np.ndarray,
    *,
    max_gap_bytes: int = 0,
) -> None:
    """Copy rows ``offsets`` of one tensor into ``out[dest]``.

    Parameters
    ----------
    source : ByteSource
        Where the file lives.
    path : str
        File path relative to the dataset root.
    entry : TensorEntry
        The tensor's location, from its checked header.
    offsets, dest : ndarray of int
        Row numbers in the tensor and the matching row numbers in ``out``.
    out : ndarray
        2-D C-contiguous output array.
    max_gap_bytes : int
        Rows this close are fetched in one request, gap included.
    """
    row_bytes = entry.row_bytes
    raw_dtype = storage_numpy(entry.dtype)
    direct_ok = out.dtype == raw_dtype
    order = np.argsort(offsets, kind="stable")
    offs, dst = offsets[order], dest[order]
    max_rows = max(1, MAX_READ_BYTES // max(row_bytes, 1))
    pending: list[tuple[int, int, int]] = []  # (a, b, first row) of runs read via read_ranges
    for a, b in _runs(offs, max(0, max_gap_bytes // max(row_bytes, 1))):
        for a2 in range(a, b, max_rows):
            b2 = min(b, a2 + max_rows)
            first, last = int(offs[a2]), int(offs[b2 - 1]) + 1
            d0 = int(dst[a2])
            if (
                direct_ok
                and last - first == b2 - a2
                and int(dst[b2 - 1]) - d0 == b2 - a2 - 1
                and np.all(np.diff(dst[a2:b2]) == 1)
            ):
                source.readinto(path, entry.start + first * row_bytes, memoryview(out[d0 : d0 + b2 - a2]))
            else:
                pending.append((a2, b2, first))
    # fetch the other runs a bounded batch at a time: one request set per batch keeps
    # several ranges in flight on remote filesystems without holding a whole layer twice
    width = out.shape[1]
    batch: list[tuple[int, int, int]] = []
    size = 0
    for run in pending:
        batch.append(run)
        size += (int(offs[run[1] - 1]) + 1 - run[2]) * row_bytes
        if size >= 2 * MAX_READ_BYTES:
            _fetch(source, path, entry, offs, dst, out, batch, raw_dtype, width)
            batch, size = [], 0
    if batch:
        _fetch(source, path, entry, offs, dst, out, batch, raw_dtype, width)


def _fetch(
    source: ByteSource, path: str, entry: TensorEntry, offs: np.ndarray, dst: np.ndarray,
    out: np.ndarray, runs: list[tuple[int, int, int]], raw_dtype: np.dtype, width: int,
) -> None:
    row_bytes = entry.row_bytes
    ranges = [
        (entry.start + first * row_bytes, entry.start + (int(offs[b - 1]) + 1) * row_bytes)
        for a, b, first in runs
    ]
    for (a, b, first), blob in zip(runs, source.read_ranges(path, ranges)):
        raw = np.frombuffer(blob, dtype=raw_dtype).reshape(-1, width)
        picked = raw[offs[a:b] - first]
        d = dst[a:b]
        if d.size and int(d[-1]) - int(d[0]) == d.size - 1 and np.all(np.diff(d) == 1):
            convert_rows(picked, entry.dtype, out[int(d[0]) : int(d[0]) + d.size])
        else:
            tmp = np.empty((b - a, width), dtype=out.dtype)
            convert_rows(picked, entry.dtype, tmp)
            out[d] = tmp
