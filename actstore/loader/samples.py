"""Sample spaces: what sample ``i`` of a stream is, and where its bytes are.

A space numbers its samples ``0 .. n-1`` so that a contiguous range of samples is (mostly) a
contiguous range of stored rows. :class:`RowSpace` is one sample per index row (pooled views);
:class:`TokenSpace` is one sample per token of a full-sequence dataset. The token addressing is
all in :meth:`TokenSpace.locate`, through the format's token map (spec section 5b).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

import numpy as np

from ..format.reader import Dataset
from ..format.tokens import selection_tokens

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

    Reads the format's token addressing (:func:`~actstore.format.tokens.selection_tokens`,
    either index layout of spec section 5b): per row the global id of its first token and its
    count, O(rows); a sample's stored location is computed when its block is read, never held
    per token. With ``skip_first_token`` the first token of every row (often an attention sink
    with huge norms; ``"special"``: only where it is a tokenizer-added BOS/CLS) is not a
    sample; ``mask`` keeps only a row's ``"prompt"`` or ``"continuation"`` tokens (spec
    section 5c). Each keeps one contiguous range per row, so the space stays O(rows).
    """

    def __init__(self, ds: Dataset, *, skip_first_token: bool | str = False, mask: str | None = None) -> None:
        self.layout, self.start, self.count, self.first = selection_tokens(
            ds, mask=mask, skip_first_token=skip_first_token)  # start: each row's first sample's id
        self.cum = np.concatenate(([0], np.cumsum(self.count))).astype(np.int64)
        self.n = int(self.cum[-1])
        if mask is None and isinstance(skip_first_token, bool):  # the key streams always had
            self._tag = bytes([int(skip_first_token)])
        else:
            self._tag = f"{mask}/{skip_first_token}".encode() + self.first.astype(np.int64).tobytes()

    def _row_of(self, t: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.cum, t, side="right") - 1

    def rows(self, a: int, b: int) -> dict[str, np.ndarray]:
        t = np.arange(a, b, dtype=np.int64)
        r = self._row_of(t)
        return {"row": r, "token": t - self.cum[r] + self.first[r]}

    def locate(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        if b <= a:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        t = np.arange(a, b, dtype=np.int64)
        r = self._row_of(t)
        return self.layout.locate(self.start[r] + (t - self.cum[r]))

    def key(self) -> bytes:
        return self.cum.tobytes() + self._tag


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
