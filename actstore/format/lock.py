"""The write lock of a local dataset folder: one writer at a time per path.

A writer takes an exclusive, non-blocking ``flock`` on ``<root>/.actstore-write.lock`` for
its whole life (from ``DatasetWriter(...)`` to commit or abort). A second writer into the
same folder — in this process or another — fails at once with
:class:`~actstore.errors.ConcurrentWriteError` naming the holder's pid. The kernel drops the
lock when its holder dies (even by SIGKILL), so a crashed writer never leaves a stale lock.
The file is removed on release while still locked; a writer that locked a file just
unlinked by its holder notices (the path no longer names its inode) and tries again.

Object stores (``s3://``, ``hf://``, ...) have no such lock: there, one writer per path is
the caller's rule (see ``specs/format-v2.md``, "Commit and locking"). Dotfiles are never
uploaded by ``push_dataset``, so the lock file never leaves the machine.
"""

from __future__ import annotations

import errno
import fcntl
import os

from ..errors import ConcurrentWriteError

__all__ = ["LOCK_FILE", "WriteLock"]

LOCK_FILE = ".actstore-write.lock"


class WriteLock:
    """An exclusive lock on a local dataset folder, held until :meth:`release`.

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
        self.path = os.path.join(root, LOCK_FILE)
        self._fd: int | None = None
        for _ in range(100):  # each retry follows a holder that released (and unlinked) meanwhile
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise ConcurrentWriteError(
                    f"{url!r} is being written by another writer (pid {holder or 'unknown'}, "
                    f"holding {self.path}); wait for it to finish, or write elsewhere. Two "
                    "writers into one path would mix their files."
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
                self._fd = fd
                return
            os.close(fd)
        raise ConcurrentWriteError(f"Could not take the write lock {self.path} of {url!r}; retry.")

    def release(self) -> None:
        """Drop the lock (unlinking the file first, while still held); idempotent."""
        if self._fd is None:
            return
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
