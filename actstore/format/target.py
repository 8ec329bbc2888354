"""Where a writer puts files: staged locally, then published under their final names.

Local datasets stage inside the dataset folder, hold the folder's write lock
(:class:`~actstore.format.lock.WriteLock`) and publish nothing before the commit: every
finished file waits in the staging folder, and :meth:`Target.commit_files` moves them all
into place with atomic ``os.replace`` calls at the commit, so a failed write leaves a
previous dataset at the path untouched. Remote ones (any fsspec URL) stage in a temporary
folder and publish by uploading each finished file at once (the local disk need not hold the
whole dataset), checking the uploaded size. Either way a file appears under its final name
only once it is complete, and every file's size is checked against what was written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from typing import Any

from ..errors import WriteError
from .durable import fsync_dir, fsync_file
from .location import resolve
from .lock import WriteLock

__all__ = ["Target"]


class Target:
    """A dataset location being written: staging area plus publish/remove/exists."""

    def __init__(self, url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> None:
        loc = resolve(url)
        text = self.url = loc.url
        self.remote = not loc.is_local
        self.lock: WriteLock | None = None
        self._pending: list[tuple[str, str, int]] = []  # (staged, rel, size), local only
        self.published: list[str] = []  # files this writer put under their final names
        if self.remote:
            self.fs, self.root = loc.filesystem(storage_options)
            self.staging = tempfile.mkdtemp(prefix="actstore-write-")
        else:
            self.fs, self.root = None, loc.path
            self._new_root = not os.path.isdir(self.root)
            os.makedirs(self.root, exist_ok=True)
            self.lock = WriteLock(self.root, text)
            self.staging = os.path.join(self.root, f".actstore-tmp-{uuid.uuid4().hex[:12]}")
            os.makedirs(self.staging)

    def stage(self, name: str) -> str:
        """A fresh local path in the staging area."""
        return os.path.join(self.staging, name.replace("/", "__"))

    def publish(self, staged: str, rel: str, size: int) -> None:
        """Hand over a finished staged file of ``size`` bytes for its final relative path.

        Remote: uploaded now. Local: kept staged until :meth:`commit_files`. Either way a
        file whose size on disk is not ``size`` raises :class:`WriteError`.
        """
        self.check_size(staged, rel, size)
        if self.remote:
            full = f"{self.root}/{rel}"
            self.fs.makedirs(os.path.dirname(full), exist_ok=True)
            self.published.append(rel)
            self.fs.put_file(staged, full)
            got = int(self.fs.size(full))
            if got != size:
                raise WriteError(
                    f"{self.url}/{rel}: the upload holds {got} bytes but {size} were written; "
                    "the store truncated it. Nothing was committed; write again."
                )
            os.remove(staged)
        else:
            self._pending.append((staged, rel, size))

    def check_size(self, staged: str, rel: str, size: int) -> None:
        """Raise :class:`WriteError` unless the staged file holds exactly ``size`` bytes."""
        got = os.stat(staged).st_size
        if got != size:
            raise WriteError(
                f"{rel}: the written file holds {got} bytes but {size} were expected (a short "
                "write: disk full or a file-size limit?). Nothing was committed; free space "
                "and write again."
            )

    def commit_files(self) -> None:
        """Local: check every staged file's size again, flush it to the disk, move each into
        place, then flush every folder that gained a name (durable across a power loss)."""
        for staged, rel, size in self._pending:
            self.check_size(staged, rel, size)
            fsync_file(staged)
        folders: set[str] = set()
        for staged, rel, _ in self._pending:
            final = os.path.join(self.root, rel)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            self.published.append(rel)
            os.replace(staged, final)
            folders.update(_folders_up_to(self.root, os.path.dirname(final)))
        if folders and self._new_root:  # the dataset folder is itself a new name
            folders.add(os.path.dirname(os.path.abspath(self.root)))
        for folder in sorted(folders, key=len, reverse=True):  # deepest first, the root last
            fsync_dir(folder)
        self._pending.clear()

    def exists(self, rel: str) -> bool:
        if self.remote:
            return bool(self.fs.exists(f"{self.root}/{rel}"))
        return os.path.exists(os.path.join(self.root, rel))

    def remove(self, rel: str) -> None:
        if self.remote:
            if self.fs.exists(f"{self.root}/{rel}"):
                self.fs.rm_file(f"{self.root}/{rel}")
        else:
            path = os.path.join(self.root, rel)
            if os.path.exists(path):
                os.remove(path)

    def list_tensor_files(self) -> list[str]:
        """Relative paths of every file under ``tensors/`` (for stale-file cleanup)."""
        if self.remote:
            base = f"{self.root}/tensors"
            if not self.fs.exists(base):
                return []
            return [p[len(self.root) + 1 :] for p in self.fs.find(base)]
        base = os.path.join(self.root, "tensors")
        out = []
        for dirpath, _, names in os.walk(base):
            out += [os.path.relpath(os.path.join(dirpath, n), self.root).replace(os.sep, "/") for n in names]
        return out

    def cleanup(self) -> None:
        """Delete the staging area and drop the write lock."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self._pending.clear()
        if self.lock is not None:
            self.lock.release()


def _folders_up_to(root: str, folder: str) -> list[str]:
    """``folder`` and each parent up to and including ``root`` (new folders are new names in
    their parents, which must be flushed too)."""
    out, root = [], os.path.normpath(root)
    folder = os.path.normpath(folder)
    while True:
        out.append(folder)
        if folder == root or os.path.dirname(folder) == folder:
            return out
        folder = os.path.dirname(folder)
