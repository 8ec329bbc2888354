"""Per-row token masks (spec section 5c): which tokens of a row are the prompt, which a generated
continuation, and whether token 0 is a special token the tokenizer added.

Every mask is one range of positions per row (a continuation follows its prompt; a special
token is token 0), so a mask is held as two O(rows) arrays, ``lo`` and ``hi``: the positions
``lo[r] <= j < hi[r]`` of row ``r``. Global token ids of a mask are those ranges shifted by
each row's first id; nothing per token is held unless the caller asks for the ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import FormatError, InvalidArgumentError
from . import spec

__all__ = ["MASKS", "TokenMasks", "build_token_masks", "check_mask_values", "mask_columns",
           "mask_ranges", "ranges_to_ids"]

#: The masks a reader offers (spec section 5c.4).
MASKS = ("prompt", "continuation", "first", "special")


@dataclass(frozen=True)
class TokenMasks:
    """The checked mask columns of a dataset (None where the column is absent)."""

    prompt: np.ndarray | None  # int64 per row: tokens 0..P-1 are the prompt
    special: np.ndarray | None  # bool per row: token 0 is a tokenizer-added special token


def _declared(meta: dict[str, Any]) -> bool:
    fmt = meta.get("actstore:format")
    ext = fmt.get("extensions") if isinstance(fmt, dict) else None
    return isinstance(ext, list) and spec.TOKEN_MASKS_EXTENSION in ext


def _fail(i: int, what: str) -> FormatError:
    return FormatError(f"{spec.INDEX_PATH}: index row {i} {what} (spec section 5c); the index is "
                       "corrupt or was edited.")


def build_token_masks(table: Any, meta: dict[str, Any], counts: np.ndarray) -> TokenMasks:
    """The mask columns of an index, checked against the rows' token counts (spec 5c.3).

    Parameters
    ----------
    table : IndexTable or pyarrow.Table
        The index (only the mask columns are decoded).
    meta : dict
        The decoded schema metadata; the columns are masks only when ``token_masks`` is
        listed in ``actstore:format.extensions``.
    counts : ndarray of int64
        Tokens per row (a huge value where unknown: no upper bound is checked).

    Raises
    ------
    FormatError
        A null, negative or too large ``prompt_tokens``, or a ``special_first_token``
        column that is not boolean.
    """
    if not _declared(meta):
        return TokenMasks(None, None)
    names = table.column_names
    prompt = special = None
    if "prompt_tokens" in names:
        col = _mask_column(table, "prompt_tokens", pa.types.is_integer, "integers")
        raw = col.to_numpy(zero_copy_only=False)
        if raw.dtype == np.uint64 and raw.size and int(raw.max()) >= 1 << 62:
            i = int(np.flatnonzero(raw >= 1 << 62)[0])
            raise _fail(i, f"has prompt_tokens {int(raw[i])}, more than its {int(counts[i])} tokens")
        prompt = raw.astype(np.int64)
        bad = (prompt < 0) | (prompt > counts)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "negative" if prompt[i] < 0 else f"more than its {int(counts[i])} tokens"
            raise _fail(i, f"has prompt_tokens {int(prompt[i])}, {what}")
    if "special_first_token" in names:
        col = _mask_column(table, "special_first_token", pa.types.is_boolean, "booleans")
        special = col.to_numpy(zero_copy_only=False).astype(bool)
    return TokenMasks(prompt, special)


def _mask_column(table: pa.Table, name: str, is_kind: Callable[[pa.DataType], bool],
                 kind: str) -> pa.ChunkedArray:
    """A mask column, checked to hold ``kind`` values and no nulls."""
    col = table.column(name)
    if not is_kind(col.type):
        raise FormatError(f"{spec.INDEX_PATH}: the index's {name!r} column must hold {kind}; "
                          f"it holds {col.type} (spec section 5c).")
    if col.null_count:
        raise _fail(int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0]),
                    f"has a null {name}")
    return col


def mask_ranges(masks: TokenMasks, counts: np.ndarray, rows: np.ndarray, mask: str | None,
                skip_first: bool | str = False) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)``: the positions ``lo <= j < hi`` each of ``rows`` keeps (int64, ``hi >= lo``).

    ``mask`` is one of :data:`MASKS` or None (every token); ``skip_first`` True drops token 0
    of every row, ``"special"`` only where it is a special token.
    """
    n = counts[rows]
    lo, hi = np.zeros_like(n), n.copy()
    if mask is not None:
        if mask not in MASKS:
            raise InvalidArgumentError(f"mask must be one of {list(MASKS)} or None; got {mask!r}.")
        if mask in ("prompt", "continuation"):
            p = _need(masks.prompt, "prompt_tokens", mask)[rows]
            lo, hi = (lo, p) if mask == "prompt" else (p, hi)
        elif mask == "first":
            hi = np.minimum(hi, 1)
        else:
            hi = np.where(_need(masks.special, "special_first_token", mask)[rows], np.minimum(hi, 1), 0)
    if skip_first is True:
        lo = np.maximum(lo, 1)
    elif skip_first == "special":
        lo = np.maximum(lo, _need(masks.special, "special_first_token", "special").astype(np.int64)[rows])
    elif skip_first is not False:
        raise InvalidArgumentError(f"skip_first_token must be True, False or 'special'; got {skip_first!r}.")
    return lo, np.maximum(hi, lo)


def _need(col: np.ndarray | None, name: str, mask: str) -> np.ndarray:
    if col is None:
        raise InvalidArgumentError(
            f"The mask {mask!r} needs the {name!r} token-mask column (spec section 5c), which "
            "this dataset does not record; write it with DatasetWriter.add(..., "
            f"{name}=...) or extract(pooling='all'), or use mask=None / 'first'."
        )
    return col


def ranges_to_ids(starts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Global ids ``starts[r] + j`` for ``lo[r] <= j < hi[r]``, rows in order (vectorised)."""
    lengths = hi - lo
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    first = starts + lo
    out_start = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    return np.arange(total, dtype=np.int64) + np.repeat(first - out_start, lengths)


def check_mask_values(name: str, values: Any, counts: list[int | None]) -> list[Any]:
    """A writer's ``prompt_tokens`` / ``special_first_token`` for one batch, checked."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise InvalidArgumentError(f"{name} must be a sequence with one value per row; got {values!r}.")
    vals = list(np.asarray(values).tolist()) if isinstance(values, np.ndarray) else list(values)
    if len(vals) != len(counts):
        raise InvalidArgumentError(f"{name} has {len(vals)} values but the batch has {len(counts)} rows.")
    for i, (v, n) in enumerate(zip(vals, counts)):
        if name == "special_first_token":
            if not isinstance(v, (bool, np.bool_)):
                raise InvalidArgumentError(f"{name}[{i}] must be True or False; got {v!r}.")
            continue
        if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)):
            raise InvalidArgumentError(f"{name}[{i}] must be an integer; got {v!r}.")
        limit = n if n is not None else None
        if v < 0 or (limit is not None and v > limit):
            raise InvalidArgumentError(
                f"{name}[{i}] is {v}; it must lie in 0..{limit} (the row's token count): the "
                "prompt is the first prompt_tokens tokens of the row."
            )
    return [bool(v) for v in vals] if name == "special_first_token" else [int(v) for v in vals]


def mask_columns(ds: Any) -> dict[str, list[Any]]:
    """The mask columns a dataset holds, as ``DatasetWriter.add`` keyword arguments (so a
    rewrite — merge, convert — keeps them)."""
    out: dict[str, list[Any]] = {}
    for c in spec.TOKEN_MASK_COLUMNS:
        try:
            out[c] = ds.column(c).tolist()
        except InvalidArgumentError:  # no such column
            continue
    return out
