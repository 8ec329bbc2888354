"""``CachedSource``: a :class:`~actstore.format.source.ByteSource` over a remote dataset.

Keys: origin-scoped unless content is proven
--------------------------------------------
A cache is shared by every dataset a user (or a team) opens, and datasets come from
strangers, so nothing a dataset *claims* is trusted as a key by itself: a stranger's
metadata can claim the victim's sha256s, and a stranger's server can send the victim's ETag.

* **Origin-scoped pieces.** Every byte range read from a remote file is stored under
  ``r:o<h>:<start>:<end>``, where ``<h>`` hashes the *origin* — the dataset URL (with its Hub
  revision, if any) and the endpoint the filesystem talks to (:func:`origin_of`) — together
  with the file's path and its validator: the sha256 the origin's own index records for it,
  or, for the index and files without one, the identity the server reports for the index
  (Hub LFS sha256 or git blob id, S3/HTTP ETag plus size). A piece is only ever served to
  the origin that supplied it, so another dataset can neither read nor replace it, and a
  rewritten file (new sha256 in a new index, new ETag) gets new keys, so nothing is stale.
* **Proven whole files, shared by content.** When a read brings in a *whole* file whose
  sha256 the origin claims, the sha256 is computed on admission; if it matches, the file is
  stored once under ``r:proven-sha256:<hex>:<start>:<end>`` and any origin claiming that
  sha256 may read it (the bytes are what the claim says, whoever made it). A file whose computed
  sha256 differs from the claim is kept origin-scoped only.
* **Remote verify checks the remote.** :meth:`CachedSource.read_origin` and
  :meth:`CachedSource.origin_size` read the remote directly, neither from nor into the
  cache; ``verify`` of a remote URL uses them, so a corrupted remote copy is reported even
  when good bytes of it are cached.

Fetched ranges are stored in pieces of at most ``PIECE_BYTES``, so a later read of a few
bytes never has to read (and check) a large piece. Every cached piece is checked against
its checksum on every read, on the bytes read into
this process (see :mod:`actstore.cache.store`), so a segment damaged while it is read is
dropped, reported and refetched, never served.

Reads ask only for the bytes not cached yet, with no read-ahead, all ranges of one call in
flight at once, through :func:`actstore.format.fetch.fetch_ranges`; each file is pinned to
the version first fetched (S3 ``If-Match``, HTTP validators, the Hub commit of the revision
at open), so a dataset overwritten while open raises
:class:`~actstore.errors.DatasetChangedError` instead of caching and serving a mix.

A server that ignores ``Range`` answers 200 with the whole file. Over HTTP the status is
checked (the first request to a server is sent alone to find out); on every filesystem the
length of each answer is checked. Either way the whole body is then cached as the complete
file and slices are served from it, so wrong bytes are never returned.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import operator
import os
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .. import config
from ..errors import CacheError, DatasetChangedError, IntegrityError, OfflineError
from ..format.fetch import CONCURRENCY, Pin, Pins, RangeIgnored, fetch_ranges, pin_hf_root, pin_of
from ..format.location import fs_is_http
from ..format.parallel import in_pieces, piece_count
from ..format.ranges import DATASET_GAP, LOCAL_RUN_GAP, coalesce
from ..format.rows import PARALLEL_BYTES
from ..format.spec import INDEX_FILE
from .segments import split_digest

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from .store import SegmentStore

__all__ = ["CONCURRENCY", "CachedSource", "RangeIgnored", "origin_of"]

log = logging.getLogger("actstore.cache")

#: Largest cached piece: every read checks whole pieces, so this bounds what a small read
#: of a large fetched range reads and hashes.
PIECE_BYTES = 256 << 10
#: Storage options that say which server a URL is read from (not credentials).
_ENDPOINT_KEYS = ("endpoint", "endpoint_url", "host", "base_url", "api_endpoint")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def origin_of(url: str, fs: AbstractFileSystem) -> str:
    """Where a dataset's bytes come from: its URL and the endpoint ``fs`` talks to.

    Two datasets share cached pieces only when both agree (``s3://b/ds`` on two S3-compatible
    servers are two origins). Credentials are not part of it.

    Examples
    --------
    >>> import fsspec
    >>> origin_of("memory://ds", fsspec.filesystem("memory"))
    '{"endpoints":[],"url":"memory://ds"}'
    """
    found: list[list[str]] = []

    def walk(opts: Any, prefix: str) -> None:
        if isinstance(opts, dict):
            for k in sorted(opts, key=str):
                if str(k) in _ENDPOINT_KEYS and isinstance(opts[k], (str, int)):
                    found.append([prefix + str(k), str(opts[k])])
                elif isinstance(opts[k], dict):
                    walk(opts[k], f"{prefix}{k}.")

    walk(getattr(fs, "storage_options", None) or {}, "")
    own = getattr(fs, "endpoint", None)  # HfFileSystem: HF_ENDPOINT when none was passed
    if isinstance(own, str):
        found.append(["fs.endpoint", own])
    resolved = _s3_endpoint(fs)
    if resolved is not None:
        found.append(["resolved_endpoint", resolved])
    return json.dumps({"endpoints": found, "url": url.rstrip("/")}, sort_keys=True,
                      separators=(",", ":"))


def _s3_endpoint(fs: AbstractFileSystem) -> str | None:
    """The endpoint an S3 filesystem's client really talks to.

    It may come from the environment (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``) or a
    profile's ``endpoint_url``, which storage options do not show: without it, ``s3://b/ds``
    on two S3-compatible servers would be one origin and share cached pieces. Creating the
    client sends no request (the filesystem keeps it for its reads).
    """
    protocol = getattr(fs, "protocol", ())
    if "s3" not in (protocol if isinstance(protocol, (tuple, list)) else (protocol,)):
        return None
    try:
        return str(fs.connect().meta.endpoint_url)
    except Exception:  # noqa: BLE001 - no client: fall back to what the environment names
        env = [os.environ.get(k, "") for k in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE")]
        return "env:" + "|".join(env)


class _Pieces:
    """Disjoint cached intervals of one file: ``[a, b)`` served from entry ``key`` at ``k0``."""

    def __init__(self, spans: list[tuple[int, int, str]]) -> None:
        self.starts: list[int] = []
        self.items: list[tuple[int, int, str, int]] = []
        self._arrays: tuple[np.ndarray, np.ndarray, list[str], np.ndarray] | None = None
        cur = -1
        for s, e, key in sorted(spans):
            if e > cur:
                self.starts.append(max(s, cur))
                self.items.append((max(s, cur), e, key, s))
                cur = e

    def arrays(self) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
        """(starts, ends) as int64 arrays, plus keys and key starts; rebuilt after changes."""
        if self._arrays is None:
            self._arrays = (np.asarray(self.starts, dtype=np.int64),
                            np.asarray([it[1] for it in self.items], dtype=np.int64),
                            [it[2] for it in self.items],
                            np.asarray([it[3] for it in self.items], dtype=np.int64))
        return self._arrays

    def add(self, a: int, b: int, key: str) -> None:
        self._arrays = None
        i = bisect.bisect_left(self.starts, a)
        self.starts.insert(i, a)
        self.items.insert(i, (a, b, key, a))

    def remove_key(self, key: str) -> None:
        self._arrays = None
        keep = [(a, b, k, k0) for a, b, k, k0 in self.items if k != key]
        self.items, self.starts = keep, [x[0] for x in keep]

    def plan(self, s: int, e: int) -> list[tuple[int, int, str | None, int]]:
        """Cover ``[s, e)`` with cached pieces and gaps (key None)."""
        out, pos = [], s
        j = max(0, bisect.bisect_right(self.starts, s) - 1)
        while j < len(self.items) and self.items[j][0] < e:
            a, b, key, k0 = self.items[j]
            j += 1
            if b <= pos:
                continue
            if a > pos:
                out.append((pos, a, None, pos))
            out.append((max(a, pos), min(b, e), key, k0))
            pos = min(b, e)
        if pos < e:
            out.append((pos, e, None, pos))
        return out


class _Spans:
    """``buffer[lo[i]:hi[i]]`` as a sequence, each view made only when it is asked for."""

    __slots__ = ("_buffer", "_lo", "_hi", "lo", "hi")

    def __init__(self, buffer: memoryview, lo: np.ndarray, hi: np.ndarray) -> None:
        self.lo, self.hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)
        self._buffer, self._lo, self._hi = buffer, self.lo.tolist(), self.hi.tolist()

    def at(self, lo: list[int], hi: list[int]) -> list[memoryview]:
        """The views ``buffer[lo[i]:hi[i]]``, made at C speed."""
        return list(map(self._buffer.__getitem__, map(slice, lo, hi)))

    def __len__(self) -> int:
        return len(self._lo)

    def __getitem__(self, i: int) -> memoryview:
        return self._buffer[self._lo[i] : self._hi[i]]


class CacheLike(Protocol):
    """What a :class:`CachedSource` needs of its cache (a :class:`~actstore.cache.UnifiedCache`)."""

    store: SegmentStore
    url: str


class CachedSource:
    """Read a remote dataset's files by byte ranges through a :class:`UnifiedCache`.

    Parameters
    ----------
    cache : UnifiedCache
        Where fetched bytes are kept.
    fs, root : fsspec filesystem and root path of the dataset on it.
    url : str
        The dataset URL (for messages).
    index_id : str, optional
        Content identity of the index file (ETag / blob id); None disables caching of the
        index and of files the metadata gives no sha256 for.
    """

    def __init__(self, cache: CacheLike, fs: AbstractFileSystem, root: str, *, url: str,
                 index_id: str | None) -> None:
        self.cache, self.store = cache, cache.store
        self.fs, self.root, self.url, self.index_id = fs, root.rstrip("/"), url, index_id
        self.origin = origin_of(url, fs)  # the URL as given: a Hub commit pin below keeps keys
        self.pins = Pins(fs, self.root, url, _ANCHOR)
        if not config.offline():
            self._pin_hub_commit()
        self.files: dict[str, dict[str, Any]] = {}
        self.index_path: str | None = None
        self._sizes: dict[str, int] = {}
        self._pieces: dict[str, _Pieces] = {}
        self._layouts: dict[str, Any] = {}  # ident -> piece locations (see _layout)
        self._scratch = bytearray(0)
        self._block_cache: dict[str, Any] = {}  # segment path -> its block checksums
        self._lock = threading.RLock()
        self.range_ok: bool | None = None
        self.counters = {"requests": 0, "bytes_fetched": 0, "bytes_from_cache": 0,
                         "damaged_pieces": 0, "uncached_fetches": 0}

    # -- versions: see actstore.format.fetch ----------------------------------------------
    def _pin_hub_commit(self) -> None:
        """On the Hub, read every file at the commit the revision names now; the index seen at
        open (``index_id``) must be the one of that commit, else it changed while opening."""
        pinned = pin_hf_root(self.fs, self.root)
        if pinned == self.root:
            return
        self.root = self.pins.root = pinned
        self.pins.immutable = True
        if self.index_id is not None:
            now = pin_of(dict(self.fs.info(f"{pinned}/{_ANCHOR}"))).ident
            if now != self.index_id:
                raise DatasetChangedError(
                    f"{self.url}/{_ANCHOR}: the dataset changed while it was being opened (its "
                    f"index is now {now}, it was {self.index_id}); open it again."
                )

    def _pin(self, path: str) -> Pin | None:
        """The version of ``path`` every fetch must find (None: nothing to check)."""
        if self.pins.immutable:
            return None
        if self.index_id is not None:
            self.pins.set(_ANCHOR, _pin_from_ident(self.index_id))
        if path == _ANCHOR and self.index_id is None:
            return None
        return self.pins.get(path)

    # -- identities ----------------------------------------------------------------------
    def bind_files(self, files: dict[str, dict[str, Any]]) -> None:
        """Give the ``actstore:files`` records (size, sha256) read from the index."""
        self.files = dict(files)

    def set_size(self, path: str, size: int) -> None:
        self._sizes[path] = int(size)

    def ident(self, path: str) -> str | None:
        """The origin-scoped key prefix of ``path`` (None: nothing to key it by)."""
        rec = self.files.get(path)
        if rec is not None:
            claim = f"sha256:{rec['sha256']}"
        elif self.index_id is None:
            return None
        else:
            claim = self.index_id if path == self.index_path else f"{self.index_id}/{path}"
        text = "\0".join((self.origin, path, claim))
        return "o" + hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()

    def claimed_sha256(self, path: str) -> str | None:
        """The sha256 (hex) the origin claims for ``path`` — never trusted as a key by itself."""
        rec = self.files.get(path)
        if rec is not None:
            claim = str(rec.get("sha256", "")).lower()
        elif path == self.index_path and self.index_id and self.index_id.startswith("sha256:"):
            claim = self.index_id[len("sha256:"):].lower()
        else:
            return None
        return claim if _SHA256.fullmatch(claim) else None

    def _proven_prefix(self, path: str) -> str | None:
        claim = self.claimed_sha256(path)
        return None if claim is None else f"r:proven-sha256:{claim}:"

    def _full(self, path: str) -> str:
        return f"{self.root}/{path}"

    # -- ByteSource ----------------------------------------------------------------------
    def size(self, path: str) -> int:
        rec = self.files.get(path)
        if rec is not None:
            return int(rec["size"])
        if path not in self._sizes:
            ident = self.ident(path)
            cached = self.store.get(f"m:size:{ident}") if ident else None  # origin-scoped too
            if cached is not None:
                self._sizes[path] = int(cached)
            else:
                self._check_online(path, "its size")
                self._sizes[path] = int(self.fs.size(self._full(path)))
                if ident:
                    self.store.put(f"m:size:{ident}", str(self._sizes[path]).encode())
        return self._sizes[path]

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        # a range covered by several cached pieces comes back as a list of them
        return [b"".join(b) if isinstance(b, list) else bytes(b) for b in self._read(path, ranges)]

    def cache_whole(self, path: str) -> int:
        """Fetch into the cache every byte of ``path`` it lacks (nothing is returned or
        kept in memory beyond one round); returns the bytes fetched. Online only, and only
        for a file with an identity to key it by (0 otherwise)."""
        ident = self.ident(path)
        if ident is None or config.offline():
            return 0
        with self._lock:
            pieces = self._pieces_for(path, ident)
            gaps = [(a, b) for a, b, _ in coalesce(
                [(a, b) for a, b, key, _ in pieces.plan(0, self.size(path)) if key is None],
                gap=DATASET_GAP)]
            if gaps:
                self._fill(path, ident, gaps, pieces)
        return sum(b - a for a, b in gaps)

    # -- the remote itself, bypassing the cache (for verify) --------------------------------
    def origin_size(self, path: str) -> int:
        """The size of ``path`` as the remote reports it now (not the metadata's, not cached)."""
        self._check_online(path, "the size (for verify)")
        return int(self.fs.size(self._full(path)))

    def read_origin(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Bytes of ``path`` straight from the remote, neither from nor into the cache: what
        ``verify`` of a remote URL hashes, so it checks the remote copy, not cached bytes."""
        ranges = list(ranges)
        if not ranges:
            return []
        size = max(e for _, e in ranges)
        try:
            return [bytes(b) for b in self._fetch(path, ranges, cache_whole=None)]
        except RangeIgnored as whole:
            if len(whole.body) < size:
                raise IntegrityError(
                    f"{self.url}/{path}: the server ignored Range and sent {len(whole.body)} "
                    f"bytes, fewer than the {size} asked for."
                ) from None
            return [whole.body[s:e] for s, e in ranges]

    def readinto(self, path: str, requests: Sequence[tuple[int, memoryview]]) -> None:
        views = [buffer.cast("B") for _, buffer in requests]
        ranges = [(off, off + len(v)) for (off, _), v in zip(requests, views)]
        with self._lock:
            ranges, views = self._split_at_pieces(path, ranges, views)
            left = self._read_direct(path, np.asarray(ranges, dtype=np.int64).reshape(-1, 2), views)
        self._read_left(path, [ranges[i] for i in left], [views[i] for i in left])

    def readinto_spans(self, path: str, starts: np.ndarray, buffer: memoryview,
                       lo: np.ndarray, hi: np.ndarray) -> None:
        """:meth:`readinto` of ``buffer[lo[i]:hi[i]]`` from ``starts[i]`` (see
        :func:`~actstore.format.source.read_spans`): the warm path matches the arrays against
        the cached pieces as they are and makes a view only for the pieces it reads, so a
        scattered ``get`` costs no Python object per row before it reaches the disk."""
        buffer = buffer if buffer.ndim == 1 and buffer.format == "B" else buffer.cast("B")
        starts = np.asarray(starts, dtype=np.int64)
        r = np.stack([starts, starts + (np.asarray(hi, np.int64) - np.asarray(lo, np.int64))], axis=1)
        views = _Spans(buffer, lo, hi)
        with self._lock:
            if self._crosses_pieces(path, r):  # a range spans several pieces: the general way
                left = None
            else:
                left = self._read_direct(path, r, views)
        if left is None:
            self.readinto(path, [(int(starts[i]), views[i]) for i in range(len(views))])
            return
        self._read_left(path, [(int(r[i, 0]), int(r[i, 1])) for i in left], [views[i] for i in left])

    def _crosses_pieces(self, path: str, r: np.ndarray) -> bool:
        """Whether a range of ``r`` crosses the start of a cached piece (see _split_at_pieces)."""
        ident = self.ident(path)
        pieces = self._pieces.get(ident) if ident else None
        if pieces is None or not pieces.items or not len(r):
            return False
        starts = pieces.arrays()[0]
        return bool((np.searchsorted(starts, r[:, 1], side="left")
                     > np.searchsorted(starts, r[:, 0], side="right")).any())

    def _read_left(self, path: str, ranges: list[tuple[int, int]], views: list[memoryview]) -> None:
        """The general path for what the warm path left: cached pieces copied, misses fetched."""
        if not ranges:
            return
        parts = self._read(path, ranges)
        for view, part in zip(views, parts):
            if isinstance(part, list):  # several cached pieces: copy each into place
                pos = 0
                for p in part:
                    view[pos : pos + len(p)] = p
                    pos += len(p)
            else:
                view[:] = part

    def _split_at_pieces(self, path: str, ranges: list[tuple[int, int]],
                         views: list[memoryview]) -> tuple[list[tuple[int, int]], list[memoryview]]:
        """Ranges cut where cached pieces start, so a range spanning several pieces (a whole
        layer) takes the direct path piece by piece instead of being copied through bytes."""

        ident = self.ident(path)
        pieces = self._pieces.get(ident) if ident else None
        if pieces is None or not pieces.items or not ranges:
            return ranges, views
        starts = pieces.arrays()[0]
        r = np.asarray(ranges, dtype=np.int64)
        lo = np.searchsorted(starts, r[:, 0], side="right")
        hi = np.searchsorted(starts, r[:, 1], side="left")
        if not (hi > lo).any():
            return ranges, views
        out_r: list[tuple[int, int]] = []
        out_v: list[memoryview] = []
        for (a, b), v, i, j in zip(ranges, views, lo.tolist(), hi.tolist()):
            edges = [a, *starts[i:j].tolist(), b]
            for s, e in zip(edges[:-1], edges[1:]):
                out_r.append((s, e))
                out_v.append(v[s - a : e - a])
        return out_r, out_v

    def _read_direct(self, path: str, r: np.ndarray, views: Sequence[memoryview]) -> list[int]:
        """Warm fast path on a local cache: ranges that are each exactly one cached piece are
        read with scattering ``preadv`` calls (one per run of nearby pieces) straight into
        their views, then each view — memory private to this process — is checked against
        its piece's checksum, so what is checked is what is returned, whatever happens to
        the segment file meanwhile. Returns the positions of the ranges left for the general
        path (other shapes, misses, damaged pieces: dropped there and refetched)."""

        ident = self.ident(path)
        pieces = self._pieces.get(ident) if ident else None
        if pieces is None or not pieces.items or not len(r):
            return list(range(len(r)))
        starts, ends, keys, k0s = pieces.arrays()
        j = np.searchsorted(starts, r[:, 0], side="right") - 1
        jj = np.maximum(j, 0)
        ok = (j >= 0) & (starts[jj] == r[:, 0]) & (k0s[jj] == r[:, 0]) & (ends[jj] == r[:, 1])
        sel = np.flatnonzero(ok)
        if not sel.size:
            return list(range(len(r)))
        ks = j[sel]
        layout = self._layout(ident, pieces, ks)
        if layout is None:
            return list(range(len(r)))
        seg, off, hexs, fns, paths = layout
        si, so = seg[ks], off[ks]
        order = np.lexsort((so, si))
        sel, ks, si, so = sel[order], ks[order], si[order], so[order]
        stop = so + (r[sel, 1] - r[sel, 0])
        brk = np.flatnonzero((si[1:] != si[:-1]) | (so[1:] - stop[:-1] > LOCAL_RUN_GAP)) + 1
        bounds = [0, *brk.tolist(), int(sel.size)]
        left = np.flatnonzero(~ok).tolist()
        sel_l, ks_l, so_l = sel.tolist(), ks.tolist(), so.tolist()
        runs = list(zip(bounds[:-1], bounds[1:]))
        nbytes = int((r[sel, 1] - r[sel, 0]).sum())
        threads = piece_count(len(sel_l), nbytes, PARALLEL_BYTES)
        if threads > 1:  # a large read: cut the runs into even shares of pieces, one per thread
            cuts = np.linspace(0, len(sel_l), threads + 1).astype(np.int64).tolist()[1:-1]
            runs = _cut_runs(bounds, cuts)
        done = [(0, 0)] * len(runs)  # per run: (bytes read and proven, pieces found damaged)

        def share(lo: int, hi: int) -> None:  # preadv and xxhash release the GIL
            for t in range(lo, hi):
                b0, b1 = runs[t]
                read = self._read_run_spans if isinstance(views, _Spans) else self._read_run
                done[t] = read(ident, paths[int(si[b0])], sel_l[b0:b1], ks_l[b0:b1],
                               so_l[b0:b1], views, hexs, fns, left)

        in_pieces(share, len(runs), min(threads, len(runs)))
        self.counters["bytes_from_cache"] += sum(n for n, _ in done)
        self.counters["damaged_pieces"] += sum(k for _, k in done)
        return sorted(left)

    def _layout(self, ident: str, pieces: _Pieces, ks: Any) -> tuple[Any, Any, list[str], list[Any], list[str]] | None:
        """Where each piece of a file lies: segment (index into ``paths``; -1: not located
        yet), offset in it, and its checksum (expected hex, hash function). Kept across calls
        while the pieces are unchanged; dropped when a located segment turns out gone or bad."""

        arrays = pieces.arrays()
        starts, ends, keys, _ = arrays
        cached = self._layouts.get(ident)
        if cached is None or cached[0] is not arrays:
            n = len(starts)
            cached = self._layouts[ident] = (arrays, np.full(n, -1, np.int64), np.zeros(n, np.int64),
                                             [""] * n, [None] * n, [], {})
        _, seg, off, hexs, fns, paths, where_path = cached
        new = np.unique(ks[seg[ks] < 0]).tolist()
        if new:
            found = self.store.locate([keys[k] for k in new])
            if found is None:
                return None
            for k in new:
                e = found[keys[k]]
                fn, hexv, n = split_digest(e.digest)
                if n != e.length or n != int(ends[k] - starts[k]):
                    return None
                p = self.store.segment_path(e.sid)
                if p not in where_path:
                    where_path[p] = len(paths)
                    paths.append(p)
                seg[k], off[k], hexs[k], fns[k] = where_path[p], e.offset, hexv, fn
        return seg, off, hexs, fns, paths

    def _read_run(self, ident: str, seg: str, idx: list[int], ks: list[int], offs: list[int],
                  views: Sequence[memoryview], hexs: list[str], fns: list[Any], left: list[int]) -> tuple[int, int]:
        """Read one run of nearby pieces of segment file ``seg`` into their views (gaps into
        scratch memory), then check each view; failures go to ``left``, and their segment is
        dropped as damaged (or, if gone, looked up again by the general path). Returns the
        bytes read and proven, and the count of damaged pieces (summed by the caller, so runs
        read on several threads share no counter)."""
        fd = self._open_segment(ident, seg)
        if fd is None:
            left.extend(idx)
            return 0, 0
        vs = list(map(views.__getitem__, idx))  # each piece's view, made once
        lens = list(map(len, vs))
        ends = list(map(operator.add, offs, lens))
        short: set[int] = set()
        try:
            for c in range(0, len(idx), _IOV_PIECES):
                d = min(len(idx), c + _IOV_PIECES)
                start, pos = offs[c], ends[d - 1]
                if offs[c + 1 : d] == ends[c : d - 1]:  # back to back (the usual case)
                    iov: list[Any] = vs[c:d]
                else:
                    iov, at = [], start
                    for v, o, e in zip(vs[c:d], offs[c:d], ends[c:d]):
                        if o > at:
                            iov.append(self._gap(o - at))
                        iov.append(v)
                        at = e
                got = os.preadv(fd, iov, start)
                if got != pos - start:
                    short.update(t for t in range(c, d) if ends[t] > start + got)
        finally:
            os.close(fd)
        fn = fns[ks[0]]
        if not short and list(map(fns.__getitem__, ks)).count(fn) == len(ks):
            # one hash function (the usual case): every check in one pass at C speed
            want = list(map(hexs.__getitem__, ks))
            got_hex = list(map(fn, vs))
            bad = [] if got_hex == want else [t for t, (a, b) in enumerate(zip(got_hex, want)) if a != b]
        else:
            bad = [t for t, (v, k) in enumerate(zip(vs, ks)) if t in short or fns[k](v) != hexs[k]]
        if not bad:
            return sum(lens), 0
        self._report_damaged(ident, seg, [idx[t] for t in bad], len(idx), truncated=bad[0] in short, left=left)
        bad_set = set(bad)
        return sum(n for t, n in enumerate(lens) if t not in bad_set), len(bad)

    def _read_run_spans(self, ident: str, seg: str, idx: list[int], ks: list[int], offs: list[int],
                        views: _Spans, hexs: list[str], fns: list[Any], left: list[int]) -> tuple[int, int]:
        """:meth:`_read_run` for views that are spans of one buffer (a ``get``): pieces back
        to back both in the segment and in the buffer are read as one span, and a span that
        holds whole blocks of the segment (see :data:`~actstore.cache.segments.BLOCK_ENTRIES`)
        is checked one hash per block; every other piece by its own checksum. A block that
        fails is checked piece by piece, so only damaged pieces are refetched."""
        fd = self._open_segment(ident, seg)
        if fd is None:
            left.extend(idx)
            return 0, 0
        ia = np.asarray(idx, dtype=np.int64)
        off = np.asarray(offs, dtype=np.int64)
        lo = views.lo[ia]
        n = views.hi[ia] - lo
        end = off + n
        # spans: pieces back to back in the segment and in the buffer
        cut = np.flatnonzero((off[1:] != end[:-1]) | (lo[1:] != lo[:-1] + n[:-1])) + 1
        first = np.concatenate(([0], cut))
        last = np.concatenate((cut, [len(idx)])) - 1
        s_off, s_end, s_lo = off[first], end[last], lo[first]
        spans = views.at(s_lo.tolist(), (s_lo + (s_end - s_off)).tolist())
        got_to = np.empty(len(first), dtype=np.int64)  # per span: where its read stopped
        try:
            s_off_l, s_end_l = s_off.tolist(), s_end.tolist()
            for c in range(0, len(spans), _IOV_PIECES):
                d = min(len(spans), c + _IOV_PIECES)
                iov: list[Any] = []
                at = s_off_l[c]
                for v, o, e in zip(spans[c:d], s_off_l[c:d], s_end_l[c:d]):
                    if o > at:
                        iov.append(self._gap(o - at))
                    iov.append(v)
                    at = e
                got = os.preadv(fd, iov, s_off_l[c])
                got_to[c:d] = s_off_l[c] + got
        finally:
            os.close(fd)
        span_of = np.repeat(np.arange(len(first)), last - first + 1)
        short = end > got_to[span_of]
        ok = np.zeros(len(idx), dtype=bool)
        blocks = self._blocks_of(seg)
        if blocks is not None and not short.any():
            b_off, b_end, b_fn, b_hex = blocks
            b = np.searchsorted(b_off, off, side="right") - 1
            bb = np.maximum(b, 0)
            inside = ((b >= 0) & (end <= b_end[bb]) & (b_off[bb] >= s_off[span_of])
                      & (b_end[bb] <= s_end[span_of]))
            if inside.any():
                whole, at = np.unique(b[inside], return_index=True)
                pos = np.flatnonzero(inside)[at]  # one piece of each block: where it lies
                start = lo[pos] - (off[pos] - b_off[whole])
                bviews = views.at(start.tolist(), (start + (b_end[whole] - b_off[whole])).tolist())
                good = np.array([b_fn[w](v) == b_hex[w] for w, v in zip(whole.tolist(), bviews)], dtype=bool)
                ok[inside] = np.isin(b[inside], whole[good])
        rest = np.flatnonzero(~ok & ~short).tolist()
        bad = np.flatnonzero(short).tolist()
        if rest:
            vs = views.at(lo[rest].tolist(), (lo[rest] + n[rest]).tolist())
            kr = [ks[t] for t in rest]
            bad += [t for t, v, k in zip(rest, vs, kr) if fns[k](v) != hexs[k]]
        if not bad:
            return int(n.sum()), 0
        self._report_damaged(ident, seg, [idx[t] for t in bad], len(idx), truncated=bool(short.any()), left=left)
        return int(n.sum() - n[bad].sum()), len(bad)

    def _open_segment(self, ident: str, seg: str) -> int | None:
        """A read descriptor of segment file ``seg``; None when another process evicted it
        (this file's piece locations are then looked up again)."""
        try:
            return os.open(seg, os.O_RDONLY)
        except FileNotFoundError:
            self._layouts.pop(ident, None)
            return None

    def _report_damaged(self, ident: str, seg: str, bad: list[int], of: int, *, truncated: bool,
                        left: list[int]) -> None:
        """Pieces ``bad`` (positions of the read) of segment ``seg`` failed: they go to ``left``
        for the general path, and the segment is dropped as damaged."""
        self._layouts.pop(ident, None)
        left.extend(bad)
        what = "truncated" if truncated else "fails its checksum"
        self.store.report_damage(_segment_id(seg), f"a cached piece of {self.url} {what} (read {len(bad)} bad of {of})")

    def _blocks_of(self, seg: str) -> tuple[np.ndarray, np.ndarray, list[Any], list[str]] | None:
        """Segment ``seg``'s block checksums as (starts, ends, hash functions, expected hex);
        None when it has none. Segments never change, so this is kept."""
        if seg not in self._block_cache:
            blocks = self.store.blocks(_segment_id(seg))
            parts = [split_digest(d) for _, _, d in blocks]
            self._block_cache[seg] = None if not blocks else (
                np.asarray([o for o, _, _ in blocks], dtype=np.int64),
                np.asarray([o + k for o, k, _ in blocks], dtype=np.int64),
                [fn if k == length else _never_matches for (fn, _, k), (_, length, _) in zip(parts, blocks)],
                [h for _, h, _ in parts])
        return self._block_cache[seg]

    def _gap(self, n: int) -> memoryview:
        """Scratch memory for bytes between pieces (shared: its contents are never used)."""
        if len(self._scratch) < n:
            self._scratch = bytearray(n)
        return memoryview(self._scratch)[:n]

    def _read(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[Any]:
        """Per range: a bytes-like, or a list of bytes-likes to concatenate."""
        if not ranges:
            return []
        ident = self.ident(path)
        if ident is None:  # nothing to key it by: read through, uncached
            return self._read_through(path, ranges)
        with self._lock:
            for _ in range(3):  # a cached piece dropped as damaged is refetched on the next pass
                out = self._try_read(path, ident, ranges)
                if out is not None:
                    return out
        # the cache keeps getting damaged under us: serve this read from the origin alone
        log.warning("%s/%s: cached pieces kept failing their checksums (the cache at %s is being "
                    "damaged); this read is served from the origin", self.url, path, self.cache.url)
        return self._read_through(path, ranges)

    def _read_through(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[Any]:
        """The ranges straight from the origin (a server that ignores Range sends the file)."""
        size = self.size(path)
        try:
            return self._fetch(path, list(ranges), cache_whole=size)
        except RangeIgnored as whole:
            body = _whole(whole, size, self.url, path)
            return [body[s:e] for s, e in ranges]

    # -- the cached path -----------------------------------------------------------------
    def _pieces_for(self, path: str, ident: str) -> _Pieces:
        """This origin's cached pieces of ``path``, plus pieces of a proven copy of it."""
        if ident not in self._pieces:
            prefixes = tuple(p for p in (f"r:{ident}:", self._proven_prefix(path)) if p)
            spans = []
            for key in self.store.keys():
                if key.startswith(prefixes):
                    s, e = key.rsplit(":", 2)[1:]
                    spans.append((int(s), int(e), key))
            self._pieces[ident] = _Pieces(spans)
        return self._pieces[ident]

    def _known_size(self, path: str) -> int | None:
        rec = self.files.get(path)
        return int(rec["size"]) if rec is not None else self._sizes.get(path)

    def _try_read(self, path: str, ident: str, ranges: Sequence[tuple[int, int]]) -> list[bytes] | None:
        pieces = self._pieces_for(path, ident)
        plans = [pieces.plan(s, e) for s, e in ranges]
        gaps = [(a, b) for a, b, _ in coalesce([(a, b) for plan in plans for a, b, key, _ in plan
                                                 if key is None], gap=DATASET_GAP)]
        fresh: dict[str, bytes] = {}
        if gaps:
            fresh = self._fill(path, ident, gaps, pieces)
            pieces = self._pieces_for(path, ident)  # replaced when a whole file came back
            plans = [pieces.plan(s, e) for s, e in ranges]
        keys = sorted({key for plan in plans for _, _, key, _ in plan if key is not None} - set(fresh))
        got: dict[str, Any] = dict(zip(keys, self.store.get_many(keys, refresh_on_miss=False)))
        got.update((k, (blob, "raw", {})) for k, blob in fresh.items())
        bad = [k for k, v in got.items() if v is None]
        if bad:
            for k in bad:
                pieces.remove_key(k)
            return None
        out: list[Any] = []
        for plan in plans:
            parts = [got[key][0][a - k0 : b - k0] for a, b, key, k0 in plan]  # type: ignore[index]
            out.append(parts[0] if len(parts) == 1 else parts)
        if not gaps:
            self.counters["bytes_from_cache"] += sum(e - s for s, e in ranges)
        return out

    def _fill(self, path: str, ident: str, gaps: list[tuple[int, int]], pieces: _Pieces) -> dict[str, bytes]:
        """Fetch ``gaps``, admit them to the cache, and return them by key (so this read
        is served even when the cache cannot be written)."""
        size = self.size(path)
        try:
            blobs = self._fetch(path, gaps, cache_whole=size)
        except RangeIgnored as whole:
            body = _whole(whole, size, self.url, path)
            pieces = self._pieces[ident] = _Pieces([])
            gaps, blobs = [(0, size)], [body]
        fresh: dict[str, Any] = {}
        for (a, b), blob in zip(gaps, blobs):
            prefix = self._admission_prefix(path, ident, a, b, blob)
            view = memoryview(blob)
            for s in range(a, b, PIECE_BYTES):
                e = min(b, s + PIECE_BYTES)
                key = f"{prefix}{s}:{e}"
                fresh[key] = view[s - a : e - a]
                pieces.add(s, e, key)
        self._admit(fresh)
        return fresh

    def _admission_prefix(self, path: str, ident: str, a: int, b: int, blob: bytes) -> str:
        """A whole file whose sha256, computed here, equals the origin's claim is keyed by
        content (shared); everything else by origin (see the module docstring)."""
        if a == 0 and b == len(blob) and b == self._known_size(path):
            proven = self._proven_prefix(path)
            if proven is not None and hashlib.sha256(blob).hexdigest() == proven.split(":")[2]:
                return proven
        return f"r:{ident}:"

    def _admit(self, fresh: dict[str, bytes]) -> None:
        """Store fetched pieces and publish them (one segment per network round, visible to
        other processes). A cache that cannot be written is reported once; reads go on."""
        try:
            for key, blob in fresh.items():
                self.store.put(key, blob)
            self.store.flush()
        except CacheError as exc:
            self.store.discard_pending()
            self.counters["uncached_fetches"] += 1
            if self.counters["uncached_fetches"] == 1:
                log.warning("%s; reading %s without caching", exc, self.url)

    # -- the network -----------------------------------------------------------------------
    def _check_online(self, path: str, what: str) -> None:
        if config.offline():
            raise OfflineError(
                f"Offline mode (ACTSTORE_OFFLINE or HF_HUB_OFFLINE) is on and {what} of "
                f"{self.url}/{path} is not in the cache at {self.cache.url}; read it once while "
                "online, or unset the offline variable."
            )

    def _fetch(self, path: str, ranges: list[tuple[int, int]], *, cache_whole: int | None) -> list[bytes]:
        if config.offline():
            s, e = ranges[0]
            self._check_online(path, f"{len(ranges)} byte range(s) (first: bytes {s}-{e})")
        full = self._full(path)
        pin = self._pin(path)
        http = fs_is_http(self.fs)
        blobs = fetch_ranges(self.fs, full, ranges, pin=pin, pins=self.pins, path=path,
                             first_alone=http and self.range_ok is not True, counters=self.counters)
        if http:
            ignored = next((b for b in blobs if isinstance(b, RangeIgnored)), None)
            if ignored is not None:
                self._note_range_ignored(path)
                raise ignored
            if not any(isinstance(b, Exception) for b in blobs):
                self.range_ok = True
        out = []
        for blob, (s, e) in zip(blobs, ranges):
            if isinstance(blob, Exception):
                raise blob
            out.append(self._checked(path, blob, s, e, cache_whole))
        return out

    def _checked(self, path: str, blob: bytes, s: int, e: int, size: int | None) -> bytes:
        if len(blob) == e - s:
            return blob
        if size is not None and len(blob) == size:
            self._note_range_ignored(path)
            raise RangeIgnored(blob)
        raise IntegrityError(
            f"{self.url}/{path}: asked for bytes {s}-{e} ({e - s} bytes) but the server sent "
            f"{len(blob)}; the file changed or the server mishandles Range requests."
        )

    def _note_range_ignored(self, path: str) -> None:
        self.range_ok = False
        log.warning("%s ignores HTTP Range requests (200 instead of 206 for %s); whole files "
                    "are downloaded and cached instead of byte ranges.", self.url, path)


#: Pieces per ``preadv`` call (each takes one or two of the IOV_MAX = 1024 buffers).
_IOV_PIECES = 500


def _never_matches(data: Any) -> str:
    return ""


def _segment_id(seg: str) -> str:
    """The segment id of a segment file's path."""
    return seg.rsplit("/", 1)[-1].removesuffix(".seg")


def _cut_runs(bounds: list[int], cuts: list[int]) -> list[tuple[int, int]]:
    """The runs ``bounds[i]:bounds[i + 1]`` of piece positions, also cut at ``cuts`` (so a
    single long run can be shared by several threads; each part is read on its own)."""
    edges = sorted(set(bounds) | {c for c in cuts if bounds[0] < c < bounds[-1]})
    return list(zip(edges[:-1], edges[1:]))


#: The dataset's index: the file whose version proves every other file's.
_ANCHOR = INDEX_FILE.format(split="train", part=0, parts=1)


def _pin_from_ident(ident: str) -> Pin:
    """The pin of the index from the identity the open recorded (``etag:<tag>:<size>``,
    ``lm:<date>:<size>``, ``sha256:``/``git:`` ids), so the open costs no extra request."""
    kind, _, rest = ident.partition(":")
    value, _, size = rest.rpartition(":")
    n = int(size) if size.isdigit() else None
    if kind == "etag":
        return Pin(ident, value if value.startswith("W/") else f'"{value}"', None, n)
    if kind == "lm":
        return Pin(ident, None, value, n)
    return Pin(ident)


def _whole(exc: RangeIgnored, size: int, url: str, path: str) -> bytes:
    if len(exc.body) != size:
        raise IntegrityError(
            f"{url}/{path}: the server ignored Range and sent {len(exc.body)} bytes, but the file "
            f"is {size} bytes; refusing bytes that cannot be placed."
        )
    return exc.body
