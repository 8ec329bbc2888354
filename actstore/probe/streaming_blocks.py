"""Reading a streaming pass: blocks of rows for several layers, the next one read while the
caller computes on the current one, every block checked for NaN; and the memory a pass needs.

``ds.get(rows, layers=..., dtype=float32)`` widens bfloat16 and float16 shards block by block,
so no layer is ever held whole. One reader thread suffices: it only waits on storage (a
local ``preadv`` or concurrent remote range requests), while the caller's float64 matrix
products run on every core through BLAS.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .layers import request

__all__ = ["blocks", "memory_needed", "check_memory"]


def _read(ds: Any, rows: np.ndarray, layers: Sequence[int | str], view: str | None) -> np.ndarray:
    block = ds.get(rows, layers=[request(L) for L in layers], view=view, dtype=np.float32)
    finite = np.isfinite(block).all(axis=2)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise InvalidArgumentError(
            f"Row {int(rows[i])} holds NaN or infinite activations (layer {request(layers[j])}, "
            f"block of rows {int(rows[0])}-{int(rows[-1])}); probes need finite values: drop or "
            "repair that row (fit on a row selection without it)."
        )
    return block


def blocks(ds: Any, rows: np.ndarray, layers: Sequence[int | str], view: str | None,
           block_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(rows, block)`` with ``block`` float32 ``(len(rows), len(layers), dim)``.

    The next block is read in a background thread while the caller works on this one; at
    most two blocks are alive at a time.
    """
    if rows.size == 0:
        return
    starts = range(0, rows.size, block_rows)
    with ThreadPoolExecutor(1, thread_name_prefix="actstore-stream") as pool:
        nxt = pool.submit(_read, ds, rows[:block_rows], layers, view)
        for start in starts:
            cur, here = nxt.result(), rows[start : start + block_rows]
            after = rows[start + block_rows : start + 2 * block_rows]
            if after.size:
                nxt = pool.submit(_read, ds, after, layers, view)
            yield here, cur
            del cur


def memory_needed(*, dim: int, n_layers: int, n_groups: int, fourth: bool, block_rows: int,
                  width: int | None = None) -> int:
    """Bytes a pass holds at its peak: the statistics (``n_groups`` = classes x folds per
    layer, each a ``d x d`` float64 scatter, three with LDA's fourth moments), two float32
    blocks in flight, one float64 layer block with its centred copies, and the fit's
    ``d x d`` temporaries."""
    w = width or dim
    square = w * w * 8
    per_group = square * (3 if fourth else 1) + 3 * w * 8
    stats = n_layers * n_groups * per_group
    reading = 2 * block_rows * n_layers * dim * 4
    compute = 4 * block_rows * w * 8 + square * (3 if fourth else 1)
    finish = square * (4 + (3 if fourth else 0))
    return stats + reading + compute + finish


def check_memory(budget: int | None, need: int, *, dim: int, n_layers: int, n_groups: int,
                 fourth: bool, block_rows: int) -> None:
    """Refuse, before reading anything, a pass whose statistics do not fit ``budget``."""
    if budget is None or need <= budget:
        return
    square_mb = dim * dim * 8 / 2**20
    raise InvalidArgumentError(
        f"A streaming fit of {n_layers} layer(s) of dim {dim} needs about {need / 2**20:,.0f} MiB "
        f"(a {dim} x {dim} float64 scatter matrix is {square_mb:,.0f} MiB, kept for "
        f"{n_groups} class x fold group(s) per layer{', x3 for LDA' if fourth else ''}; "
        f"blocks of {block_rows} rows), more than memory_budget={budget / 2**20:,.0f} MiB. "
        "Fit fewer layers per pass (layers=[...]), drop 'lda' or cv, lower block_rows, or reduce "
        "the dimension first (PCA on a sample of rows, or ridge on a random sketch)."
    )
