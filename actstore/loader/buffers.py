"""Reused, page-phased arrays for the stream's windows and batches.

Two costs dominate a local stream besides the copies themselves: page faults on fresh buffers
(a fresh 64 MiB window or 32 MiB batch costs about as much as copying it again), and kernel
copies whose destination is misaligned against the page cache (see
:func:`actstore.format.rows._aliased`). :class:`BufferPool` hands out arrays that start at a
chosen page phase (the file offset's, so ``preadv`` copies page to page) and takes an array
back by itself once nothing outside the pool refers to it: a batch the training loop still
holds (or a tensor made from it with ``torch.from_numpy``) is never written over; a buffer is
reused only when the caller has dropped every view of it.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

__all__ = ["PAGE", "BufferPool"]

#: The page size kernel copies align on.
PAGE = 4096


def _free_count() -> int:
    """``sys.getrefcount`` of a list element nothing else refers to (interpreter-dependent)."""
    held = [np.empty(1, dtype=np.uint8)]
    return sys.getrefcount(held[0])


_FREE = _free_count()


class BufferPool:
    """At most ``keep`` reusable byte buffers; :meth:`take` returns a free one or a new one.

    Parameters
    ----------
    keep : int
        Buffers the pool holds on to. When all are in use a new one replaces the oldest busy
        one in the pool (which lives on while its user holds it).

    Examples
    --------
    >>> pool = BufferPool(2)
    >>> a = pool.take((4, 1024), np.uint16, phase=8)
    >>> (a.ctypes.data - 8) % PAGE, a.shape
    (0, (4, 1024))
    >>> address = a.ctypes.data
    >>> del a  # dropped by its user: the next take reuses it
    >>> pool.take((4, 1024), np.uint16, phase=8).ctypes.data == address
    True
    """

    def __init__(self, keep: int) -> None:
        self._keep = max(1, int(keep))
        self._owners: list[np.ndarray] = []
        self._lock = threading.Lock()  # iterators of one stream in several threads share the pool

    def take(self, shape: tuple[int, ...], dtype: Any, phase: int = 0) -> np.ndarray:
        """A C-contiguous array of ``shape`` whose address is ``phase`` modulo :data:`PAGE`
        (contents undefined)."""
        dt = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        with self._lock:
            owner = self._owner(nbytes)
        skip = (int(phase) - owner.ctypes.data) % PAGE
        return owner[skip : skip + nbytes].view(dt).reshape(shape)

    def _owner(self, nbytes: int) -> np.ndarray:
        owner = None
        for i in range(len(self._owners)):
            if sys.getrefcount(self._owners[i]) <= _FREE and self._owners[i].nbytes >= nbytes + PAGE:
                owner = self._owners[i]
                break
        if owner is None:
            owner = np.empty(nbytes + PAGE, dtype=np.uint8)
            if len(self._owners) >= self._keep:  # replace a free (too small) one, else the oldest
                free = [i for i in range(len(self._owners)) if sys.getrefcount(self._owners[i]) <= _FREE]
                self._owners.pop(free[0] if free else 0)
            self._owners.append(owner)
        return owner
