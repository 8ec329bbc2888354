"""Byte sources: the one seam through which the reader touches storage.

A :class:`ByteSource` reads byte ranges of files named relative to a dataset root. The local
implementation uses positional reads into caller buffers (no mmap: cold scattered reads
through mmap pull an 8 MiB read-ahead per page fault); the fsspec one asks for exact ranges
with no read-ahead, several in flight at once where the filesystem is asynchronous.
"""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import (
    DatasetChangedError,
    DatasetNotFoundError,
    FormatError,
    IntegrityError,
    UnsafePathError,
)
from .fetch import Pins, RangeIgnored, fetch_ranges, pin_hf_root
from .location import Location, resolve
from .spec import INDEX_FILE

if TYPE_CHECKING:
    import numpy as np
    from fsspec import AbstractFileSystem

#: The file whose version proves every other file's (a writer replaces it first).
_ANCHOR = INDEX_FILE.format(split="train", part=0, parts=1)

__all__ = ["ByteSource", "FsspecSource", "LocalSource", "pread_exact", "read_spans", "source_for_url",
           "split_url"]


@runtime_checkable
class ByteSource(Protocol):
    """Read-only access to the files of one dataset, by path relative to its root."""

    def size(self, path: str) -> int:
        """The file's size in bytes; raises ``FileNotFoundError`` if it does not exist."""
        ...

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of each ``[start, end)`` range, in order; each must be complete."""
        ...

    def readinto(self, path: str, requests: Sequence[tuple[int, memoryview]]) -> None:
        """Fill each ``(offset, buffer)`` request exactly with the file's bytes from ``offset``."""
        ...


def read_spans(source: ByteSource, path: str, starts: np.ndarray, buffer: memoryview,
               lo: np.ndarray, hi: np.ndarray) -> None:
    """Fill ``buffer[lo[i]:hi[i]]`` (a flat byte view) with ``path``'s bytes from
    ``starts[i]``, for every ``i``: :meth:`ByteSource.readinto` for many ranges given as
    arrays. A source with a ``readinto_spans`` method of this signature gets the arrays as
    they are, to match them against what it holds without a Python object per range (the
    warm cache does); any other gets the ``(offset, buffer)`` requests."""
    spans = getattr(source, "readinto_spans", None)
    if spans is not None:
        spans(path, starts, buffer, lo, hi)
        return
    source.readinto(path, [(s, buffer[x:y]) for s, x, y in zip(starts.tolist(), lo.tolist(), hi.tolist())])


def _short(path: str, offset: int, want: int, got: int) -> IntegrityError:
    return IntegrityError(
        f"{path}: expected {want} bytes at offset {offset} but got {got}; "
        "the file is shorter than its header says (truncated?)."
    )


class LocalSource:
    """Files under a local directory, read with positional reads.

    For gathers of many small scattered rows it also offers :meth:`mapped`: the file mapped
    read-only with ``MADV_RANDOM``, so a cold page fault reads one page rather than an
    8 MiB read-ahead, while warm pages are copied at memory speed.

    A file whose real path lies outside the dataset root (a symbolic link pointing out of
    it) is refused with :class:`~actstore.errors.UnsafePathError`; links within the root
    are followed, and so are the links of a Hugging Face cache snapshot into its repo's
    ``blobs`` folder (that is how ``snapshot_download`` lays a dataset out).

    Files are pinned: the identity (device, inode, size, mtime) of each file is recorded when
    it is first used, and every later open must find the same file, else
    :class:`~actstore.errors.DatasetChangedError`. The first file used (a dataset's index) is
    the anchor: when any other file is first used, the anchor must still be the one that was
    read. Writers remove the old index before they put any new file in place, so a reader
    never mixes the files of two datasets written to one path.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        self.url = self.root
        self._real_root = os.path.realpath(self.root)
        self._allowed = (self._real_root, *_hub_blobs(self._real_root))
        self._maps: dict[str, mmap.mmap] = {}
        self._seen: dict[str, tuple[int, int, int, int]] = {}
        self._anchor: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its mappings (a DataLoader worker started by spawn maps anew)."""
        return {**self.__dict__, "_maps": {}}

    def _pin(self, path: str, st: os.stat_result) -> None:
        """Check ``path`` (just opened or stat'ed, giving ``st``) against what was seen."""
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        seen = self._seen.get(path)
        if seen is not None:
            if seen != ident:
                raise _changed(self.root, path)
            return
        if self._anchor is None:
            self._anchor = path
        else:  # after the open: an unchanged anchor proves no writer had begun replacing files
            try:
                anchor = os.stat(self._full(self._anchor))
            except FileNotFoundError:
                raise _changed(self.root, self._anchor) from None
            if (anchor.st_dev, anchor.st_ino, anchor.st_size, anchor.st_mtime_ns) != self._seen[self._anchor]:
                raise _changed(self.root, self._anchor)
        self._seen[path] = ident

    def mapped(self, path: str, end: int) -> mmap.mmap:
        """The file mapped read-only for random access; it must hold at least ``end`` bytes."""
        m = self._maps.get(path)
        if m is None:
            fd = self._open(path)
            try:
                m = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)
            if hasattr(mmap, "MADV_RANDOM"):
                m.madvise(mmap.MADV_RANDOM)
            self._maps[path] = m
        if len(m) < end:
            raise _short(path, 0, end, len(m))
        return m

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path)

    def _contained(self, path: str) -> str:
        """The full name of ``path``, refused if it resolves outside the dataset root.

        Links inside the dataset are followed only when their target stays under the root;
        checked at a file's first use (later uses must find the same file: see ``_pin``).
        """
        full = self._full(path)
        if path in self._seen:
            return full
        real = os.path.realpath(full)
        if not any(os.path.commonpath([real, ok]) == ok for ok in self._allowed):
            raise UnsafePathError(
                f"{full}: resolves to {real}, outside the dataset root {self._real_root} (a "
                "symbolic link pointing out of the dataset); refusing to read it. Copy the "
                "file into the dataset instead of linking to it."
            )
        return full

    def size(self, path: str) -> int:
        try:
            st = _regular_stat(self._full(path), path)
            self._contained(path)
        except FileNotFoundError:
            if path in self._seen:
                raise _changed(self.root, path) from None
            raise
        self._pin(path, st)
        return st.st_size

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        fd = self._open(path)
        try:
            out = []
            for start, end in ranges:
                data = os.pread(fd, end - start, start)
                if len(data) != end - start:
                    raise _short(path, start, end - start, len(data))
                out.append(data)
            return out
        finally:
            os.close(fd)

    def readinto(self, path: str, requests: Sequence[tuple[int, memoryview]]) -> None:
        fd = self.open_fd(path)
        try:
            for offset, buffer in requests:
                pread_exact(fd, path, offset, buffer)
        finally:
            os.close(fd)

    def open_fd(self, path: str) -> int:
        """A read-only descriptor of one file, for many :func:`pread_exact` calls (caller closes)."""
        return self._open(path)

    def _open(self, path: str) -> int:
        """Open one dataset file, refusing anything but a regular file, and pin its identity.

        Only regular files are opened: the name is checked first, and the file is opened
        non-blocking (a FIFO swapped in between cannot hang the open) and checked again.
        """
        full = self._full(path)
        try:
            _regular_stat(full, path)
            self._contained(path)
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            if path in self._seen:  # it was there when first used: removed since
                raise _changed(self.root, path) from None
            raise
        except OSError as exc:
            raise FormatError(f"{path}: cannot be opened ({exc.strerror or exc}).") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise FormatError(f"{path}: is not a regular file; refusing to read it.")
        try:
            self._pin(path, st)
        except BaseException:
            os.close(fd)
            raise
        return fd


def _hub_blobs(real_root: str) -> tuple[str, ...]:
    """The ``blobs`` folder of a Hugging Face cache snapshot holding ``real_root``, if any.

    A snapshot (``<cache>/datasets--org--name/snapshots/<commit>/...``) is a tree of links
    into its repo's ``blobs`` folder, so links into exactly that folder are part of the
    dataset; every other link out of the root is still refused.
    """
    cur = real_root
    for _ in range(64):  # up to the snapshot folder, whatever the dataset's depth in it
        parent = os.path.dirname(cur)
        if parent == cur:
            return ()
        if os.path.basename(parent) == "snapshots":
            blobs = os.path.join(os.path.dirname(parent), "blobs")
            return (os.path.realpath(blobs),) if os.path.isdir(blobs) else ()
        cur = parent
    return ()


def _regular_stat(full: str, path: str) -> os.stat_result:
    """``os.stat`` of a dataset file that must be a regular file (links are followed).

    A FIFO would hang a read forever and a device could be endless, so anything else is
    refused before it is opened; OS errors other than a missing file (a directory, a name
    too long, a symlink loop) become :class:`FormatError`.
    """
    try:
        st = os.stat(full)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise FormatError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise FormatError(f"{path}: is {kind}, not a regular file; refusing to read it.")
    return st


def _changed(root: str, path: str) -> DatasetChangedError:
    return DatasetChangedError(
        f"{os.path.join(root, path)}: the file was replaced or modified after the dataset was "
        "opened (a writer overwrote the dataset?); its bytes may not match the index read at "
        "open. Open the dataset again."
    )


def pread_exact(fd: int, path: str, offset: int, buffer: memoryview) -> None:
    """Fill ``buffer`` with the bytes of ``fd`` from ``offset``; a short file raises."""
    want = buffer.nbytes
    done = os.preadv(fd, [buffer], offset)
    while done < want:  # short reads happen for huge buffers and at EOF
        view = buffer.cast("B")
        n = os.preadv(fd, [view[done:]], offset + done)
        if not n:
            raise _short(path, offset, want, done)
        done += n


class FsspecSource:
    """Files under a root on any fsspec filesystem, read by exact byte ranges.

    Reads ask for exactly the bytes wanted (no read-ahead; see :mod:`actstore.format.fetch`),
    the ranges of one read merged per the store's policy (on the Hub, nearby rows are one
    request), and every file is pinned to the version first used: a file replaced while the
    dataset is open raises :class:`~actstore.errors.DatasetChangedError`, never mixes versions.
    A Hub URL's revision is resolved to its commit when the source is made.

    Attributes
    ----------
    counters : dict
        ``"requests"``: range requests sent so far; ``"bytes_fetched"``: bytes they brought.
        How many requests a read made is the difference before and after it
        (``ds.source.counters``, as for a cached source).
    """

    def __init__(self, fs: AbstractFileSystem, root: str, *, url: str | None = None,
                 anchor: str = _ANCHOR) -> None:
        self.fs = fs
        self.root = pin_hf_root(fs, root.rstrip("/"))
        self.url = url or root
        self.pins = Pins(fs, self.root, self.url, anchor)
        self.pins.immutable = self.root != root.rstrip("/")  # a Hub commit never changes
        self.counters = {"requests": 0, "bytes_fetched": 0}

    def _full(self, path: str) -> str:
        return f"{self.root}/{path}"

    def size(self, path: str) -> int:
        pin = self.pins.get(path)
        if pin.size is None:
            return int(self.fs.size(self._full(path)))
        return pin.size

    def _fetch(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes | memoryview]:
        """Each range's bytes, complete (checked), as fetched: bytes or views of a merged read."""
        pin = self.pins.get(path)
        blobs = fetch_ranges(self.fs, self._full(path), ranges, pin=pin, pins=self.pins, path=path,
                             counters=self.counters)
        out = []
        for blob, (start, end) in zip(blobs, ranges):
            if isinstance(blob, RangeIgnored):  # the whole file came back: slice it
                blob = blob.body[start:end]
            if isinstance(blob, Exception):
                raise blob
            if len(blob) != end - start:
                raise _short(path, start, end - start, len(blob))
            out.append(blob)
        return out

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if not ranges:
            return []
        return [b if isinstance(b, bytes) else bytes(b) for b in self._fetch(path, ranges)]

    def readinto(self, path: str, requests: Sequence[tuple[int, memoryview]]) -> None:
        if not requests:
            return
        views = [buffer.cast("B") for _, buffer in requests]
        blobs = self.read_ranges(path, [(off, off + len(v)) for (off, _), v in zip(requests, views)])
        for view, blob in zip(views, blobs):
            view[:] = blob


def split_url(url: str | Location, storage_options: dict[str, Any] | None = None
              ) -> tuple[AbstractFileSystem, str]:
    """Resolve a URL or path to ``(filesystem, root path)`` with fsspec (see :mod:`.location`)."""
    loc = url if isinstance(url, Location) else resolve(url)
    return loc.filesystem(storage_options)


def source_for_url(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> ByteSource:
    """The plain (uncached) byte source for a local path or fsspec URL.

    Examples
    --------
    >>> src = source_for_url("/tmp")
    >>> isinstance(src, LocalSource)
    True
    """
    loc = resolve(url)
    if loc.is_local:
        if not os.path.isdir(loc.path):
            raise DatasetNotFoundError(
                f"No dataset directory at {loc.url!r}; expected a folder holding index/ and tensors/."
            )
        return LocalSource(loc.path)
    fs, root = loc.filesystem(storage_options)
    return FsspecSource(fs, root, url=loc.url)
