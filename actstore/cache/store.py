"""``SegmentStore``: a content-addressed, bounded, multi-process-safe byte store on fsspec.

Entries (``key -> bytes``) are buffered in memory and published in immutable segment
files (see :mod:`actstore.cache.segments`), never one file per entry. Every entry carries a
checksum (:func:`~actstore.cache.segments.digest`) that is checked on every read, on the
bytes read into this process's memory, so a segment damaged or truncated *while* it is read
can never yield a wrong byte: a segment holding a bad entry (bit flip, truncation, damaged
index) is dropped whole, reported (a warning, ``problems`` and the ``dropped_segments``
counter), and its entries read as misses, so the caller refetches or recomputes them.
Eviction removes least-recently-used segments until the store fits ``max_bytes``, and the
orphans of killed writers (see :meth:`SegmentStore.orphans`).

A cache the process cannot write (a read-only mount, an immutable folder, another user's
files) still serves what it holds; a failed write of advisory data (access times) is logged
once, and maintenance that must write (``evict``, ``clear``) raises :class:`CacheError`.

Examples
--------
>>> import fsspec
>>> store = SegmentStore(fsspec.filesystem("memory"), "/doc-store")
>>> store.put("k", b"hello"); sid = store.flush()
>>> store.get("k")
b'hello'
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import CacheError, InvalidArgumentError
from ..format.ranges import SEGMENT_GAP, coalesce
from .segments import (
    Entry,
    SegmentInfo,
    atomic_put,
    block_digests,
    check_digest,
    decode_index,
    digest,
    encode_index,
    is_local,
    new_segment_id,
    writer_alive,
    writer_id,
)

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = ["SegmentStore"]

log = logging.getLogger("actstore.cache")

#: Pending bytes that trigger publishing a segment.
SEGMENT_BYTES = 64 << 20
#: An orphan whose writer cannot be checked (another host) is reclaimed after this long.
ORPHAN_GRACE_S = 3600.0


class SegmentStore:
    """Key -> bytes entries in segment files under ``root`` on the filesystem ``fs``.

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
        Where the cache lives (local, ``memory://``, ``s3://`` ...).
    root : str
        Folder of the store on ``fs``.
    max_bytes : int, optional
        Bound on published bytes; checked after each flush (None: unbounded).
    segment_bytes : int
        Pending bytes that trigger a flush.
    verify : {"first", "always"}
        Kept for compatibility; both check every entry's checksum on every read. (``"first"``
        used to trust an entry checked once while its file's size, mtime and inode were
        unchanged; a file damaged in place within one timestamp tick, or between the check
        and the read, then returned wrong bytes.)
    """

    def __init__(self, fs: AbstractFileSystem, root: str, *, max_bytes: int | None = None,
                 segment_bytes: int = SEGMENT_BYTES, verify: str = "first") -> None:
        if verify not in ("first", "always"):
            raise InvalidArgumentError(f"verify must be 'first' or 'always'; got {verify!r}.")
        self.verify = verify
        self.fs, self.root = fs, root.rstrip("/")
        self.max_bytes, self.segment_bytes = max_bytes, segment_bytes
        self._lock = threading.RLock()
        self._index: dict[str, list[Entry]] = {}  # newest segment first
        self._segments: dict[str, SegmentInfo] = {}
        self._seg_keys: dict[str, list[str]] = {}
        self._used: dict[str, float] = {}  # sid -> last use by this process
        self._used_dirty = False
        self._pending: list[tuple[str, bytes, str, dict[str, Any]]] = []
        self._pending_map: dict[str, int] = {}
        self._pending_bytes = 0
        self.problems: list[str] = []
        self.counters = {"hits": 0, "misses": 0, "puts": 0, "dropped_segments": 0,
                         "evicted_segments": 0, "reclaimed_orphans": 0, "write_errors": 0}
        self._loaded = False

    # -- paths ---------------------------------------------------------------------------
    def _seg(self, sid: str, ext: str) -> str:
        return f"{self.root}/segments/{sid}.{ext}"

    def _list(self, folder: str) -> list[str]:
        path = f"{self.root}/{folder}"
        try:
            self.fs.invalidate_cache(path)  # s3fs caches listings; other writers add files
            return [p.rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False)]
        except FileNotFoundError:
            return []

    # -- loading -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Pick up segments published (or evicted) by other processes since the last look."""
        with self._lock:
            names = self._list("segments")
            live = {n[:-4] for n in names if n.endswith(".idx")}
            for sid in set(self._segments) - live:  # evicted elsewhere
                self._forget(sid)
            for sid in sorted(live - set(self._segments)):
                self._load_segment(sid)
            self._loaded = True

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.refresh()

    def _load_segment(self, sid: str) -> None:
        try:
            raw = self.fs.cat_file(self._seg(sid, "idx"))
            info, entries = decode_index(raw, sid)
        except FileNotFoundError:
            return  # evicted between listing and reading
        except (ValueError, KeyError, TypeError) as exc:
            self._drop(sid, f"damaged segment index ({exc})")
            return
        self._segments[sid] = info
        self._seg_keys[sid] = [e.key for e in entries]
        for e in entries:
            self._index.setdefault(e.key, []).insert(0, e)

    def _forget(self, sid: str) -> None:
        self._segments.pop(sid, None)
        self._used.pop(sid, None)
        for key in self._seg_keys.pop(sid, ()):
            rest = [e for e in self._index.get(key, ()) if e.sid != sid]
            if rest:
                self._index[key] = rest
            else:
                self._index.pop(key, None)

    def _drop(self, sid: str, reason: str) -> None:
        """Delete a damaged segment (index first: it is the commit point) and report it."""
        msg = f"cache segment {sid} at {self.root} dropped: {reason}; its entries will be refetched"
        log.warning(msg)
        self.problems.append(msg)
        self.counters["dropped_segments"] += 1
        self._delete_segment(sid)

    def _remove(self, path: str, what: str) -> bool:
        """Delete one file; False if it was already gone, CacheError if it cannot be deleted."""
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._write_error(what, exc) from exc
        return True

    def _delete_segment(self, sid: str, *, must: bool = False) -> None:
        """Delete a segment's files (index first); ``must``: a failure raises CacheError,
        else (dropping a damaged segment during a read) it is logged and the read goes on."""
        try:
            for ext in ("idx", "seg"):
                try:
                    self.fs.rm_file(self._seg(sid, ext))
                except FileNotFoundError:
                    pass
        except OSError as exc:
            if must:
                raise self._write_error("delete a segment", exc) from exc
            self._note_write_error("delete damaged segment " + sid, exc)
        self._forget(sid)

    def _write_error(self, what: str, exc: OSError) -> CacheError:
        return CacheError(
            f"Cannot {what} in the cache at {self.root!r}: {exc.strerror or exc}; the cache is "
            "read-only here - point ACTSTORE_CACHE_DIR (or cache=) at a writable folder, or "
            "fix its permissions."
        )

    def _note_write_error(self, what: str, exc: OSError) -> None:
        self.counters["write_errors"] += 1
        if self.counters["write_errors"] == 1:
            log.warning("cache at %s is not writable (could not %s: %s); reads go on, "
                        "nothing new is cached", self.root, what, exc.strerror or exc)

    # -- writing -------------------------------------------------------------------------
    def put(self, key: str, data: bytes, *, codec: str = "raw", meta: dict[str, Any] | None = None) -> None:
        """Add an entry; it is readable at once here, and by others after :meth:`flush`."""
        with self._lock:
            if key in self._pending_map:
                return  # content-addressed: same key, same bytes
            self._pending_map[key] = len(self._pending)
            self._pending.append((key, bytes(data), codec, dict(meta or {})))
            self._pending_bytes += len(data)
            self.counters["puts"] += 1
            if self._pending_bytes >= self.segment_bytes:
                self.flush()

    def flush(self) -> str | None:
        """Publish pending entries as one segment; returns its id (None if nothing pending)."""
        with self._lock:
            if not self._pending:
                if self._used_dirty:  # a reader's uses still count for LRU elsewhere
                    self._save_access()
                return None
            sid, entries, chunks, pos = new_segment_id(), [], [], 0
            for key, data, codec, meta in self._pending:
                entries.append(Entry(key, sid, pos, len(data), digest(data), codec, meta))
                chunks.append(data)
                pos += len(data)
            data = b"".join(chunks)
            blocks = block_digests(data, entries)
            try:
                atomic_put(self.fs, self._seg(sid, "seg"), data)
                atomic_put(self.fs, self._seg(sid, "idx"), encode_index(sid, pos, entries, blocks))
            except OSError as exc:
                self.counters["write_errors"] += 1
                raise CacheError(
                    f"Could not write a cache segment under {self.root!r} ({exc}); check that the "
                    "cache location is writable, or point ACTSTORE_CACHE_DIR elsewhere."
                ) from exc
            self._pending, self._pending_map, self._pending_bytes = [], {}, 0
            self._segments[sid] = SegmentInfo(sid, pos, time.time(), len(entries), blocks)
            self._seg_keys[sid] = [e.key for e in entries]
            for e in entries:
                self._index.setdefault(e.key, []).insert(0, e)
            self._used[sid] = time.time()
            self._save_access()
        if self.max_bytes is not None:
            self.evict(self.max_bytes)
        return sid

    def discard_pending(self) -> None:
        """Forget entries not published yet (after a flush that could not write)."""
        with self._lock:
            self._pending, self._pending_map, self._pending_bytes = [], {}, 0

    def _save_access(self) -> None:
        """Record this process's segment uses for LRU; advisory, so a failed write is only logged."""
        self._used_dirty = False
        if self._used and not self.counters["write_errors"]:
            path = f"{self.root}/access/{writer_id()}.json"
            try:
                atomic_put(self.fs, path, json.dumps(self._used).encode())
            except OSError as exc:
                self._note_write_error("record access times", exc)

    # -- reading -------------------------------------------------------------------------
    def __contains__(self, key: str) -> bool:
        with self._lock:
            self._ensure_loaded()
            return key in self._pending_map or key in self._index

    def entry(self, key: str) -> Entry | None:
        """The newest published entry for ``key`` (no read, no check)."""
        with self._lock:
            self._ensure_loaded()
            found = self._index.get(key)
            return found[0] if found else None

    def get(self, key: str) -> bytes | None:
        """The checked bytes of ``key``, or None when absent or dropped as damaged."""
        got = self.get_many([key])
        return bytes(got[0][0]) if got[0] is not None else None

    def get_many(self, keys: Sequence[str], *, refresh_on_miss: bool = True
                 ) -> list[tuple[bytes, str, dict[str, Any]] | None]:
        """``(stored bytes, codec, meta)`` per key, checked; None for misses.

        Entries are read with one batched range request per segment file.
        """
        with self._lock:
            self._ensure_loaded()
            out = self._lookup(keys)
            if refresh_on_miss and any(o is None for o in out):
                self.refresh()  # another process may have published them since
                again = self._lookup([k for k, o in zip(keys, out) if o is None])
                it = iter(again)
                out = [o if o is not None else next(it) for o in out]
            self.counters["hits"] += sum(o is not None for o in out)
            self.counters["misses"] += sum(o is None for o in out)
            return out

    def _lookup(self, keys: Sequence[str]) -> list[tuple[bytes, str, dict[str, Any]] | None]:
        out: list[Any] = [None] * len(keys)
        todo: dict[str, list[tuple[int, Entry]]] = {}
        for i, key in enumerate(keys):
            p = self._pending_map.get(key)
            if p is not None:
                _, data, codec, meta = self._pending[p]
                out[i] = (data, codec, meta)
            elif key in self._index:
                e = self._index[key][0]
                todo.setdefault(e.sid, []).append((i, e))
        for sid, items in todo.items():
            blobs = self._read_segment(sid, [e for _, e in items])
            if blobs is None:
                # the segment is gone or dropped: fall back to other copies, if any
                again = self._lookup([keys[i] for i, _ in items])
                for (i, _), o in zip(items, again):
                    out[i] = o
                continue
            self._used[sid] = time.time()
            self._used_dirty = True
            for (i, e), blob in zip(items, blobs):
                out[i] = (blob, e.codec, e.meta)
        return out

    def _read_segment(self, sid: str, entries: list[Entry]) -> list[Any] | None:
        """Checked bytes-like views of ``entries`` of one segment (None: segment unusable)."""
        path = self._seg(sid, "seg")
        spans = coalesce([(e.offset, e.offset + e.length) for e in entries], gap=SEGMENT_GAP)
        try:
            if is_local(self.fs):
                raw = _pread_many(path, [(a, b - a) for a, b, _ in spans])
            else:
                raw = self.fs.cat_ranges([path] * len(spans), [a for a, _, _ in spans],
                                         [b for _, b, _ in spans], on_error="return")
        except FileNotFoundError:
            self._forget(sid)  # evicted by another process
            return None
        blobs: list[Any] = [None] * len(entries)
        for (a, _, members), chunk in zip(spans, raw):
            if isinstance(chunk, FileNotFoundError):
                self._forget(sid)
                return None
            if isinstance(chunk, Exception):
                raise CacheError(f"Reading cache segment {path!r} failed: {chunk}") from chunk
            view = memoryview(chunk)
            for i in members:
                e = entries[i]
                blobs[i] = view[e.offset - a : e.offset - a + e.length]
        for e, blob in zip(entries, blobs):
            if len(blob) != e.length:
                self._drop(sid, f"entry {e.key} truncated ({len(blob)} of {e.length} bytes)")
                return None
            if not check_digest(blob, e.digest):
                self._drop(sid, f"entry {e.key} fails its checksum (corrupted bytes)")
                return None
        return blobs

    def locate(self, keys: Sequence[str]) -> dict[str, Entry] | None:
        """The newest published entry of each key, when every key has one in a local segment
        file; else None. Lets a reader ``preadv`` cached bytes straight into its own buffer,
        which it must then check with :func:`~actstore.cache.segments.check_digest`."""
        if not is_local(self.fs):
            return None
        out: dict[str, Entry] = {}
        with self._lock:
            self._ensure_loaded()
            for key in keys:
                found = self._index.get(key)
                if not found:
                    return None
                out[key] = found[0]
        return out

    def blocks(self, sid: str) -> list[tuple[int, int, str]]:
        """``(offset, length, checksum)`` of the blocks of consecutive entries of segment
        ``sid`` (empty when unknown or not recorded): a reader that read a whole block into
        its own memory may check it with one hash (see :data:`~actstore.cache.segments.BLOCK_ENTRIES`)."""
        with self._lock:
            info = self._segments.get(sid)
            return info.blocks if info is not None else []

    def segment_path(self, sid: str) -> str:
        """Where the data file of segment ``sid`` lies on the cache's filesystem."""
        return self._seg(sid, "seg")

    def report_damage(self, sid: str, reason: str) -> None:
        """Drop segment ``sid`` as damaged (a reader found bad bytes in it)."""
        with self._lock:
            if sid in self._segments:
                self._drop(sid, reason)

    # -- inspection and eviction ---------------------------------------------------------
    def segments(self) -> list[SegmentInfo]:
        """Published segments, as seen after a refresh."""
        with self._lock:
            self.refresh()
            return sorted(self._segments.values(), key=lambda s: s.created)

    def keys(self) -> Iterable[str]:
        with self._lock:
            self._ensure_loaded()
            return list(self._index) + [k for k, *_ in self._pending]

    def last_used(self) -> dict[str, float]:
        """Last use of each segment by any process (creation time if never used)."""
        with self._lock:
            self._save_access()
            seen = {s.sid: s.created for s in self._segments.values()}
            for name in self._list("access"):
                try:
                    times = json.loads(self.fs.cat_file(f"{self.root}/access/{name}"))
                except (FileNotFoundError, ValueError):
                    continue
                for sid, t in times.items():
                    if sid in seen:
                        seen[sid] = max(seen[sid], float(t))
            return seen

    def total_bytes(self) -> int:
        with self._lock:
            return sum(s.size for s in self._segments.values())

    def orphans(self) -> list[dict[str, Any]]:
        """Files left by writers killed mid-publish: a ``.seg`` without its ``.idx``, or a
        temporary ``*.tmp-*`` file. One row each: ``name``, ``bytes``, ``age_s`` and
        ``reclaimable`` (its writer is gone, or it is older than ``ORPHAN_GRACE_S``).

        A live writer's files look the same for a moment (its ``.seg`` is published just
        before its ``.idx``), so only dead writers' files are reclaimable at once.
        """
        with self._lock:
            try:
                self.fs.invalidate_cache(f"{self.root}/segments")
                listing = self.fs.ls(f"{self.root}/segments", detail=True)
            except FileNotFoundError:
                return []
            names = {str(d["name"]).rsplit("/", 1)[-1]: d for d in listing}
            now, rows = time.time(), []
            for name, d in sorted(names.items()):
                orphan = ".tmp-" in name or (name.endswith(".seg") and name[:-4] + ".idx" not in names)
                if not orphan:
                    continue
                age = now - _mtime(d, now)
                alive = writer_alive(name)
                rows.append({"name": name, "bytes": int(d.get("size") or 0), "age_s": age,
                             "reclaimable": alive is False or age > ORPHAN_GRACE_S})
            return rows

    def reclaim_orphans(self) -> list[str]:
        """Delete the reclaimable orphans (see :meth:`orphans`); returns their names."""
        done = []
        with self._lock:
            for row in self.orphans():
                if not row["reclaimable"]:
                    continue
                if self._remove(f"{self.root}/segments/{row['name']}", "delete an orphaned file"):
                    done.append(row["name"])
            self.counters["reclaimed_orphans"] += len(done)
        return done

    def evict(self, max_bytes: int) -> list[str]:
        """Reclaim the orphans of dead writers, then delete least-recently-used segments
        until published bytes fit ``max_bytes``. Returns the evicted segment ids."""
        with self._lock:
            self.refresh()
            self.reclaim_orphans()
            total = self.total_bytes()
            if total <= max_bytes:
                return []
            evicted = []
            for sid, _ in sorted(self.last_used().items(), key=lambda kv: kv[1]):
                if total <= max_bytes:
                    break
                total -= self._segments[sid].size
                self._delete_segment(sid, must=True)
                evicted.append(sid)
            self.counters["evicted_segments"] += len(evicted)
            self._save_access()
            return evicted

    def compact(self, small_bytes: int | None = None) -> int:
        """Rewrite segments smaller than ``small_bytes`` (default: a quarter of
        ``segment_bytes``) into full-size ones; returns how many were merged away.

        Remote reads publish one small segment per network round, so a long-used cache
        gathers many; opening a cache reads every segment index, and this keeps that cheap.
        Safe with concurrent readers: entries are published in new segments before the old
        ones are deleted, and a reader that finds a segment gone looks again.
        """
        limit = self.segment_bytes // 4 if small_bytes is None else small_bytes
        with self._lock:
            self.flush()
            small = [s.sid for s in self.segments() if s.size < limit]
            if len(small) < 2:
                return 0
            for sid in small:
                entries = [e for k in self._seg_keys.get(sid, ()) for e in self._index.get(k, ())
                           if e.sid == sid]
                blobs = self._read_segment(sid, entries) if entries else []
                for e, blob in zip(entries, blobs or []):
                    self.put(e.key, bytes(blob), codec=e.codec, meta=e.meta)
            self.flush()
            for sid in small:
                self._delete_segment(sid)
            return len(small)

    def clear(self) -> None:
        """Remove every segment and access record (pending entries too)."""
        with self._lock:
            self._pending, self._pending_map, self._pending_bytes = [], {}, 0
            for folder in ("segments", "access"):
                for name in self._list(folder):
                    self._remove(f"{self.root}/{folder}/{name}", "delete a file")
            self._index.clear()
            self._seg_keys.clear()
            self._segments.clear()
            self._used.clear()


def _mtime(detail: dict[str, Any], default: float) -> float:
    """Modification time (epoch seconds) from an fsspec ``ls`` detail row, if it has one."""
    for name in ("mtime", "LastModified", "last_modified", "created"):
        value = detail.get(name)
        if isinstance(value, (int, float)):
            return float(value)
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
    return default


def _pread_many(path: str, spans: list[tuple[int, int]]) -> list[bytes]:
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        return [os.pread(fd, n, off) for off, n in spans]
    finally:
        os.close(fd)
