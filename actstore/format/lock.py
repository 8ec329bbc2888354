"""The write lock of a local dataset folder: one writer at a time per path.

A writer takes an exclusive, non-blocking ``flock`` on the dataset folder itself for its whole
life (from ``DatasetWriter(...)`` to commit or abort), so no file is created for it and a
killed writer leaves nothing behind: the kernel drops the lock when its holder dies (even by
SIGKILL). A second writer into the same folder — in this process or another — fails at once
with :class:`~actstore.errors.ConcurrentWriteError`.

Where a folder cannot be locked (NFS emulates ``flock`` with byte-range locks, which need a
file open for writing), the lock is taken on ``<root>/.actstore-write.lock`` instead; that
file is removed on release while still locked, and a writer that locked a file just unlinked
by its holder notices (the path no longer names its inode) and tries again. Dotfiles are
never uploaded by ``push_dataset``.

Object stores (``s3://``, ``hf://``, ...) have no such lock: there, one writer per path is
the caller's rule (see ``specs/format-v2.md``, section 6b).
"""

from __future__ import annotations

import errno
import fcntl
import os

from ..errors import ConcurrentWriteError

__all__ = ["LOCK_FILE", "WriteLock"]

LOCK_FILE = ".actstore-write.lock"
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


class WriteLock:
    """An exclusive lock on a local dataset folder (``flock`` of the folder), held until
    :meth:`release`.

    Parameters
    ----------
    root : str
        The dataset folder (it must exist).
    url : str
        The location as the caller named it (for messages).

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> lock = WriteLock(d, d)
    >>> WriteLock(d, d)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    actstore.errors.ConcurrentWriteError: ...
    >>> lock.release()
    """

    def __init__(self, root: str, url: str) -> None:
        self.path: str | None = None
        self._url = url
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _BUSY:
                raise self._busy(None) from None
            self._fd = self._lock_file(os.path.join(root, LOCK_FILE))  # e.g. NFS
            return
        self._fd = fd

    def _busy(self, holder: int | None) -> ConcurrentWriteError:
        who = f" (pid {holder})" if holder else ""
        return ConcurrentWriteError(
            f"{self._url!r} is being written by another writer{who}; wait for it to finish, "
            "or write elsewhere. Two writers into one path would mix their files."
        )

    def _lock_file(self, path: str) -> int:
        for _ in range(100):  # each retry follows a holder that released (and unlinked) meanwhile
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno not in _BUSY:
                    raise
                raise self._busy(holder) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
                self.path = path
                return fd
            os.close(fd)
        raise ConcurrentWriteError(f"Could not take the write lock {path} of {self._url!r}; retry.")

    def release(self) -> None:
        """Drop the lock (unlinking the file first, while still held); idempotent."""
        if self._fd is None:
            return
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(self._fd)
        self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
