"""Sample spaces: what sample ``i`` of a stream is, and where its bytes are.

A space numbers its samples ``0 .. n-1`` so that a contiguous range of samples is (mostly) a
contiguous range of stored rows. :class:`RowSpace` is one sample per index row (pooled views);
:class:`TokenSpace` is one sample per token of a full-sequence dataset. The token addressing is
all in :meth:`TokenSpace.locate`, so a compact token-scale layout can replace it alone.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import FormatError
from ..format.reader import Dataset

__all__ = ["RowSpace", "SampleSpace", "TokenSpace", "fingerprint"]


class SampleSpace(Protocol):
    """The samples of a stream."""

    n: int

    def locate(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """``(shards, offsets)`` of samples ``[a, b)``."""
        ...

    def rows(self, a: int, b: int) -> dict[str, np.ndarray]:
        """Per-sample index information of samples ``[a, b)``: ``row`` (position in the
        dataset), and ``token`` (position in its row) in token mode."""
        ...


def _ints(ds: Dataset, name: str) -> np.ndarray:
    return np.asarray(ds.column(name), dtype=np.int64)


class RowSpace:
    """One sample per row of ``ds`` (a pooled view, or the last tokens of a full one)."""

    def __init__(self, ds: Dataset) -> None:
        self.shard = _ints(ds, "shard_index")
        self.offset = _ints(ds, "row_offset")
        self.n = int(self.shard.size)

    def locate(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        return self.shard[a:b], self.offset[a:b]

    def rows(self, a: int, b: int) -> dict[str, np.ndarray]:
        return {"row": np.arange(a, b, dtype=np.int64)}

    def key(self) -> bytes:
        return b"rows"


class TokenSpace:
    """One sample per token of a full-sequence dataset, rows in order, tokens in order.

    Uses the current per-token index layout: each row's ``token_shard_ids`` and
    ``token_shard_offsets`` lists (as :meth:`Dataset.tokens` reads them). Only a prefix sum of
    per-row token counts is kept (O(rows)); each block's lists are flattened when it is read.
    With ``skip_first_token`` the first token of every row (often an attention sink with huge
    norms) is not a sample.
    """

    def __init__(self, ds: Dataset, *, skip_first_token: bool = False) -> None:
        t = ds.index
        for c in ("token_shard_ids", "token_shard_offsets"):
            if c not in t.column_names:
                raise FormatError(f"The index lacks the {c!r} column needed for per-token states.")
        self.ids = t.column("token_shard_ids").combine_chunks()
        self.offs = t.column("token_shard_offsets").combine_chunks()
        if self.ids.null_count or self.offs.null_count:
            raise FormatError("The index's token_shard_ids/token_shard_offsets hold null rows; "
                              "every row must locate its tokens.")
        lens = pc.list_value_length(self.ids).to_numpy(zero_copy_only=False).astype(np.int64)
        olens = pc.list_value_length(self.offs).to_numpy(zero_copy_only=False).astype(np.int64)
        if not np.array_equal(lens, olens) or (lens.size and lens.min() < 1):
            i = int(np.flatnonzero((lens != olens) | (lens < 1))[0])
            raise FormatError(f"Index row {i} has {lens[i]} token shard ids and {olens[i]} offsets; "
                              "each row needs one of each per token, at least one token.")
        self.first = 1 if skip_first_token else 0
        self.count = np.maximum(lens - self.first, 0)
        self.cum = np.concatenate(([0], np.cumsum(self.count))).astype(np.int64)
        self.n = int(self.cum[-1])

    def _row_of(self, t: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.cum, t, side="right") - 1

    def rows(self, a: int, b: int) -> dict[str, np.ndarray]:
        t = np.arange(a, b, dtype=np.int64)
        r = self._row_of(t)
        return {"row": r, "token": t - self.cum[r] + self.first}

    def locate(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        if b <= a:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        r0, r1 = int(self._row_of(np.int64(a))), int(self._row_of(np.int64(b - 1)))
        ids = self.ids.slice(r0, r1 - r0 + 1)
        offs = self.offs.slice(r0, r1 - r0 + 1)
        flat_ids = _flat(ids)
        flat_offs = _flat(offs)
        lens = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
        row_start = np.concatenate(([0], np.cumsum(lens)[:-1]))
        t = np.arange(a, b, dtype=np.int64)
        r = self._row_of(t)
        flat = row_start[r - r0] + (t - self.cum[r]) + self.first
        return flat_ids[flat], flat_offs[flat]

    def key(self) -> bytes:
        return self.cum.tobytes() + bytes([self.first])


def _flat(lists: pa.Array) -> np.ndarray:
    values = lists.flatten()
    if values.null_count:
        raise FormatError("The index's per-token locations hold null values.")
    return values.to_numpy(zero_copy_only=False).astype(np.int64)


def fingerprint(ds: Dataset, space: RowSpace | TokenSpace, view: str | None) -> str:
    """A short hash of what a stream reads: the dataset's files (names, sizes, sha256 where
    recorded), its metadata, the selected rows' locations, and the sample space."""
    info = ds.info
    h = hashlib.sha256()
    meta: dict[str, Any] = {"files": info.files, "dim": info.dim, "dtype": info.dtype,
                            "num_prompts": info.num_prompts, "view": view, "model": info.model}
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    h.update(_ints(ds, "shard_index").tobytes())
    h.update(_ints(ds, "row_offset").tobytes())
    h.update(space.key())
    return h.hexdigest()[:32]
