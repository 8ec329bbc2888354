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
from typing import Any, Protocol, runtime_checkable

from ..errors import DatasetChangedError, DatasetNotFoundError, FormatError, IntegrityError

__all__ = ["ByteSource", "FsspecSource", "LocalSource", "pread_exact", "source_for_url", "split_url"]


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
        self._maps: dict[str, mmap.mmap] = {}
        self._seen: dict[str, tuple[int, int, int, int]] = {}
        self._anchor: str | None = None

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

    def size(self, path: str) -> int:
        try:
            st = _regular_stat(self._full(path), path)
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
    """Files under a root on any fsspec filesystem, read by exact byte ranges."""

    def __init__(self, fs: Any, root: str, *, url: str | None = None) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url or root

    def _full(self, path: str) -> str:
        return f"{self.root}/{path}"

    def size(self, path: str) -> int:
        return int(self.fs.size(self._full(path)))

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if not ranges:
            return []
        full = self._full(path)
        starts = [s for s, _ in ranges]
        ends = [e for _, e in ranges]
        # cat_ranges runs the requests concurrently on async filesystems (s3, http); sync ones
        # (hf://) open the file per range, which must not read ahead (to the end of a shard)
        extra = {} if getattr(self.fs, "async_impl", False) else {"cache_type": "none"}
        blobs = self.fs.cat_ranges([full] * len(ranges), starts, ends, **extra)
        for blob, (start, end) in zip(blobs, ranges):
            if isinstance(blob, Exception):
                raise blob
            if len(blob) != end - start:
                raise _short(path, start, end - start, len(blob))
        return list(blobs)

    def readinto(self, path: str, requests: Sequence[tuple[int, memoryview]]) -> None:
        views = [buffer.cast("B") for _, buffer in requests]
        blobs = self.read_ranges(path, [(off, off + len(v)) for (off, _), v in zip(requests, views)])
        for view, blob in zip(views, blobs):
            view[:] = blob


def split_url(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """Resolve a URL or path to ``(filesystem, root path)`` with fsspec."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, root


def source_for_url(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> ByteSource:
    """The plain (uncached) byte source for a local path or fsspec URL.

    Examples
    --------
    >>> src = source_for_url("/tmp")
    >>> isinstance(src, LocalSource)
    True
    """
    text = os.fspath(url)
    if "://" not in text or text.startswith("file://"):
        local = text.removeprefix("file://")
        if not os.path.isdir(local):
            raise DatasetNotFoundError(
                f"No dataset directory at {text!r}; expected a folder holding index/ and tensors/."
            )
        return LocalSource(local)
    fs, root = split_url(text, storage_options)
    return FsspecSource(fs, root, url=text)
