"""The one coalescing policy for byte ranges: which nearby ranges are read in one request.

Every reader of byte ranges — rows of local and remote shard files, gaps a cache fills from
the origin, entries of a cache segment, pieces read straight from a local segment — merges
its ranges here, with the rule of zarr's ``abc/store.py::get_ranges``: ranges are sorted,
and two ranges whose gap is at most ``gap`` bytes become one read (the gap is read and
thrown away); a merged read never grows past ``max_span`` bytes. Overlapping and touching
ranges always merge.

The defaults differ by what a wasted byte costs against a saved request:

=====================  ===========  ============================================================
setting                gap          why
=====================  ===========  ============================================================
``DATASET_GAP``        0            rows of dataset files as the reader plans them, local or
                                    remote, and the gaps a cache fills: exact bytes; locally a gap
                                    costs a copy for nothing
``REMOTE_GAP``         0            one remote read call on S3, HTTP and other object stores
                                    (:func:`request_policy`): they take thousands of requests a
                                    second and 16 run at once, so a byte is the scarcer resource
``HUB_GAP``            4 MiB        one remote read call on the Hub (``hf://``): the Hub
                                    rate-limits resolve calls (some thousands per 5 minutes per
                                    user), so a request is worth megabytes; a ``get()`` of 1 % of
                                    the rows is then a few requests per shard, not one per row
``SEGMENT_GAP``        256 KiB      entries of one cache segment: a cache on S3 pays a request
                                    per read, and entries of one read were mostly written together
``LOCAL_RUN_GAP``      64 KiB       pieces ``preadv``'d from a local segment: one syscall instead
                                    of several, the gap read into shared scratch memory
=====================  ===========  ============================================================

Users set the two remote policies (not the local ones) with ``ACTSTORE_HUB_GAP`` /
``ACTSTORE_HUB_MAX_SPAN`` and ``ACTSTORE_REMOTE_GAP`` / ``ACTSTORE_REMOTE_MAX_SPAN``
(byte counts such as ``4M``; read by :func:`request_policy` on every call, checked by
:func:`actstore.config.range_policy`); the constants here are the defaults.

Remote reads merge twice: the reader plans exact runs of rows (``DATASET_GAP``), then
:func:`~actstore.format.fetch.fetch_ranges` merges the ranges of one call per the store's
:func:`request_policy` (the merged read never longer than its ``max_span``), so every remote
byte source — plain or cached — follows one rule per store.

Examples
--------
>>> coalesce([(10, 20), (0, 5), (20, 30), (100, 110)], gap=0)
[(0, 5, [1]), (10, 30, [0, 2]), (100, 110, [3])]
>>> coalesce([(0, 5), (8, 10)], gap=3)
[(0, 10, [0, 1])]
>>> request_policy(("hf",)) == (HUB_GAP, HUB_MAX_SPAN)
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import range_policy

__all__ = ["DATASET_GAP", "HUB_GAP", "HUB_MAX_SPAN", "LOCAL_RUN_GAP", "REMOTE_GAP", "REMOTE_MAX_SPAN",
           "SEGMENT_GAP", "coalesce", "coalesce_sorted", "request_policy"]

#: Dataset files (local and remote rows, gaps the cache fills): exact bytes only.
DATASET_GAP = 0
#: One read call on S3, HTTP and other remote stores: exact bytes (requests are cheap there).
REMOTE_GAP = 0
#: Largest merged read on those stores (a single longer range stays one read).
REMOTE_MAX_SPAN = 64 << 20
#: One read call on the Hub: ranges this close are one request (the Hub rate-limits resolves).
HUB_GAP = 4 << 20
#: Largest merged Hub read: each is held in memory whole, up to ``CONCURRENCY`` at once.
HUB_MAX_SPAN = 16 << 20
#: Entries of one cache segment closer than this are read in one request, gap included.
SEGMENT_GAP = 256 << 10
#: Pieces of one local segment file closer than this are read in one ``preadv`` call.
LOCAL_RUN_GAP = 64 << 10


def coalesce(spans: Sequence[tuple[int, int]], *, gap: int = DATASET_GAP,
             max_span: int | None = None) -> list[tuple[int, int, list[int]]]:
    """Merge ``[start, end)`` spans into few reads.

    Parameters
    ----------
    spans : sequence of (start, end)
        Byte ranges, in any order; they may overlap.
    gap : int
        Largest gap in bytes between two spans read as one.
    max_span : int, optional
        Largest merged read in bytes (a single longer span stays one read).

    Returns
    -------
    list of (start, end, members)
        The reads in offset order, each with the positions in ``spans`` it covers.
    """
    order = sorted(range(len(spans)), key=lambda i: spans[i])
    out: list[tuple[int, int, list[int]]] = []
    for i in order:
        s, e = spans[i]
        if out:
            a, b, members = out[-1]
            end = max(b, e)
            if s - b <= gap and (max_span is None or end - a <= max_span):
                members.append(i)
                out[-1] = (a, end, members)
                continue
        out.append((s, e, [i]))
    return out


def request_policy(protocols: Sequence[str], *, gap: int | str | None = None,
                   max_span: int | str | None = None) -> tuple[int, int]:
    """``(gap, max_span)`` for the ranges of one remote read call on a store.

    Parameters
    ----------
    protocols : sequence of str
        The fsspec protocol names of the filesystem (``("hf",)``, ``("s3", "s3a")``, ...).
    gap, max_span : int or str, optional
        Override the setting for this call (byte counts, ``"4M"`` style accepted).

    Returns
    -------
    gap, max_span : int
        Ranges at most ``gap`` bytes apart are fetched in one request, up to ``max_span``
        bytes long. On the Hub: the environment variables ``ACTSTORE_HUB_GAP`` /
        ``ACTSTORE_HUB_MAX_SPAN``, else ``HUB_GAP`` / ``HUB_MAX_SPAN``; elsewhere
        ``ACTSTORE_REMOTE_GAP`` / ``ACTSTORE_REMOTE_MAX_SPAN``, else ``REMOTE_GAP`` /
        ``REMOTE_MAX_SPAN``. Read on every call, so a change applies to the next read.
        A larger Hub gap means fewer requests (the Hub rate-limits them) for more bytes;
        ``ACTSTORE_HUB_GAP=0`` reads exact bytes, one request per run of rows.

    Raises
    ------
    InvalidArgumentError
        A setting that is not a non-negative byte count, or a ``max_span`` below
        :data:`actstore.config.MIN_MAX_SPAN` (64 KiB).

    Examples
    --------
    >>> request_policy(("s3", "s3a"))
    (0, 67108864)
    >>> request_policy(("hf",), gap=0)
    (0, 16777216)
    """
    if "hf" in protocols:
        return range_policy("hub", gap, max_span, default_gap=HUB_GAP, default_max_span=HUB_MAX_SPAN)
    return range_policy("remote", gap, max_span, default_gap=REMOTE_GAP,
                        default_max_span=REMOTE_MAX_SPAN)


def coalesce_sorted(starts: np.ndarray, ends: np.ndarray, *, gap: int = DATASET_GAP,
                    max_span: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`coalesce` for many spans already sorted by start, vectorised.

    Parameters
    ----------
    starts, ends : ndarray of int
        Span bounds, ``starts`` ascending.
    gap, max_span : int
        As for :func:`coalesce`.

    Returns
    -------
    a, b : ndarray of int64
        Each read covers spans ``a[k]:b[k]`` (index ranges into ``starts``).

    Examples
    --------
    >>> s = np.array([0, 4, 8, 40]); a, b = coalesce_sorted(s, s + 4, max_span=8)
    >>> a.tolist(), b.tolist()
    ([0, 2, 3], [2, 3, 4])
    """
    n = int(starts.size)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    reach = np.maximum.accumulate(ends)  # the end of everything read so far
    cuts = np.flatnonzero(starts[1:] - reach[:-1] > gap) + 1
    a = np.concatenate(([0], cuts))
    b = np.concatenate((cuts, [n]))
    if max_span is not None:
        long = np.flatnonzero(reach[b - 1] - starts[a] > max_span)
        if long.size:  # rare: split reads longer than max_span
            pieces_a, pieces_b = list(a), list(b)
            for i in long[::-1]:
                lo, hi, parts = int(a[i]), int(b[i]), []
                while lo < hi and int(reach[hi - 1]) - int(starts[lo]) > max_span:
                    # the spans from lo whose read stays within max_span (at least one)
                    fit = int(np.searchsorted(reach[lo:hi], starts[lo] + max_span, side="right"))
                    parts.append((lo, lo + max(1, fit)))
                    lo += max(1, fit)
                if lo < hi:
                    parts.append((lo, hi))
                pieces_a[i : i + 1] = [p[0] for p in parts]
                pieces_b[i : i + 1] = [p[1] for p in parts]
            a, b = np.asarray(pieces_a), np.asarray(pieces_b)
    return a.astype(np.int64), b.astype(np.int64)
