"""Exact byte ranges of remote files, pinned to the version a reader first saw.

Both remote byte sources — the plain :class:`~actstore.format.source.FsspecSource` and the
cache's :class:`~actstore.cache.remote.CachedSource` — fetch through this module, so they
share one answer to two questions:

*How are ranges fetched?* With no read-ahead, the ranges of one call merged per the store's
:func:`~actstore.format.ranges.request_policy` (exact bytes on S3 and HTTP; on the Hub, whose
resolve calls are rate-limited, ranges up to 4 MiB apart are one request): S3 and HTTP by
concurrent range GETs; any other filesystem (the Hub's included) through
``open(..., cache_type="none")`` in a thread pool (fsspec's default buffered file would read
5 MiB ahead of a 4 KiB row). Every request made and byte received is added to the caller's
``counters`` (``"requests"``, ``"bytes_fetched"``): a dataset's ``ds.source.counters``.

*Is it still the file the reader opened?* A dataset can be overwritten while it is open. The
first time a source uses a file it records the file's :class:`Pin` — its validator: the S3
ETag (and version id), the HTTP ETag or Last-Modified, the Hub commit — and every later
fetch is checked against it, in the same request where the protocol allows:

* **S3**: ``GetObject`` with ``If-Match: <etag>``; a replaced object answers 412.
* **HTTP**: ``If-Match`` is sent and the ``ETag`` / ``Last-Modified`` / total size of every
  answer is compared with the pin (servers that ignore ``If-Match`` are still caught).
* **Hub** (``hf://``): the revision is resolved to its commit once (:func:`pin_hf_root`), and
  every file is read at that commit, which never changes.
* **Other filesystems** (``memory://``, ``local://``, gcs, ...): each file is pinned at its
  first use as below; later reads are not checked per request (they offer no conditional
  read through fsspec).

A mismatch raises :class:`~actstore.errors.DatasetChangedError` naming the file, so bytes of
two versions are never mixed. A file first used after the open is pinned only once the
dataset's index is found unchanged (writers remove or replace the index before any other
file), which proves the file belongs to the index that was read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import DatasetChangedError, IntegrityError
from .location import fs_is_http, fs_protocols
from .ranges import coalesce, request_policy

if TYPE_CHECKING:  # asyncio and the thread pool are imported by remote reads only (a local
    import asyncio  # open does not pay their ~70 ms of imports)

    from fsspec import AbstractFileSystem

#: One fetched range: its bytes, or the error of that range (raised in order by the caller).
Answer = bytes | Exception

__all__ = ["Answer", "CONCURRENCY", "Pin", "Pins", "RangeIgnored", "fetch_ranges", "pin_hf_root", "pin_of"]

#: Requests in flight at once for one read call.
CONCURRENCY = 16
#: Guards the ``counters`` dicts the fetches of several threads add to.
_COUNT_LOCK = threading.Lock()


class RangeIgnored(Exception):
    """Internal: the server sent the whole file (``body``) where a range was asked for."""

    def __init__(self, body: bytes) -> None:
        super().__init__("Range ignored")
        self.body = body


@dataclass(frozen=True)
class Pin:
    """The version of one remote file a reader uses.

    Attributes
    ----------
    ident : str or None
        A comparable identity (``etag:<tag>:<size>``, ``sha256:<hex>``, ``git:<blob>``,
        ``lm:<date>:<size>``, ``mtime:<t>:<size>``); None when the store reports none.
    etag : str or None
        The raw ETag, as the server sent it, for ``If-Match``.
    last_modified : str or None
        The HTTP ``Last-Modified`` date, compared when there is no ETag.
    size : int or None
        The file's size.
    version_id : str or None
        An S3 version id, when the bucket is versioned.
    """

    ident: str | None
    etag: str | None = None
    last_modified: str | None = None
    size: int | None = None
    version_id: str | None = None


def pin_of(info: dict[str, Any]) -> Pin:
    """The :class:`Pin` of a file from its fsspec ``info`` record.

    The identity has the form the cache keys the index by (Hub LFS sha256 or git blob id,
    ETag plus size, Last-Modified plus size), with the modification time plus size for
    stores that have nothing better.

    Examples
    --------
    >>> pin_of({"size": 3, "ETag": '"abc"'}).ident
    'etag:abc:3'
    """
    size = info.get("size")
    size = int(size) if isinstance(size, (int, float)) else None
    etag = next((str(info[k]) for k in ("ETag", "etag", "Etag") if info.get(k)), None)
    lm = info.get("Last-Modified")
    vid = info.get("VersionId") or info.get("version_id")
    lfs = info.get("lfs")
    ident: str | None
    if isinstance(lfs, dict) and (lfs.get("sha256") or lfs.get("oid")):
        ident = f"sha256:{lfs.get('sha256') or lfs.get('oid')}"
    elif info.get("blob_id"):
        ident = f"git:{info['blob_id']}"
    elif etag:
        ident = f"etag:{etag.strip(chr(34))}:{size}"
    elif lm:
        ident = f"lm:{lm}:{size}"
    elif info.get("mtime") is not None:
        ident = f"mtime:{info['mtime']}:{size}"
    else:
        ident = None
    return Pin(ident, etag, str(lm) if lm else None, size, str(vid) if vid else None)


def _changed(url: str, path: str, why: str) -> DatasetChangedError:
    return DatasetChangedError(
        f"{url}/{path}: the file changed after the dataset was opened ({why}); a writer "
        "overwrote the dataset? Its bytes may not match the index read at open, so nothing "
        "was returned from it. Open the dataset again."
    )


class Pins:
    """The pinned version of each file of one remote dataset (thread-safe).

    Parameters
    ----------
    fs : fsspec filesystem
    root : str
        The dataset's root path on ``fs``.
    url : str
        The dataset URL, for messages.
    anchor : str
        The file every other file's version is proven by (the dataset's index).
    """

    def __init__(self, fs: AbstractFileSystem, root: str, url: str, anchor: str) -> None:
        self.fs, self.root, self.url, self.anchor = fs, root.rstrip("/"), url, anchor
        self._pins: dict[str, Pin] = {}
        self._lock = threading.Lock()
        self.immutable = False  # True when the root is pinned (a Hub commit): nothing to check

    def _info(self, path: str) -> dict[str, Any]:
        full = f"{self.root}/{path}"
        try:
            self.fs.invalidate_cache(full)  # a cached listing would hide a new version
        except Exception:  # noqa: BLE001 - filesystems without a listings cache
            pass
        return dict(self.fs.info(full))

    def set(self, path: str, pin: Pin) -> None:
        """Pin ``path`` to a version already known (the index, read at open)."""
        with self._lock:
            self._pins.setdefault(path, pin)

    def get(self, path: str, info: dict[str, Any] | None = None) -> Pin:
        """The pin of ``path``, taking it now (from ``info``, or asking the store) on first use.

        A file pinned after the anchor is accepted only if the anchor is unchanged since
        it was pinned; else :class:`DatasetChangedError`.
        """
        with self._lock:
            pin = self._pins.get(path)
        if pin is not None:
            return pin
        fresh = pin_of(info if info is not None else self._info(path))
        with self._lock:
            anchor = self._pins.get(self.anchor)
        if path != self.anchor and anchor is not None and not self.immutable:
            now = pin_of(self._info(self.anchor))  # after the file's own info: see the module doc
            if anchor.ident is not None and now.ident != anchor.ident:
                raise _changed(self.url, self.anchor, f"its version is now {now.ident}, it was {anchor.ident}")
        with self._lock:
            return self._pins.setdefault(path, fresh)

    def check(self, path: str, pin: Pin, got: Pin) -> None:
        """Raise :class:`DatasetChangedError` if a response's validators contradict ``pin``."""
        if pin.etag and got.etag and pin.etag.strip('"') != got.etag.strip('"'):
            raise _changed(self.url, path, f"ETag {got.etag}, pinned {pin.etag}")
        if not (pin.etag and got.etag) and pin.last_modified and got.last_modified \
                and pin.last_modified != got.last_modified:
            raise _changed(self.url, path, f"Last-Modified {got.last_modified}, pinned {pin.last_modified}")
        if pin.size is not None and got.size is not None and pin.size != got.size:
            raise _changed(self.url, path, f"{got.size} bytes, pinned {pin.size}")


def pin_hf_root(fs: AbstractFileSystem, root: str) -> str:
    """``root`` of a Hub dataset with its revision resolved to the commit it names now.

    Every file read through the returned root comes from that one commit, so a push while
    the dataset is open cannot mix two versions. Roots of other filesystems are returned as
    they are.
    """
    if "hf" not in fs_protocols(fs):
        return root
    resolved = fs.resolve_path(root)
    info = fs._api.repo_info(resolved.repo_id, repo_type=resolved.repo_type,
                             revision=resolved.revision)
    sha = getattr(info, "sha", None)
    if not isinstance(sha, str) or not sha:
        return root
    prefix = "" if resolved.repo_type == "model" else f"{resolved.repo_type}s/"
    sub = f"/{resolved.path_in_repo}" if resolved.path_in_repo else ""
    return f"{prefix}{resolved.repo_id}@{sha}{sub}"


def fetch_ranges(fs: AbstractFileSystem, full: str, ranges: Sequence[tuple[int, int]], *,
                 pin: Pin | None = None, pins: Pins | None = None, path: str = "",
                 first_alone: bool = False,
                 counters: dict[str, int] | None = None) -> list[Answer]:
    """The bytes of each ``[start, end)`` range of ``full``, no read-ahead.

    The ranges are merged first per the store's
    :func:`~actstore.format.ranges.request_policy` (on the Hub, nearby ranges are one
    request; elsewhere only touching ones), and each answer is cut out of its merged read.
    Each answer is a ``bytes``-like or the exception of that range (the caller raises it in
    order), a :class:`RangeIgnored` when an HTTP server sent the whole file. With ``pin``
    (and ``pins``, which names the dataset in errors), a file that is no longer the pinned
    version raises :class:`DatasetChangedError`.

    Parameters
    ----------
    first_alone : bool
        HTTP only: send the first request alone, so that a server that ignores ``Range`` sends
        the whole file once, not once per request.
    counters : dict, optional
        ``"requests"`` and ``"bytes_fetched"`` are increased by the requests sent and the
        bytes they brought (gaps of merged reads included).
    """
    if not ranges:
        return []
    ranges = list(ranges)
    gap, max_span = request_policy(fs_protocols(fs))
    reads = coalesce(ranges, gap=gap, max_span=max_span)
    spans = [(s, e) for s, e, _ in reads]
    blobs = _fetch_spans(fs, full, spans, pin, pins, path, first_alone)
    if counters is not None:
        got = sum(len(b.body) if isinstance(b, RangeIgnored) else 0 if isinstance(b, Exception)
                  else len(b) for b in blobs)
        with _COUNT_LOCK:
            counters["requests"] = counters.get("requests", 0) + sum(e > s for s, e in spans)
            counters["bytes_fetched"] = counters.get("bytes_fetched", 0) + got
    out: list[Answer] = [b""] * len(ranges)
    for (s, e, members), blob in zip(reads, blobs):
        if len(members) == 1 and ranges[members[0]] == (s, e):
            out[members[0]] = blob  # a range read alone: as fetched, checked by the caller
            continue
        if not isinstance(blob, Exception) and len(blob) != e - s:
            size = pin.size if pin is not None else None
            where = f"{pins.url}/{path}" if pins is not None and path else full
            blob = RangeIgnored(bytes(blob)) if size is not None and len(blob) == size else IntegrityError(
                f"{where}: asked for bytes {s}-{e} "
                f"({e - s} bytes) but got {len(blob)}; the file changed or the server "
                "mishandles Range requests. Open the dataset again."
            )
        if isinstance(blob, Exception):
            for m in members:
                out[m] = blob
            continue
        view = memoryview(blob)
        for m in members:
            a, b = ranges[m]
            out[m] = view[a - s : b - s]
    return out


def _fetch_spans(fs: AbstractFileSystem, full: str, ranges: list[tuple[int, int]], pin: Pin | None,
                 pins: Pins | None, path: str, first_alone: bool) -> list[Answer]:
    """One request per ``[start, end)`` range, by the fastest route the filesystem offers."""
    if fs_is_http(fs):
        return _http_fetch(fs, full, ranges, pin, pins, path, first_alone)
    if "s3" in fs_protocols(fs) and hasattr(fs, "_call_s3"):
        return _s3_fetch(fs, full, ranges, pin, pins, path)
    if getattr(fs, "async_impl", False):
        return list(fs.cat_ranges([full] * len(ranges), [s for s, _ in ranges],
                                  [e for _, e in ranges], on_error="return"))
    return _threaded_fetch(fs, full, ranges)


def _threaded_fetch(fs: AbstractFileSystem, full: str, ranges: list[tuple[int, int]]) -> list[Answer]:
    def one(span: tuple[int, int]) -> Answer:
        try:  # cache_type="none": no 5 MiB read-ahead behind a small range
            with fs.open(full, "rb", cache_type="none") as f:
                f.seek(span[0])
                return f.read(span[1] - span[0])
        except Exception as exc:  # returned, then raised in order by the caller
            return exc

    if len(ranges) == 1:
        return [one(ranges[0])]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(CONCURRENCY, len(ranges))) as pool:
        return list(pool.map(one, ranges))


def _run(fs: Any, make: Callable[[asyncio.Semaphore, int, int], Any],
         ranges: list[tuple[int, int]]) -> list[Answer]:
    """Run ``make(sem, s, e)`` coroutines for every range on the filesystem's event loop."""
    import asyncio

    from fsspec.asyn import sync

    async def run() -> list[Answer]:
        sem = asyncio.Semaphore(CONCURRENCY)
        return list(await asyncio.gather(*(make(sem, s, e) for s, e in ranges)))

    return list(sync(fs.loop, run))


def _s3_fetch(fs: Any, full: str, ranges: list[tuple[int, int]], pin: Pin | None,
              pins: Pins | None, path: str) -> list[Answer]:
    """Range ``GetObject`` calls with ``If-Match`` on the pinned ETag (412: changed)."""
    bucket, key, version = fs.split_path(full)
    cond: dict[str, str] = {}
    if pin is not None and pin.etag:
        cond["IfMatch"] = pin.etag
    if version or (pin is not None and pin.version_id):
        cond["VersionId"] = version or pin.version_id  # type: ignore[assignment]

    async def one(sem: asyncio.Semaphore, s: int, e: int) -> Answer:
        if e <= s:
            return b""
        async with sem:
            try:
                resp = await fs._call_s3("get_object", Bucket=bucket, Key=key,
                                         Range=f"bytes={s}-{e - 1}", **cond)
            except Exception as exc:  # noqa: BLE001 - returned, raised in order by the caller
                code = getattr(getattr(exc, "__cause__", None), "response", {}).get("Error", {}).get("Code")
                if code == "PreconditionFailed" or "PreconditionFailed" in str(exc):
                    return _changed(pins.url if pins else full, path or key,
                                    f"its ETag is no longer {cond.get('IfMatch')}")
                return exc
            try:
                return await resp["Body"].read()
            finally:
                resp["Body"].close()

    return _run(fs, one, ranges)


def _http_fetch(fs: Any, full: str, ranges: list[tuple[int, int]], pin: Pin | None,
                pins: Pins | None, path: str, first_alone: bool) -> list[Answer]:
    """Range GETs on the fsspec HTTP session, checking each status (206 vs 200) and, with a
    pin, each answer's validators."""
    url = fs.encode_url(full)
    where = pins.url if pins is not None else full

    async def one(sem: asyncio.Semaphore, s: int, e: int) -> Answer:
        if e <= s:
            return b""
        session = await fs.set_session()
        headers = {**fs.kwargs.get("headers", {}), "Range": f"bytes={s}-{e - 1}"}
        if pin is not None and pin.etag:
            headers["If-Match"] = pin.etag
        async with sem, session.get(url, headers=headers) as r:
            if r.status == 404:
                return FileNotFoundError(full)
            if r.status == 412:
                return _changed(where, path or full, f"its ETag is no longer {pin.etag if pin else '?'}")
            if r.status not in (200, 206):
                return OSError(f"GET {full} with Range bytes={s}-{e - 1} returned {r.status}")
            if pin is not None:
                total = r.headers.get("Content-Range", "").rpartition("/")[2]
                got = Pin(None, r.headers.get("ETag"), r.headers.get("Last-Modified"),
                          int(total) if total.isdigit() else None)
                try:
                    (pins or Pins(fs, "", where, "")).check(path or full, pin, got)
                except DatasetChangedError as exc:
                    return exc
            body = await r.read()
            if r.status == 200 and (s, e) != (0, len(body)):
                return RangeIgnored(body)
            return body

    head = _run(fs, one, ranges[:1]) if first_alone else []
    if head and isinstance(head[0], RangeIgnored):
        return head + [head[0]] * (len(ranges) - 1)
    rest = _run(fs, one, ranges[len(head):]) if len(ranges) > len(head) else []
    return head + rest
