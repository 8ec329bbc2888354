"""Splitting array work across threads.

numpy's copies and casts, ``preadv`` and hashlib release the GIL, so on several cores a large
read, widen or rounding runs in pieces on plain threads. The threads are started per call
(no pool), so nothing goes stale across ``fork()``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numpy as np

__all__ = ["in_pieces", "piece_count"]


def piece_count(n: int, nbytes: int, per_piece: int) -> int:
    """Threads to share ``n`` rows of ``nbytes``: one per ``per_piece`` bytes, at most one per
    core (and 4), at least 1."""
    return int(max(1, min(os.cpu_count() or 1, 4, n, nbytes // max(per_piece, 1))))


def in_pieces(piece: Callable[[int, int], None], n: int, pieces: int) -> None:
    """Run ``piece(lo, hi)`` over ``pieces`` even cuts of ``range(n)``, the first in this
    thread; an exception raised in any piece is raised here once all have finished.

    Examples
    --------
    >>> out = np.zeros(10)
    >>> in_pieces(lambda lo, hi: out.__setitem__(slice(lo, hi), 1), 10, 3)
    >>> out.sum()
    np.float64(10.0)
    """
    if pieces <= 1:  # the usual small read: no cuts to plan, no thread
        piece(0, n)
        return
    cuts = np.linspace(0, n, pieces + 1).astype(np.int64).tolist()
    errors: list[BaseException] = []

    def guarded(lo: int, hi: int) -> None:
        try:
            piece(lo, hi)
        except BaseException as exc:  # re-raised in the calling thread below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(lo, hi)) for lo, hi in zip(cuts[1:-1], cuts[2:])]
    for t in threads:
        t.start()
    guarded(cuts[0], cuts[1])
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
