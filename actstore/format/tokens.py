"""Where the tokens of a full-sequence dataset live: the compact layout (spec section 5b).

A :class:`TokenLayout` maps global token ids (token ``j`` of row ``r`` is ``cum[r] + j``) to
``(shard, row)`` locations in the primary view's shards. It is built from O(rows) columns:
``num_tokens``, ``token_shard``/``token_start`` and the last-token locations
``shard_index``/``row_offset``; the row of a token id is a binary search on ``cum``, so no
per-token array is ever held. Datasets that only have lmprobe's per-token lists
(``token_shard_ids``/``token_shard_offsets``) are read through those lists (flattened once);
a dataset with both has its lists checked against the compact columns, token by token.

Every check runs before anything sized from these columns is allocated by a caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import FormatError, IntegrityError
from . import spec
from .metadata import ViewLayout

__all__ = ["TokenLayout", "build_token_layout", "check_compact_declared", "selection_tokens"]

_BIG = 1 << 62


@dataclass(frozen=True)
class TokenLayout:
    """Token locations of every row of a full-sequence dataset.

    ``counts`` (tokens per row) and ``cum`` (its prefix sum, ``rows + 1`` long) are always set.
    Compact: ``rest_shard``/``rest_start`` (per row) with the last-token ``last_shard``/
    ``last_off``. Lists only (lmprobe-written): ``flat_shard``/``flat_off`` (per token).
    """

    counts: np.ndarray
    cum: np.ndarray
    last_shard: np.ndarray
    last_off: np.ndarray
    rest_shard: np.ndarray | None = None
    rest_start: np.ndarray | None = None
    flat_shard: np.ndarray | None = None
    flat_off: np.ndarray | None = None
    #: Compact: whether the last-token locations increase with the row (as actstore writes
    #: them), so token ids in order need no sort by location (:meth:`locate_sorted`).
    last_in_order: bool = False

    @property
    def total(self) -> int:
        """Tokens in the dataset."""
        return int(self.cum[-1])

    def row_of(self, ids: np.ndarray) -> np.ndarray:
        """The row of each global token id (ids must lie in ``[0, total)``)."""
        return np.searchsorted(self.cum, ids, side="right") - 1

    def row_shards(self, row: int) -> list[int]:
        """The shards holding one row's tokens (read before anything sized by its count)."""
        lo, hi = int(self.cum[row]), int(self.cum[row + 1])
        if self.flat_shard is not None:
            return sorted({int(x) for x in np.unique(self.flat_shard[lo:hi])})
        assert self.rest_shard is not None
        shards = {int(self.last_shard[row])}
        if hi - lo >= 2:
            shards.add(int(self.rest_shard[row]))
        return sorted(shards)

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(shards, rows)`` of global token ids (checked by the caller to be in range)."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.flat_shard is not None and self.flat_off is not None:
            return self.flat_shard[ids], self.flat_off[ids]
        assert self.rest_shard is not None and self.rest_start is not None
        r = self.row_of(ids)
        j = ids - self.cum[r]
        last = j == self.counts[r] - 1
        shards = np.where(last, self.last_shard[r], self.rest_shard[r])
        offs = np.where(last, self.last_off[r], self.rest_start[r] + j)
        return shards, offs

    def locate_sorted(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(shards, rows, where)`` of global token ids (checked in range by the caller),
        sorted by stored location: ``where[k]`` is the position in ``ids`` of location ``k``.

        One sort of the ids; the compact layout then needs no sort by location: the last
        tokens (shards ``0..n-1``) and the rest (shards ``n..``, packed in row order, spec 5b)
        each come out in storage order, and the last tokens' shards precede the rest's.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if self.flat_shard is not None and self.flat_off is not None:
            s, o = self.flat_shard[ids], self.flat_off[ids]
            where = np.lexsort((o, s))
            return s[where], o[where], where
        assert self.rest_shard is not None and self.rest_start is not None
        order, sid = _sorted_with_positions(ids, self.total)
        r = np.searchsorted(self.cum, sid, side="right") - 1
        j = sid - self.cum[r]
        last = j == self.counts[r] - 1
        li, ri = np.flatnonzero(last), np.flatnonzero(~last)
        rl, rr = r[li], r[ri]
        s_l, o_l, w_l = self.last_shard[rl], self.last_off[rl], order[li]
        if not self.last_in_order:
            k = np.lexsort((o_l, s_l))
            s_l, o_l, w_l = s_l[k], o_l[k], w_l[k]
        return (np.concatenate((s_l, self.rest_shard[rr])),
                np.concatenate((o_l, self.rest_start[rr] + j[ri])),
                np.concatenate((w_l, order[ri])))


def _sorted_with_positions(ids: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order, ids[order])`` with ``ids[order]`` ascending: one ``np.sort`` of
    ``id << bits | position`` when that fits 62 bits (sorting values is about twice as fast
    as ``argsort``), else an ``argsort``."""
    n = ids.size
    bits = max(1, (n - 1).bit_length())
    if max(total, 1).bit_length() + bits > 62:
        order = np.argsort(ids)
        return order, ids[order]
    key = np.left_shift(ids, bits)
    key |= np.arange(n, dtype=np.int64)
    key.sort()
    return key & ((1 << bits) - 1), key >> bits


def check_compact_declared(table: pa.Table, meta: dict[str, object]) -> None:
    """Refuse a compact-only index whose ``must_understand`` lacks ``compact_tokens``."""
    names = table.column_names
    if not all(c in names for c in spec.TOKEN_COMPACT_COLUMNS) or all(
            c in names for c in spec.TOKEN_LIST_COLUMNS):
        return
    fmt = meta.get("actstore:format")
    must = fmt.get("must_understand") if isinstance(fmt, dict) else None
    if not isinstance(must, list) or spec.COMPACT_TOKENS_EXTENSION not in must:
        raise FormatError(
            f"{spec.INDEX_PATH}: the index has the compact token columns "
            f"{list(spec.TOKEN_COMPACT_COLUMNS)} and no per-token lists, but "
            f"actstore:format.must_understand does not list {spec.COMPACT_TOKENS_EXTENSION!r} "
            "(spec section 5b); the dataset is corrupt or was edited."
        )


def _int_column(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    if not pa.types.is_integer(col.type):
        raise FormatError(f"{spec.INDEX_PATH}: the index's {name!r} column must hold integers; "
                          f"it holds {col.type}.")
    if col.null_count:
        i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise IntegrityError(f"{spec.INDEX_PATH}: index row {i} has a null {name!r}; every row of "
                             "a full-sequence dataset needs one (spec section 5b).")
    raw = col.to_numpy(zero_copy_only=False)
    if raw.dtype == np.uint64 and raw.size and int(raw.max()) >= _BIG:
        i = int(np.flatnonzero(raw >= _BIG)[0])
        raise IntegrityError(f"{spec.INDEX_PATH}: index row {i} has {name} {int(raw[i])}, out of range.")
    return raw.astype(np.int64)


def _fail_row(rows: np.ndarray, bad: np.ndarray, what: str) -> None:
    if bad.any():
        i = int(rows[np.flatnonzero(bad)[0]])
        raise IntegrityError(f"{spec.INDEX_PATH}: index row {i} {what} (spec section 5b); the "
                             "index is corrupt.")


def _compact(table: pa.Table, view: ViewLayout, last: tuple[np.ndarray, np.ndarray]) -> TokenLayout:
    counts = _int_column(table, "num_tokens")
    every = np.arange(counts.size)
    _fail_row(every, counts < 1, f"has num_tokens {int(counts.min()) if counts.size else 0}; a "
              "full-sequence row holds at least one token")
    shard = _int_column(table, "token_shard")
    start = _int_column(table, "token_start")
    lt, n = view.last_token_shards, len(view.shard_rows)
    m = np.flatnonzero(counts >= 2)  # rows with tokens in the rest shards
    s, st, ln = shard[m], start[m], counts[m] - 1
    bad_s = (s < lt) | (s >= n)
    if bad_s.any():
        i = int(np.flatnonzero(bad_s)[0])
        raise IntegrityError(
            f"{spec.INDEX_PATH}: index row {int(m[i])} has token_shard {int(s[i])}, outside the "
            f"token shards {lt}..{n - 1} of {view.path(view.layers[0], lt) if lt < n else 'the view'}; "
            "the index is corrupt."
        )
    if s.size:
        back = np.concatenate(([False], np.diff(s) < 0))
        _fail_row(m, back, "has its tokens in an earlier shard than the row before it (out of order)")
        new = np.concatenate(([True], np.diff(s) != 0))
        ends = st + ln
        expect = np.where(new, 0, np.concatenate(([0], ends[:-1])))
        wrong = st != expect
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            kind = "overlaps the row before it" if st[i] < expect[i] else "leaves a gap after the row before it"
            raise IntegrityError(
                f"{spec.INDEX_PATH}: index row {int(m[i])} has token_start {int(st[i])} in "
                f"{view.path(view.layers[0], int(s[i]))} but {int(expect[i])} was expected: its range "
                f"{kind} (spec section 5b); the index is corrupt."
            )
    rows = np.asarray(view.shard_rows[lt:], dtype=np.int64)
    used = np.zeros(n - lt, dtype=np.int64)
    np.add.at(used, s - lt, ln)
    if not np.array_equal(used, rows):
        k = int(np.flatnonzero(used != rows)[0])
        where = view.path(view.layers[0], lt + k)
        past = "run past its end" if used[k] > rows[k] else "fill only part of it"
        raise IntegrityError(
            f"{spec.INDEX_PATH}: the rows' token counts place {int(used[k])} tokens in {where}, "
            f"which holds {int(rows[k])} (metadata shards[{lt + k}].num_tokens): the ranges {past}; "
            "the index is corrupt."
        )
    cum = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    ls, lo = last
    in_order = bool(ls.size < 2 or np.all((np.diff(ls) > 0) | ((ls[1:] == ls[:-1]) & (np.diff(lo) >= 0))))
    return TokenLayout(counts, cum, ls, lo, rest_shard=shard, rest_start=start, last_in_order=in_order)


def _lists(table: pa.Table, view: ViewLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row lengths and the flattened, range-checked per-token lists."""
    flats, lens = [], []
    for name in spec.TOKEN_LIST_COLUMNS:
        col = table.column(name).combine_chunks()
        if col.null_count:
            i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise FormatError(f"Index row {i} has invalid token_shard_ids/token_shard_offsets (null).")
        values = col.flatten()
        ln = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
        row_of = np.repeat(np.arange(ln.size), ln)
        if values.null_count:
            i = int(row_of[np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0]])
            raise FormatError(f"Index row {i} has invalid token_shard_ids/token_shard_offsets (null).")
        raw = values.to_numpy(zero_copy_only=False)
        if raw.dtype.kind == "u" and raw.size and int(raw.max()) >= _BIG:
            i = int(row_of[np.flatnonzero(raw >= _BIG)[0]])
            raise FormatError(f"Index row {i} has invalid token_shard_ids/token_shard_offsets "
                              "(values out of range).")
        flats.append(raw.astype(np.int64))
        lens.append(ln)
    if not np.array_equal(lens[0], lens[1]) or (lens[0].size and lens[0].min() < 1):
        i = int(np.flatnonzero((lens[0] != lens[1]) | (lens[0] < 1))[0])
        raise FormatError(f"Index row {i} has invalid token_shard_ids/token_shard_offsets: "
                          f"{lens[0][i]} shard ids and {lens[1][i]} offsets (one of each per token, "
                          "at least one token).")
    ids, offs = flats
    rows = np.asarray(view.shard_rows, dtype=np.int64)
    bad = (ids < 0) | (ids >= rows.size)
    if not bad.any():
        bad = (offs < 0) | (offs >= rows[ids])
    if bad.any():
        t = int(np.flatnonzero(bad)[0])
        i = int(np.searchsorted(np.cumsum(lens[0]), t, side="right"))
        raise FormatError(f"Index row {i} has invalid token_shard_ids/token_shard_offsets: token "
                          f"at shard {int(ids[t])} row {int(offs[t])}, outside the view's shards.")
    return lens[0], ids, offs


def build_token_layout(table: pa.Table, view: ViewLayout,
                       last: tuple[np.ndarray, np.ndarray]) -> TokenLayout:
    """The token layout of a full-sequence index, every location checked (spec 5b).

    Parameters
    ----------
    table : pyarrow.Table
        The whole index.
    view : ViewLayout
        The primary (full-sequence) view.
    last : (ndarray, ndarray)
        The checked ``shard_index``/``row_offset`` of every row.

    Raises
    ------
    FormatError
        The index has neither layout, or its per-token lists are malformed.
    IntegrityError
        The compact columns break a packing rule, or disagree with the lists.
    """
    names = table.column_names
    compact = all(c in names for c in spec.TOKEN_COMPACT_COLUMNS)
    lists = all(c in names for c in spec.TOKEN_LIST_COLUMNS)
    if not compact and not lists:
        missing = [c for c in spec.TOKEN_LIST_COLUMNS if c not in names]
        raise FormatError(
            f"The index lacks the {missing[0]!r} column needed for per-token states (and the "
            f"compact columns {list(spec.TOKEN_COMPACT_COLUMNS)})."
        )
    if not compact:
        lens, ids, offs = _lists(table, view)
        cum = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
        return TokenLayout(lens, cum, last[0], last[1], flat_shard=ids, flat_off=offs)
    layout = _compact(table, view, last)
    if lists:
        _agree(layout, *_lists(table, view))
    return layout


def _agree(layout: TokenLayout, lens: np.ndarray, ids: np.ndarray, offs: np.ndarray) -> None:
    """Both layouts present: they must name the same location for every token."""
    bad_len = lens != layout.counts
    if bad_len.any():
        i = int(np.flatnonzero(bad_len)[0])
        raise IntegrityError(
            f"{spec.INDEX_PATH}: index row {i} has {int(lens[i])} tokens in token_shard_ids/"
            f"token_shard_offsets but num_tokens {int(layout.counts[i])}; the two token layouts "
            "disagree (spec section 5b)."
        )
    s, o = layout.locate(np.arange(layout.total, dtype=np.int64))
    bad = (s != ids) | (o != offs)
    if bad.any():
        t = int(np.flatnonzero(bad)[0])
        i = int(layout.row_of(np.int64(t)))
        raise IntegrityError(
            f"{spec.INDEX_PATH}: index row {i}, token {t - int(layout.cum[i])}: token_shard_ids/"
            f"token_shard_offsets say shard {int(ids[t])} row {int(offs[t])}, the compact columns "
            f"shard {int(s[t])} row {int(o[t])}; the two token layouts disagree (spec section 5b)."
        )


class _TokenRows(Protocol):
    """What :func:`selection_tokens` needs of a :class:`~.reader.Dataset` (no import of the
    reader here: the reader imports this module)."""

    @property
    def _abs(self) -> np.ndarray: ...

    def _token_layout(self) -> TokenLayout: ...

    def _mask_ranges(self, mask: str | None, rows: None,
                     skip_first_token: bool | str) -> tuple[TokenLayout, np.ndarray, np.ndarray, np.ndarray]: ...


def selection_tokens(ds: _TokenRows, *, mask: str | None = None, skip_first_token: bool | str = False
                     ) -> tuple[TokenLayout, np.ndarray, np.ndarray, np.ndarray]:
    """The checked layout of a full-sequence dataset and, for each row of the selection ``ds``
    in its order, the global id of its first kept token, how many it keeps, and the kept
    range's first position in the row (O(rows)).

    ``mask``/``skip_first_token`` as in :meth:`~.reader.Dataset.token_ids` (spec section 5c):
    every mask keeps one contiguous range of each row. The hook the stream loader's token
    sample space reads through (it never needs the reader's private parts);
    :meth:`TokenLayout.locate` maps global ids to stored rows.
    """
    layout, rows, lo, hi = ds._mask_ranges(mask, None, skip_first_token)
    return layout, layout.cum[rows] + lo, hi - lo, lo
