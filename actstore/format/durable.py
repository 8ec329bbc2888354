"""Durable commits on local disks: ``fsync`` a file before it is renamed into place, and its
folder after.

A rename is atomic but not durable: after a power loss the new name may point at a file
whose data never reached the disk (zero-length or zero-filled on ext4/XFS), or the rename
itself may be lost. A commit is durable when every file's data is flushed before the rename
that publishes it and the folder holding the new name is flushed after it
(:func:`fsync_file`, then ``os.replace``, then :func:`fsync_dir`).

:func:`atomic_path`, :func:`atomic_file` and :func:`atomic_write` are the one way actstore
replaces a single local file so that readers see the old content or the new, never part of
either (a unique temporary name in the same folder, then ``os.replace``; durable unless asked
otherwise). Anchor: zarr ``storage/_local.py::_atomic_write``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

__all__ = ["atomic_file", "atomic_folder", "atomic_path", "atomic_write", "fsync_dir", "fsync_file"]


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[str]:
    """A temporary name next to ``path`` to write; on a clean exit it replaces ``path``.

    For writers that want a file name (``DataFrame.to_parquet``). On an exception the
    temporary file is removed and ``path`` is left as it was. ``durable`` flushes the file
    before the rename and the folder after it (see the module docstring); a cache whose
    content is checked on every read may skip that.

    Examples
    --------
    >>> with atomic_path("/tmp/results.parquet") as tmp:    # doctest: +SKIP
    ...     frame.to_parquet(tmp)
    """
    final = os.fspath(path)
    parent = os.path.dirname(final) or "."
    tmp = os.path.join(parent, f".{os.path.basename(final)}.tmp-{os.getpid()}-{secrets.token_hex(6)}")
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, final)
        if durable:
            fsync_dir(parent)
    finally:
        if os.path.lexists(tmp):  # the write or the rename failed: leave no temporary behind
            os.remove(tmp)


@contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb", *, durable: bool = True,
                **open_kw: Any) -> Iterator[IO[Any]]:
    """An open temporary file that replaces ``path`` when the block exits cleanly
    (``mode`` ``"wb"`` or ``"w"``; ``open_kw`` go to :func:`open`, e.g. ``encoding``)."""
    with atomic_path(path, durable=durable) as tmp, open(tmp, mode, **open_kw) as f:
        yield f


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, durable: bool = True) -> None:
    """Replace the file at ``path`` with ``data`` (bytes, or text written as UTF-8), atomically."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_file(path, "wb", durable=durable) as f:
        f.write(raw)


@contextmanager
def atomic_folder(path: str | os.PathLike[str], order: tuple[str, ...], *,
                  durable: bool = True) -> Iterator[str]:
    """A staging folder next to ``path`` to write the files ``order`` names into; on a clean
    exit it becomes ``path``.

    A new ``path`` is the staging folder renamed (atomic). An existing folder gets each file
    by ``os.replace``, in ``order``: a crash between two leaves the earlier files new and the
    later ones old, so the caller puts last the file that binds the others (a probe's config,
    which records its weights' sha256, so a mixed folder is refused on load, never read). On
    an exception nothing at ``path`` changes and the staging folder is removed.

    Examples
    --------
    >>> with atomic_folder("probes/p", order=("weights.safetensors", "probe.json")) as tmp:  # doctest: +SKIP
    ...     write_weights(tmp); write_config(tmp)
    """
    import shutil

    final = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    if os.path.lexists(final) and not os.path.isdir(final):
        raise NotADirectoryError(f"{final!r} exists and is not a folder")
    staging = os.path.join(parent, f".{os.path.basename(final)}.tmp-{os.getpid()}-{secrets.token_hex(6)}")
    os.mkdir(staging)
    try:
        yield staging
        if durable:
            for name in order:
                fsync_file(os.path.join(staging, name))
            fsync_dir(staging)
        if not os.path.exists(final):
            os.rename(staging, final)
            if durable:
                fsync_dir(parent)
            return
        for name in order:
            os.replace(os.path.join(staging, name), os.path.join(final, name))
        if durable:
            fsync_dir(final)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)


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
