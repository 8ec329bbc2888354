"""Durable commits on local disks: ``fsync`` a file before it is renamed into place, and its
folder after.

A rename is atomic but not durable: after a power loss the new name may point at a file
whose data never reached the disk (zero-length or zero-filled on ext4/XFS), or the rename
itself may be lost. A commit is durable when every file's data is flushed before the rename
that publishes it and the folder holding the new name is flushed after it
(:func:`fsync_file`, then ``os.replace``, then :func:`fsync_dir`).
"""

from __future__ import annotations

import os

__all__ = ["fsync_dir", "fsync_file"]


def fsync_file(path: str) -> None:
    """Flush the data and size of the file at ``path`` to the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Flush the entries of the folder ``path`` (names created, renamed or removed in it).

    Filesystems that cannot ``fsync`` a folder (some network and FUSE mounts raise
    ``EINVAL``/``ENOTSUP``) are skipped: there the rename is as durable as the mount makes it.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        import errno

        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)
