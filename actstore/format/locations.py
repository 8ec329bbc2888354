"""Reading stored rows by location: the small hook the stream loader reads through.

A *location* is ``(shard, offset)``: row ``offset`` of shard file ``shard`` of one layer of a
view. Pooled rows are located by the index columns ``shard_index``/``row_offset``; the tokens of
a full-sequence row by ``token_shard_ids``/``token_shard_offsets``. These functions read
locations with the reader's checked headers and its coalescing row reader, so a run of adjacent
locations becomes one contiguous byte-range read (one ``preadv`` locally, one ranged request
remotely). Bytes come back as stored (bfloat16 as its ``uint16`` bits), except int8 and fp8
codes (spec section 2b), which come back dequantised as float32: a caller never sees codes as
values.

This module only uses the :class:`~actstore.format.reader.Dataset` it is given; it lives in
``format`` so that code above it (``stream``) never needs the reader's private parts.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FormatError, InvalidArgumentError
from .codecs import read_coded
from .header import TensorEntry
from .metadata import ViewLayout
from .rows import read_rows, storage_numpy
from .source import LocalSource, pread_exact

if TYPE_CHECKING:
    from .reader import Dataset

__all__ = ["data_offset", "read_locations", "resolve_stream_layer", "scatter_locations", "scatters",
           "stored_code", "view_layout"]

#: Rows per ``preadv`` of :func:`scatter_locations` (under every system's ``IOV_MAX``, 1024).
SCATTER_IOVECS = 512


def view_layout(ds: Dataset, view: str | None = None) -> ViewLayout:
    """The layout of one view (the primary view by default); unknown views raise."""
    return ds._view(view)


def resolve_stream_layer(ds: Dataset, layer: int | str, view: str | None = None) -> int:
    """The stored number of ``layer`` in ``view`` (the rules of :meth:`Dataset.layer`)."""
    return ds._check_layer(ds._view(view), layer)


def stored_code(ds: Dataset, layer: int, view: str | None = None) -> str:
    """The safetensors dtype code (``"F32"``, ``"F16"``, ``"BF16"``) of the rows
    :func:`read_locations` returns for a layer, read from the checked header of its first
    shard: ``"F32"`` for an int8/fp8 layer (its rows are dequantised)."""
    v = ds._view(view)
    code = ds._entry(v, layer, 0).dtype
    return "F32" if v.codec is not None else code


def data_offset(ds: Dataset, layer: int, view: str | None = None) -> int:
    """The file offset of row 0 of a stored layer's first shard (its page phase lets a reader
    place buffers so that kernel copies run page to page)."""
    v = ds._view(view)
    return int(ds._entry(v, layer, 0).start)


def read_locations(ds: Dataset, layer: int, shards: np.ndarray, offsets: np.ndarray,
                   out: np.ndarray, *, view: str | None = None) -> None:
    """Fill ``out[i]`` with stored row ``offsets[i]`` of shard ``shards[i]`` of one layer.

    Parameters
    ----------
    ds : Dataset
        The open dataset.
    layer : int
        A stored layer number (see :func:`resolve_stream_layer`).
    shards, offsets : ndarray of int
        One location per output row; every one is checked against the shard headers.
    out : ndarray
        C-contiguous ``(len(shards), dim)`` array of the stored dtype's raw numpy type
        (``uint16`` for bfloat16; float32 for int8/fp8 codes, dequantised with their scales).
    view : str, optional
        The view (the primary one by default).
    """
    v = ds._view(view)
    if out.ndim != 2 or out.shape[0] != np.size(shards):
        raise InvalidArgumentError(
            f"read_locations needs a ({np.size(shards)}, {v.dim}) output (one row per location); "
            f"got {out.shape}."
        )
    for sh, path, entry, offs, group in _groups(ds, v, layer, shards, offsets, out):
        if v.codec is not None:  # int8/fp8: dequantised a chunk at a time, never raw codes
            read_coded(ds.source, path, entry, ds._scales(v, layer, sh), v.codec, offs, group, out)
            continue
        read_rows(ds.source, path, entry, offs, group, out)


def _groups(ds: Dataset, v: ViewLayout, layer: int, shards: np.ndarray, offsets: np.ndarray,
            out: np.ndarray) -> list[tuple[int, str, TensorEntry, np.ndarray, np.ndarray]]:
    """Check locations against ``out`` and the shard headers; per shard ``(shard, path,
    entry, offsets, positions in the location list)``."""
    shards = np.asarray(shards, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    if shards.shape != offsets.shape or out.ndim != 2 or out.shape[1] != v.dim \
            or not out.flags.c_contiguous:
        raise InvalidArgumentError(
            f"read_locations needs equal-length shards/offsets and a C-contiguous "
            f"(n, {v.dim}) output; got {shards.shape}, {offsets.shape}, {out.shape}."
        )
    if shards.size == 0:
        return []
    if shards.min() < 0 or shards.max() >= len(v.shard_rows):
        raise FormatError(
            f"A location names shard {int(shards.max() if shards.max() >= 0 else shards.min())} "
            f"of view {v.name!r}, which has {len(v.shard_rows)} shards; the index is corrupt."
        )
    order = np.argsort(shards, kind="stable")
    cuts = np.flatnonzero(np.diff(shards[order])) + 1
    found = []
    for group in np.split(order, cuts):
        sh = int(shards[group[0]])
        entry = ds._entry(v, layer, sh)
        want = np.dtype(np.float32) if v.codec is not None else storage_numpy(entry.dtype)
        if out.dtype != want:
            raise InvalidArgumentError(
                f"read_locations reads stored bytes: out must be {want} for {entry.dtype} shards"
                f"{' (dequantised)' if v.codec is not None else ''}; got {out.dtype}."
            )
        offs = offsets[group]
        if offs.min() < 0 or offs.max() >= entry.shape[0]:
            raise FormatError(
                f"A location points at row {int(offs.max())} of {v.path(layer, sh)}, which holds "
                f"{entry.shape[0]} rows; the index is corrupt."
            )
        found.append((sh, v.path(layer, sh), entry, offs, group))
    return found


def scatters(ds: Dataset, view: str | None = None) -> bool:
    """Whether :func:`scatter_locations` can read this view (its files are local and hold
    values, not int8/fp8 codes)."""
    return isinstance(ds.source, LocalSource) and ds._view(view).codec is None


def scatter_locations(ds: Dataset, layer: int, shards: np.ndarray, offsets: np.ndarray,
                      out: np.ndarray, rows: np.ndarray, *, view: str | None = None) -> None:
    """Fill ``out[rows[i]]`` with stored row ``offsets[i]`` of shard ``shards[i]``, local files only.

    Each run of adjacent stored rows is one ``preadv`` whose buffers are the rows of ``out`` it
    goes to, so a permutation costs no copy beyond the kernel's (the stream's shuffled windows
    are read this way). Checks as :func:`read_locations`; ``out`` must not need a dtype change.
    """
    v = ds._view(view)
    if v.codec is not None:
        raise InvalidArgumentError("scatter_locations copies stored bytes; int8/fp8 rows must be "
                                   "dequantised: use read_locations.")
    if not scatters(ds, view):
        raise InvalidArgumentError("scatter_locations reads local datasets only; use read_locations.")
    rows = np.asarray(rows, dtype=np.int64)
    if rows.shape != np.shape(shards) or (rows.size and (rows.min() < 0 or rows.max() >= out.shape[0])):
        raise InvalidArgumentError(f"rows must give one row of out (0..{out.shape[0] - 1}) per location.")
    mv = memoryview(out).cast("B")
    for _, path, entry, offs, group in _groups(ds, v, layer, shards, offsets, out):
        rb, dest = entry.row_bytes, rows[group]
        order = np.argsort(offs, kind="stable")
        offs, dest = offs[order], dest[order]
        cuts = (np.flatnonzero(np.diff(offs) != 1) + 1).tolist()
        fd = ds.source.open_fd(path)
        try:
            for lo, hi in zip([0, *cuts], [*cuts, offs.size]):
                for x in range(lo, hi, SCATTER_IOVECS):
                    y = min(hi, x + SCATTER_IOVECS)
                    at = dest[x:y] * rb
                    bufs = [mv[a : a + rb] for a in at.tolist()]
                    start = entry.start + int(offs[x]) * rb
                    done = os.preadv(fd, bufs, start)
                    if done < rb * len(bufs):  # short read (huge requests, or a truncated file)
                        for i in range(done // rb, len(bufs)):
                            pread_exact(fd, path, start + i * rb, bufs[i])
        finally:
            os.close(fd)
