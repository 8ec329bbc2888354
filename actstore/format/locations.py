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

from typing import TYPE_CHECKING

import numpy as np

from ..errors import FormatError, InvalidArgumentError
from .codecs import read_coded
from .metadata import ViewLayout
from .rows import read_rows, storage_numpy

if TYPE_CHECKING:
    from .reader import Dataset

__all__ = ["read_locations", "resolve_stream_layer", "stored_code", "view_layout"]


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
    shards = np.asarray(shards, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    if shards.shape != offsets.shape or out.ndim != 2 or out.shape != (shards.size, v.dim) \
            or not out.flags.c_contiguous:
        raise InvalidArgumentError(
            f"read_locations needs equal-length shards/offsets and a C-contiguous "
            f"({shards.size}, {v.dim}) output; got {shards.shape}, {offsets.shape}, {out.shape}."
        )
    if shards.size == 0:
        return
    if shards.min() < 0 or shards.max() >= len(v.shard_rows):
        raise FormatError(
            f"A location names shard {int(shards.max() if shards.max() >= 0 else shards.min())} "
            f"of view {v.name!r}, which has {len(v.shard_rows)} shards; the index is corrupt."
        )
    order = np.argsort(shards, kind="stable")
    cuts = np.flatnonzero(np.diff(shards[order])) + 1
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
        if v.codec is not None:  # int8/fp8: dequantised a chunk at a time, never raw codes
            read_coded(ds.source, v.path(layer, sh), entry, ds._scales(v, layer, sh), v.codec,
                       offs, group, out)
            continue
        read_rows(ds.source, v.path(layer, sh), entry, offs, group, out)
