"""``CachedSource``: a :class:`~actstore.format.source.ByteSource` over a remote dataset.

Every byte range read from the remote filesystem is stored in the :class:`UnifiedCache`
under the file's *content* identity — the sha256 the dataset metadata records for it (or,
for the index and for files without one, the remote ETag / Hub blob id) — so a cached byte
can never be stale: a rewritten file has a new identity. Reads ask only for the bytes not
cached yet, with no read-ahead, all ranges of one call in flight at once (``cat_ranges`` on
async filesystems, a thread pool otherwise).

A server that ignores ``Range`` answers 200 with the whole file. Over HTTP the status is
checked (the first request to a server is sent alone to find out); on every filesystem the
length of each answer is checked. Either way the whole body is then cached as the complete
file and slices are served from it, so wrong bytes are never returned.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import config
from ..errors import IntegrityError, OfflineError
from .mapped import SegmentMaps

__all__ = ["CachedSource", "RangeIgnored"]

log = logging.getLogger("actstore.cache")

#: Requests in flight at once for one read call.
CONCURRENCY = 16
#: Warm reads of at least this many single pieces copy from kept segment mappings.
MAPPED_MIN_PIECES = 16


class RangeIgnored(Exception):
    """Internal: the server sent the whole file where a range was asked for."""

    def __init__(self, body: bytes) -> None:
        super().__init__("Range ignored")
        self.body = body


class _Pieces:
    """Disjoint cached intervals of one file: ``[a, b)`` served from entry ``key`` at ``k0``."""

    def __init__(self, spans: list[tuple[int, int, str]]) -> None:
        self.starts: list[int] = []
        self.items: list[tuple[int, int, str, int]] = []
        self._arrays: tuple[Any, Any, list[str], list[int]] | None = None
        cur = -1
        for s, e, key in sorted(spans):
            if e > cur:
                self.starts.append(max(s, cur))
                self.items.append((max(s, cur), e, key, s))
                cur = e

    def arrays(self) -> tuple[Any, Any, list[str], list[int]]:
        """(starts, ends) as int64 arrays, plus keys and key starts; rebuilt after changes."""
        import numpy as np

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


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


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

    def __init__(self, cache: Any, fs: Any, root: str, *, url: str, index_id: str | None) -> None:
        self.cache, self.store = cache, cache.store
        self.fs, self.root, self.url, self.index_id = fs, root.rstrip("/"), url, index_id
        self.files: dict[str, dict[str, Any]] = {}
        self.index_path: str | None = None
        self._sizes: dict[str, int] = {}
        self._pieces: dict[str, _Pieces] = {}
        self._layouts: dict[str, tuple[Any, Any, Any, list[str]]] = {}  # see _layout
        self._lock = threading.RLock()
        self._maps = SegmentMaps()  # used under self._lock
        self.range_ok: bool | None = None
        self.counters = {"requests": 0, "bytes_fetched": 0, "bytes_from_cache": 0}

    # -- identities ----------------------------------------------------------------------
    def bind_files(self, files: dict[str, dict[str, Any]]) -> None:
        """Give the ``actstore:files`` records (size, sha256) read from the index."""
        self.files = dict(files)

    def set_size(self, path: str, size: int) -> None:
        self._sizes[path] = int(size)

    def ident(self, path: str) -> str | None:
        rec = self.files.get(path)
        if rec is not None:
            return f"sha256:{rec['sha256']}"
        if self.index_id is None:
            return None
        return self.index_id if path == self.index_path else f"{self.index_id}/{path}"

    def _full(self, path: str) -> str:
        return f"{self.root}/{path}"

    # -- ByteSource ----------------------------------------------------------------------
    def size(self, path: str) -> int:
        rec = self.files.get(path)
        if rec is not None:
            return int(rec["size"])
        if path not in self._sizes:
            ident = self.ident(path)
            cached = self.store.get(f"m:size:{ident}") if ident else None
            if cached is not None:
                self._sizes[path] = int(cached)
            else:
                self._check_online(path, "its size")
                self._sizes[path] = int(self.fs.size(self._full(path)))
                if ident:
                    self.store.put(f"m:size:{ident}", str(self._sizes[path]).encode())
        return self._sizes[path]

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return [bytes(b) for b in self._read(path, ranges)]

    def readinto(self, path: str, requests: Sequence[tuple[int, memoryview]]) -> None:
        views = [buffer.cast("B") for _, buffer in requests]
        ranges = [(off, off + len(v)) for (off, _), v in zip(requests, views)]
        with self._lock:
            left = self._read_direct(path, ranges, views)
        if not left:
            return
        views = [views[i] for i in left]
        parts = self._read(path, [ranges[i] for i in left])
        for view, part in zip(views, parts):
            if isinstance(part, list):  # several cached pieces: copy each into place
                pos = 0
                for p in part:
                    view[pos : pos + len(p)] = p
                    pos += len(p)
            else:
                view[:] = part

    def _read_direct(self, path: str, ranges: list[tuple[int, int]], views: list[memoryview]) -> list[int]:
        """Warm fast path on a local cache: ranges covered by cached pieces that were already
        checked in this process are read straight into their buffers. Returns the positions
        of the ranges left for the checked path."""
        import numpy as np

        ident = self.ident(path)
        pieces = self._pieces.get(ident) if ident else None
        if pieces is None or not pieces.items or not ranges:
            return list(range(len(ranges)))
        starts, ends, keys, k0s = pieces.arrays()
        r = np.asarray(ranges, dtype=np.int64)
        j0 = np.searchsorted(starts, r[:, 0], side="right") - 1
        j1 = np.searchsorted(starts, r[:, 1] - 1, side="right") - 1
        ok = (j0 >= 0) & (j0 == j1) & (ends[np.maximum(j0, 0)] >= r[:, 1])
        for i in np.flatnonzero((j0 >= 0) & (j1 > j0)).tolist():  # spans adjacent pieces
            span = slice(int(j0[i]), int(j1[i]) + 1)
            ok[i] = bool((ends[span][:-1] == starts[span][1:]).all() and ends[int(j1[i])] >= r[i, 1])
        sel = np.flatnonzero(ok)
        multi = sel[j1[sel] > j0[sel]]
        spans = [np.arange(j0[i], j1[i] + 1) for i in multi.tolist()]
        used = np.unique(np.concatenate([j0[sel], *spans])) if sel.size else sel
        layout = self._layout(ident, pieces, used)
        if layout is None:
            return list(range(len(ranges)))
        shift, seg, paths = layout
        single = sel[j1[sel] == j0[sel]]
        offsets = (r[single, 0] + shift[j0[single]]).tolist()
        if not _pread_pieces(ranges, views, paths, single.tolist(), offsets, seg[j0[single]].tolist(),
                             multi.tolist(), j0, ends, shift, seg, self._maps):
            return list(range(len(ranges)))
        self.counters["bytes_from_cache"] += int((r[sel, 1] - r[sel, 0]).sum())
        return np.flatnonzero(~ok).tolist()

    def _layout(self, ident: str, pieces: _Pieces, used: Any) -> tuple[Any, Any, list[str]] | None:
        """Per piece of a file: ``shift`` (segment offset minus file offset) and ``seg`` (index
        into ``paths``, -1 if not located yet), for pieces checked in this process. Kept
        across calls while the pieces and their segment files are unchanged."""
        import numpy as np

        arrays = pieces.arrays()
        starts, _, keys, k0s = arrays
        cached = self._layouts.get(ident)
        if cached is None or cached[0] is not arrays:
            n = len(starts)
            cached = self._layouts[ident] = (arrays, np.zeros(n, np.int64), np.full(n, -1, np.int64), [])
        _, shift, seg, paths = cached
        new = used[seg[used] < 0].tolist()
        if new:
            where = self.store.locate_trusted([keys[k] for k in new])
            if where is None:
                return None
            for k in new:
                path, off = where[keys[k]]
                if path not in paths:
                    paths.append(path)
                seg[k], shift[k] = paths.index(path), off - int(k0s[k])
        if not self.store.segments_unchanged(paths):
            del self._layouts[ident]
            return None
        return shift, seg, paths

    def _read(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[Any]:
        """Per range: a bytes-like, or a list of bytes-likes to concatenate."""
        if not ranges:
            return []
        ident = self.ident(path)
        if ident is None:  # nothing to key it by: read through, uncached
            size = self.size(path)
            try:
                return self._fetch(path, list(ranges), cache_whole=size)
            except RangeIgnored as whole:
                body = _whole(whole, size, self.url, path)
                return [body[s:e] for s, e in ranges]
        with self._lock:
            for _ in range(3):  # a cached piece dropped as damaged is refetched on the next pass
                out = self._try_read(path, ident, ranges)
                if out is not None:
                    return out
        raise IntegrityError(f"{self.url}/{path}: cached bytes kept failing their checksums.")

    # -- the cached path -----------------------------------------------------------------
    def _pieces_for(self, ident: str) -> _Pieces:
        if ident not in self._pieces:
            prefix = f"r:{ident}:"
            spans = []
            for key in self.store.keys():
                if key.startswith(prefix):
                    s, e = key[len(prefix):].split(":")
                    spans.append((int(s), int(e), key))
            self._pieces[ident] = _Pieces(spans)
        return self._pieces[ident]

    def _try_read(self, path: str, ident: str, ranges: Sequence[tuple[int, int]]) -> list[bytes] | None:
        pieces = self._pieces_for(ident)
        plans = [pieces.plan(s, e) for s, e in ranges]
        gaps = _merge([(a, b) for plan in plans for a, b, key, _ in plan if key is None])
        if gaps:
            self._fill(path, ident, gaps, pieces)
            pieces = self._pieces_for(ident)  # replaced when a whole file came back
            plans = [pieces.plan(s, e) for s, e in ranges]
        keys = sorted({key for plan in plans for _, _, key, _ in plan if key is not None})
        got = dict(zip(keys, self.store.get_many(keys, refresh_on_miss=False)))
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

    def _fill(self, path: str, ident: str, gaps: list[tuple[int, int]], pieces: _Pieces) -> None:
        size = self.size(path)
        try:
            blobs = self._fetch(path, gaps, cache_whole=size)
        except RangeIgnored as whole:
            key = f"r:{ident}:0:{size}"
            self.store.put(key, _whole(whole, size, self.url, path))
            self._pieces[ident] = _Pieces([(0, size, key)])
            self.store.flush()
            return
        for (a, b), blob in zip(gaps, blobs):
            key = f"r:{ident}:{a}:{b}"
            self.store.put(key, blob)
            pieces.add(a, b, key)
        self.store.flush()  # one segment per network round: visible to other processes

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
        self.counters["requests"] += len(ranges)
        if _is_http(self.fs):
            blobs = _http_fetch(self, full, ranges)
        elif getattr(self.fs, "async_impl", False):
            blobs = self.fs.cat_ranges([full] * len(ranges), [s for s, _ in ranges],
                                       [e for _, e in ranges], on_error="return")
        else:
            blobs = _threaded_fetch(self.fs, full, ranges)
        out = []
        for blob, (s, e) in zip(blobs, ranges):
            if isinstance(blob, Exception):
                raise blob
            self.counters["bytes_fetched"] += len(blob)
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


def _pread_pieces(ranges: list[tuple[int, int]], views: list[memoryview], paths: list[str],
                  single: list[int], offsets: list[int], fdix: list[int], multi: list[int],
                  j0: Any, ends: Any, shift: Any, seg: Any, maps: SegmentMaps) -> bool:
    """Read ranges from checked segment files straight into their views: ``single`` ranges
    lie in one piece (at ``offsets`` of segment ``paths[fdix]``), ``multi`` ranges span
    adjacent pieces. Many small single pieces are copied out of kept mappings (``maps``), the
    rest read with ``preadv``. False when a segment is gone or short (the checked path then
    decides)."""
    import os

    if len(single) >= MAPPED_MIN_PIECES:
        if not _copy_mapped(views, paths, single, offsets, fdix, maps):
            return False
        single = []
    fds: list[int] = []
    try:
        for path in paths:
            fds.append(os.open(path, os.O_RDONLY))
        for i, off, fx in zip(single, offsets, fdix):
            if os.preadv(fds[fx], [views[i]], off) != len(views[i]):
                return False
        for i in multi:
            (s, e), k, pos = ranges[i], int(j0[i]), ranges[i][0]
            while pos < e:
                stop = min(e, int(ends[k]))
                if os.preadv(fds[int(seg[k])], [views[i][pos - s : stop - s]],
                             pos + int(shift[k])) != stop - pos:
                    return False
                pos, k = stop, k + 1
        return True
    except FileNotFoundError:
        return False
    finally:
        for fd in fds:
            os.close(fd)


def _copy_mapped(views: list[memoryview], paths: list[str], single: list[int], offsets: list[int],
                 fdix: list[int], maps: SegmentMaps) -> bool:
    """Copy each single-piece range out of its segment's kept mapping; False if one is short."""
    mapped = [maps.view(p) for p in paths]
    for i, off, fx in zip(single, offsets, fdix):
        src, n = mapped[fx], len(views[i])
        if src is None or off + n > len(src):
            return False
        views[i][:] = src[off : off + n]
    return True


def _whole(exc: RangeIgnored, size: int, url: str, path: str) -> bytes:
    if len(exc.body) != size:
        raise IntegrityError(
            f"{url}/{path}: the server ignored Range and sent {len(exc.body)} bytes, but the file "
            f"is {size} bytes; refusing bytes that cannot be placed."
        )
    return exc.body


def _is_http(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "http" in protocol or "https" in protocol


def _threaded_fetch(fs: Any, full: str, ranges: list[tuple[int, int]]) -> list[Any]:
    def one(span: tuple[int, int]) -> Any:
        try:  # cache_type="none": no 5 MiB read-ahead behind a small range
            with fs.open(full, "rb", cache_type="none") as f:
                f.seek(span[0])
                return f.read(span[1] - span[0])
        except Exception as exc:  # returned, then raised in order by the caller
            return exc

    if len(ranges) == 1:
        return [one(ranges[0])]
    with ThreadPoolExecutor(min(CONCURRENCY, len(ranges))) as pool:
        return list(pool.map(one, ranges))


def _http_fetch(src: CachedSource, full: str, ranges: list[tuple[int, int]]) -> list[Any]:
    """Range GETs on the fsspec HTTP session, checking each status (206 vs 200)."""
    import asyncio

    from fsspec.asyn import sync

    fs = src.fs

    async def get(session: Any, sem: Any, s: int, e: int) -> Any:
        async with sem:
            headers = {**fs.kwargs.get("headers", {}), "Range": f"bytes={s}-{e - 1}"}
            async with session.get(fs.encode_url(full), headers=headers) as r:
                if r.status == 404:
                    return FileNotFoundError(full)
                if r.status not in (200, 206):
                    return OSError(f"GET {full} with Range bytes={s}-{e - 1} returned {r.status}")
                body = await r.read()
                if r.status == 200 and (s, e) != (0, len(body)):
                    return RangeIgnored(body)
                return body

    async def run(spans: list[tuple[int, int]]) -> list[Any]:
        session = await fs.set_session()
        sem = asyncio.Semaphore(CONCURRENCY)
        return await asyncio.gather(*(get(session, sem, s, e) for s, e in spans))

    # until the server has answered one range with a 206, send one request alone: a server
    # that ignores Range would otherwise send the whole file once per range
    first = sync(fs.loop, run, ranges[:1]) if src.range_ok is not True else []
    if first and not isinstance(first[0], RangeIgnored):
        src.range_ok = True
    if first and isinstance(first[0], RangeIgnored):
        src._note_range_ignored(full)
        raise first[0]
    rest = sync(fs.loop, run, ranges[len(first):]) if len(ranges) > len(first) else []
    for blob in rest:
        if isinstance(blob, RangeIgnored):
            src._note_range_ignored(full)
            raise blob
    return list(first) + list(rest)
