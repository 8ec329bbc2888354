"""Reading rows out of shard files: exact byte ranges, straight into the caller's array.

Rows of one shard are sorted by offset and cut into runs of adjacent rows. A run that maps
onto a contiguous slice of the output with no dtype change is read directly into that slice.
All other runs of the file are read, a bounded batch at a time, into one scratch buffer with
a single ``readinto`` call (one open file locally, concurrent requests remotely) and
gathered into the output with one vectorised copy.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import InvalidArgumentError
from .dtypes import bf16_bits_to_f32
from .header import TensorEntry
from .parallel import in_pieces, piece_count
from .ranges import DATASET_GAP, coalesce_sorted
from .source import ByteSource, LocalSource, pread_exact, read_spans
from .spec import ST_DTYPES

__all__ = ["MAX_READ_BYTES", "convert_rows", "read_rows", "storage_numpy"]

#: Largest single read, and the bound on scratch memory per batch of scattered rows.
MAX_READ_BYTES = 64 << 20
#: Local runs smaller than this are gathered from a random-access mapping, not one syscall each.
SMALL_RUN_BYTES = 256 << 10
#: Local runs at least this large are split across threads: faulting in a fresh output array
#: and widening bfloat16 are CPU work that another core can share (measured 1.6-2x on 2 cores).
PARALLEL_BYTES = 16 << 20
#: Stored rows that need a dtype change are read in chunks this size, converted while in cache
#: (1 MiB of bfloat16 widens into 2 MiB; measured 1.5x faster than 256 KiB chunks here).
CONVERT_BYTES = 1 << 20
#: Gathers that widen bfloat16 split across threads once their output is this large.
GATHER_PARALLEL_BYTES = 4 << 20
#: The page size that kernel copies alias on (see ``_aliased``).
PAGE = 4096

def storage_numpy(code: str) -> np.dtype:
    """numpy dtype of a safetensors code's raw little-endian bytes (``<u2`` for BF16), from
    the one table, :data:`~.spec.ST_DTYPES`."""
    return np.dtype(ST_DTYPES[code].storage)


def convert_rows(raw: np.ndarray, code: str, out: np.ndarray) -> None:
    """Write raw stored rows into ``out`` (exact for bfloat16 → float32)."""
    if code == "BF16" and out.dtype == np.float32:
        bf16_bits_to_f32(raw, out=out)
    else:
        out[...] = raw


def read_rows(
    source: ByteSource,
    path: str,
    entry: TensorEntry,
    offsets: np.ndarray,
    dest: np.ndarray,
    out: np.ndarray,
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
    """
    if entry.dtype in ("I8", "F8_E4M3") and out.dtype != np.int8:  # never codes as values
        raise InvalidArgumentError(
            f"{path}: {entry.key!r} holds {entry.dtype} codes; they are read raw only into int8 "
            "arrays. Dequantise them with actstore.format.codecs.read_coded."
        )
    if offsets.size == 0:
        return
    rb = max(entry.row_bytes, 1)
    if isinstance(source, LocalSource) and _one_small_run(offsets, dest, rb) \
            and 0 <= int(offsets[0]) and int(offsets[-1]) < entry.shape[0]:
        # one run of adjacent rows into consecutive output rows (a row's tokens): one copy
        # from the file's mapping, no planning
        n, first, lo = int(offsets.size), int(offsets[0]), int(dest[0])
        m = source.mapped(path, entry.end)
        raw = np.frombuffer(m, dtype=storage_numpy(entry.dtype), count=n * out.shape[1],
                            offset=entry.start + first * entry.row_bytes).reshape(n, out.shape[1])
        convert_rows(raw, entry.dtype, out[lo : lo + n])
        return
    if offsets.size < 2 or bool(np.all(offsets[1:] >= offsets[:-1])):  # already in file order
        offs, dst = offsets.astype(np.int64, copy=False), dest.astype(np.int64, copy=False)
    else:
        order = np.argsort(offsets, kind="stable")
        offs, dst = offsets[order].astype(np.int64), dest[order].astype(np.int64)
    if isinstance(source, LocalSource) and _all_runs_small(offs, rb):
        # scattered rows (random token ids): no run would be streamed, so skip the planning
        # and gather every row from the mapping
        m = source.mapped(path, entry.end)
        table = np.frombuffer(m, dtype=storage_numpy(entry.dtype), count=entry.shape[0] * out.shape[1],
                              offset=entry.start).reshape(entry.shape[0], out.shape[1])
        _copy_mapped(table, offs, dst, entry, out)
        return
    starts = offs * rb  # runs of rows per the one coalescing policy: exact bytes, bounded reads
    a, b = coalesce_sorted(starts, starts + rb, gap=DATASET_GAP,
                           max_span=max(1, MAX_READ_BYTES // rb) * rb)
    counts = b - a
    span = offs[b - 1] - offs[a] + 1
    # a run goes straight into `out` when it is gap-free and lands on consecutive rows
    steps = np.concatenate(([0], np.cumsum(np.diff(dst) != 1)))
    ordered = steps[b - 1] - steps[a] == 0
    direct = (span == counts) & ordered & (out.dtype == storage_numpy(entry.dtype))
    if isinstance(source, LocalSource):
        small = span * rb < SMALL_RUN_BYTES
        if small.any():
            _gather_mapped(source, path, entry, offs, dst, out, a[small], b[small])
        # gap-free runs landing on consecutive rows stream into place, any dtype
        streamed = ~small & (span == counts) & ordered
        for i in np.flatnonzero(streamed).tolist():
            lo = int(dst[a[i]])
            _local_run(source, path, entry, int(offs[a[i]]), out[lo : lo + int(counts[i])])
        keep = ~small & ~streamed
        a, b, counts, span, direct = a[keep], b[keep], counts[keep], span[keep], direct[keep]
    if direct.any():
        view = memoryview(out).cast("B")
        starts = entry.start + offs[a[direct]] * entry.row_bytes
        lo = dst[a[direct]] * entry.row_bytes
        read_spans(source, path, starts, view, lo, lo + counts[direct] * entry.row_bytes)
    rest = np.flatnonzero(~direct)
    held, batch = 0, []
    for i in rest.tolist():  # bounded batches of scattered runs
        batch.append((int(a[i]), int(b[i])))
        held += int(span[i])
        if held >= MAX_READ_BYTES // rb:
            _gather(source, path, entry, offs, dst, out, batch, held)
            held, batch = 0, []
    if batch:
        _gather(source, path, entry, offs, dst, out, batch, held)


def _all_runs_small(offs: np.ndarray, rb: int) -> bool:
    """Whether no run of adjacent rows among the sorted ``offs`` can reach
    ``SMALL_RUN_BYTES`` (no ``k`` rows of them lie within ``k`` consecutive rows)."""
    k = SMALL_RUN_BYTES // rb
    if k < 2:
        return False
    if offs.size < k:
        return True
    return not bool(np.any(offs[k - 1 :] - offs[: offs.size - k + 1] <= k - 1))


def _one_small_run(offsets: np.ndarray, dest: np.ndarray, rb: int) -> bool:
    """Whether rows ``offsets`` are one ascending run of adjacent rows, under
    ``SMALL_RUN_BYTES``, going to consecutive output rows ``dest``."""
    n = int(offsets.size)
    if n * rb >= SMALL_RUN_BYTES:
        return False
    if n == 1:
        return True
    return bool(int(offsets[-1]) - int(offsets[0]) == n - 1 and int(dest[-1]) - int(dest[0]) == n - 1
                and np.all(np.diff(offsets) == 1) and np.all(np.diff(dest) == 1))


def _gather(
    source: ByteSource, path: str, entry: TensorEntry, offs: np.ndarray, dst: np.ndarray,
    out: np.ndarray, runs: list[tuple[int, int]], total_rows: int,
) -> None:
    """Read several runs into one scratch buffer and scatter their rows into ``out``."""
    width = out.shape[1]
    raw = np.empty((total_rows, width), dtype=storage_numpy(entry.dtype))
    requests, base, pos = [], [], 0
    for a, b in runs:
        first, span = int(offs[a]), int(offs[b - 1]) - int(offs[a]) + 1
        requests.append((entry.start + first * entry.row_bytes, memoryview(raw[pos : pos + span])))
        base.append(pos - first)
        pos += span
    source.readinto(path, requests)
    counts = [b - a for a, b in runs]
    sel = np.concatenate([np.arange(a, b) for a, b in runs]) if len(runs) > 1 else np.arange(*runs[0])
    src = offs[sel] + np.repeat(np.asarray(base, dtype=np.int64), counts)
    d = dst[sel]
    contiguous = bool(d.size) and int(d[-1]) - int(d[0]) == d.size - 1 and bool(np.all(np.diff(d) == 1))
    if contiguous and int(src[-1]) - int(src[0]) == d.size - 1:
        # one run in, one run out (e.g. a whole bfloat16 layer): convert straight into place
        convert_rows(raw[int(src[0]) : int(src[0]) + d.size], entry.dtype, out[int(d[0]) : int(d[0]) + d.size])
    elif entry.dtype == "BF16" and out.dtype == np.float32:
        tmp = np.empty((d.size, width), dtype=np.float32)
        bf16_bits_to_f32(_take_rows(raw, src), out=tmp)
        _put_rows(out, d, tmp)
    elif d.size == out.shape[0] and out.dtype == raw.dtype:
        # every output row comes from this batch: one gather straight into out
        np.take(raw, src[np.argsort(d)], axis=0, out=out, mode="clip")
    elif out.dtype == raw.dtype:
        _put_rows(out, d, _take_rows(raw, src))
    else:
        out[d] = _take_rows(raw, src)


def _gather_mapped(source: LocalSource, path: str, entry: TensorEntry, offs: np.ndarray,
                   dst: np.ndarray, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Copy the rows of runs ``[a, b)`` from the file's random-access mapping into ``out``."""
    rows = entry.shape[0]
    width = out.shape[1]
    m = source.mapped(path, entry.end)
    table = np.frombuffer(m, dtype=storage_numpy(entry.dtype), count=rows * width,
                          offset=entry.start).reshape(rows, width)
    if a.size == offs.size:  # every run one row (scattered ids): the runs are the rows
        src, d = offs, dst
    else:
        lengths = b - a
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        sel = np.arange(int(lengths.sum())) + np.repeat(a - starts, lengths)  # every row of every run
        src, d = offs[sel], dst[sel]
    _copy_mapped(table, src, d, entry, out)


def _copy_mapped(table: np.ndarray, src: np.ndarray, d: np.ndarray, entry: TensorEntry,
                 out: np.ndarray) -> None:
    """``out[d] = table[src]`` (rows of a mapped tensor), widening bfloat16 bits as needed."""
    width = out.shape[1]
    if entry.dtype == "BF16" and out.dtype == np.float32:
        if d.size == out.shape[0]:  # every output row comes from here: widen straight into out
            order = np.empty_like(src)
            order[d] = src
            _take_widened(table, order, out)
            return
        widened = np.empty((src.size, width), dtype=np.float32)
        bf16_bits_to_f32(_take_rows(table, src), out=widened)
        _put_rows(out, d, widened)
    elif d.size == out.shape[0] and out.dtype == table.dtype:
        order = np.empty_like(src)
        order[d] = src  # output row i comes from file row order[i]
        np.take(table, order, axis=0, out=out, mode="clip")  # indices are checked; "raise" would buffer
    elif out.dtype == table.dtype:
        _put_rows(out, d, _take_rows(table, src))
    else:
        out[d] = _take_rows(table, src)


def _rows_1d(a: np.ndarray) -> np.ndarray | None:
    """A C-contiguous 2-D array seen as 1-D whole rows (one void item a row), or None.

    numpy gathers and scatters 1-D items with one copy each, 2-D rows through its general
    fancy-indexing machinery: 5x slower for short rows (8-byte token rows here: 33 vs 6.8 ms
    for 10^5 rows).
    """
    if a.ndim != 2 or not a.flags.c_contiguous or a.shape[1] == 0:
        return None
    return a.view(np.dtype((np.void, a.shape[1] * a.itemsize))).reshape(-1)


def _take_rows(table: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``table[idx]`` for checked row numbers ``idx``, as a 1-D gather of whole rows."""
    flat = _rows_1d(table)
    if flat is None:
        return table[idx]
    return np.take(flat, idx).view(table.dtype).reshape(idx.size, table.shape[1])


def _put_rows(out: np.ndarray, d: np.ndarray, rows: np.ndarray) -> None:
    """``out[d] = rows`` (same dtype), as a 1-D scatter of whole rows."""
    flat, src = _rows_1d(out), _rows_1d(np.ascontiguousarray(rows))
    if flat is None or src is None:
        out[d] = rows
    else:
        flat[d] = src


def _local_run(source: LocalSource, path: str, entry: TensorEntry, first: int, dest: np.ndarray) -> None:
    """Rows ``first, first + 1, ...`` of a local tensor into the consecutive rows ``dest``.

    Large runs are cut into pieces read by parallel threads (``preadv`` and numpy's casts
    release the GIL), each through one open descriptor. Rows needing a dtype change go through
    a small cache-resident scratch, and so do rows whose kernel copy would alias (see
    :func:`_aliased`).
    """
    rb, n = entry.row_bytes, dest.shape[0]
    pieces = piece_count(n, n * rb, PARALLEL_BYTES)
    offset = entry.start + first * rb
    direct = dest.dtype == storage_numpy(entry.dtype) and not _aliased(dest.ctypes.data, offset)

    def piece(lo: int, hi: int) -> None:
        fd = source.open_fd(path)
        try:
            if direct:
                pread_exact(fd, path, offset + lo * rb, memoryview(dest[lo:hi]).cast("B"))
                return
            step = max(1, CONVERT_BYTES // max(rb, 1))
            slack = np.empty(min(step, hi - lo) * rb + PAGE, dtype=np.uint8)
            for x in range(lo, hi, step):
                y = min(hi, x + step)
                raw = _phased(slack, offset + x * rb, (y - x) * rb)
                pread_exact(fd, path, offset + x * rb, memoryview(raw))
                rows = raw.view(storage_numpy(entry.dtype)).reshape(y - x, dest.shape[1])
                convert_rows(rows, entry.dtype, dest[x:y])
        finally:
            os.close(fd)

    in_pieces(piece, n, pieces)


def _aliased(address: int, file_offset: int) -> bool:
    """Whether a kernel copy from the page cache at ``file_offset`` to ``address`` is slow.

    On AMD Zen CPUs the kernel's ``rep movsb`` copy runs about 3x slower when the destination
    lies 1-31 bytes after the source modulo the 4 KiB page (measured here: 1.5 vs 6-7 GB/s).
    Such reads are bounced through a scratch buffer placed at the source's page phase.
    """
    return 0 < (address - file_offset) % PAGE < 32


def _phased(slack: np.ndarray, file_offset: int, nbytes: int) -> np.ndarray:
    """``nbytes`` of ``slack`` starting at the same page phase as ``file_offset``, so that
    reading the file into it never aliases (``slack`` has a page to spare)."""
    skip = (file_offset - slack.ctypes.data) % PAGE
    return slack[skip : skip + nbytes]


def _take_widened(table: np.ndarray, order: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = widen(table[order[i]])`` for bfloat16 bits, a cache-sized block at a time
    (no full-size uint16 temporary), on parallel threads for large gathers."""
    step = max(1, CONVERT_BYTES // max(table.shape[1] * 2, 1))

    def piece(lo: int, hi: int) -> None:
        scratch = np.empty((min(step, hi - lo), table.shape[1]), dtype=np.uint16)
        for x in range(lo, hi, step):
            y = min(hi, x + step)
            np.take(table, order[x:y], axis=0, out=scratch[: y - x], mode="clip")
            bf16_bits_to_f32(scratch[: y - x], out=out[x:y])

    in_pieces(piece, order.size, piece_count(order.size, out.nbytes, GATHER_PARALLEL_BYTES))

