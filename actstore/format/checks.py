"""Checks of what a caller hands ``DatasetWriter``: arguments, texts, counts, finite values.

Each failure is an :class:`~actstore.errors.InvalidArgumentError` naming the argument, what it
held and what was expected.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from . import spec

__all__ = ["check_counts", "check_finite", "check_layers", "check_texts", "check_views", "positive_int"]


def check_layers(layers: Sequence[int]) -> tuple[int, ...]:
    try:  # operator.index: ints and numpy ints, not floats (int(1.5) would truncate)
        values = [operator.index(v) for v in layers]
    except TypeError:
        raise InvalidArgumentError(f"layers must be a list of integers; got {layers!r}.") from None
    if not values:
        raise InvalidArgumentError("layers must name at least one layer; got an empty list.")
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise InvalidArgumentError(f"layers lists {dupes} more than once; each layer must be unique.")
    return tuple(values)


def check_views(pooling: str | Sequence[str]) -> tuple[str, ...]:
    names = (pooling,) if isinstance(pooling, str) else tuple(pooling)
    if not names:
        raise InvalidArgumentError("pooling must name at least one view, e.g. 'last_token'.")
    for name in names:
        if not isinstance(name, str) or not spec.VIEW_NAME.match(name):
            raise InvalidArgumentError(
                f"View name {name!r} is invalid; use lowercase letters, digits and '_' "
                f"(known poolings: {', '.join(spec.POOLINGS)})."
            )
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"pooling lists a view twice: {list(names)}.")
    if "all" in names[1:]:
        raise InvalidArgumentError(
            "'all' (full-sequence storage) must be the first pooling, e.g. ['all', 'mean']."
        )
    return names


def check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InvalidArgumentError("texts must be a list of strings, not a single string.")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InvalidArgumentError(f"texts[{i}] must be a str; got {type(t).__name__}.")
    return out


def check_counts(num_tokens: Sequence[int] | None, n: int) -> list[int | None]:
    if num_tokens is None:
        return [None] * n
    values = [None if v is None else int(v) for v in num_tokens]
    if len(values) != n:
        raise InvalidArgumentError(f"num_tokens has {len(values)} entries but texts has {n}.")
    for i, v in enumerate(values):
        if v is not None and not 0 <= v < 2**31:  # the column is int32, as lmprobe writes it
            raise InvalidArgumentError(
                f"num_tokens[{i}] is {v}; token counts must be non-negative and fit in int32."
            )
    return values


def positive_int(value: Any, name: str) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        number = 0
    if number <= 0:
        raise InvalidArgumentError(f"{name} must be a positive integer; got {value!r}.")
    return number


def check_finite(original: Any, block: np.ndarray, *, name: str) -> None:
    # Check what will be stored: a finite input can overflow in the cast (1e6 -> float16 inf,
    # 3.4e38 -> bfloat16 inf). bfloat16 blocks are raw bits; a finite float32 sum of squares of
    # the input (one fast BLAS pass) proves every |value| < 2e19, so none rounded to inf.
    a = block
    if block.dtype == np.uint16:  # bfloat16 bits: exponent all ones means inf or NaN
        o = original if isinstance(original, np.ndarray) and original.dtype == np.float32 else None
        if o is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                if math.isfinite(float(np.dot(o.ravel(), o.ravel()))):
                    return
        bad = _nonfinite_bits(a)
        if bad is None:
            return
    else:
        # One cheap float32 reduction first (NaN and inf propagate through a sum); only when
        # it is not finite (a real NaN/inf, or an overflow of huge values) look element-wise.
        if math.isfinite(float(np.add.reduce(a.reshape(-1), dtype=np.float32))):
            return
        bad = ~np.isfinite(a)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise InvalidArgumentError(
            f"{name} holds NaN or inf (first at row {row}), or a value too large for "
            f"{block.dtype if block.dtype != np.uint16 else 'bfloat16'}; activations must be finite. "
            "Pass check_finite=False to store them anyway."
        )


def _nonfinite_bits(bits: np.ndarray) -> np.ndarray | None:
    """Mask of the bfloat16 NaN/inf values (exponent all ones), or None when there are none;
    scanned in cache-sized blocks, so a finite array costs no full-size temporaries."""
    flat = bits.reshape(-1)
    step = 1 << 18
    tmp = np.empty(min(step, flat.size), dtype=np.uint16)
    for start in range(0, flat.size, step):
        t = tmp[: min(step, flat.size - start)]
        np.bitwise_and(flat[start : start + t.size], 0x7F80, out=t)
        if (t == 0x7F80).any():
            return (bits & 0x7F80) == 0x7F80
    return None
