"""Where a run keeps its parts, and how it tells what is finished.

A local ``out`` keeps its parts in ``<out>/_parts`` (one folder, so a shared filesystem is
all a multi-node run needs). A remote ``out`` (``s3://``, ``memory://``, ...) keeps them in
a local work folder — ``work_dir`` or ``<cache dir>/extract-runs/<hash of out>`` — and only
the merged dataset goes to the URL. Each part is a complete dataset whose index is its
commit point; ``config.json`` records the run's configuration before any part is written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import Any

from .. import config as settings
from ..format.location import resolve
from ..format.spec import INDEX_PATH

__all__ = ["CONFIG", "PARTS", "RunDir"]

PARTS = "_parts"
CONFIG = "config.json"
INDEX = INDEX_PATH  # the one home: format/spec.py


class RunDir:
    """The output of a run (``out``) and its part folders."""

    def __init__(self, out: str, work_dir: str | None = None,
                 storage_options: dict[str, Any] | None = None) -> None:
        self.location = resolve(out)
        self.out = self.location.url
        self.remote = not self.location.is_local
        self.local_out = None if self.remote else self.location.path
        self.storage_options = storage_options
        if work_dir is not None:
            self.parts = os.path.join(os.fspath(work_dir), PARTS)
        elif self.local_out is not None:
            self.parts = os.path.join(self.local_out, PARTS)
        else:
            self.parts = os.path.join(_local_base(), "extract-runs", _digest(self.out), PARTS)
        self.config_path = os.path.join(self.parts, CONFIG)

    def part(self, shard: int) -> str:
        return os.path.join(self.parts, f"shard-{shard:05d}")

    def part_done(self, shard: int) -> bool:
        return os.path.exists(os.path.join(self.part(shard), INDEX))

    def any_part_done(self) -> bool:
        """Whether any shard of the run is committed."""
        if not os.path.isdir(self.parts):
            return False
        return any(os.path.exists(os.path.join(self.parts, name, INDEX))
                   for name in os.listdir(self.parts) if name.startswith("shard-"))

    def final_exists(self) -> bool:
        """Whether the merged dataset's index exists (only ``merge`` writes it)."""
        if self.local_out is not None:
            return os.path.exists(os.path.join(self.local_out, INDEX))
        fs, root = self.location.filesystem(self.storage_options)
        return bool(fs.exists(f"{root.rstrip('/')}/{INDEX_PATH}"))

    def remove_parts(self) -> None:
        # the config goes last, so a kill half-way leaves a folder that still says what it is
        if not os.path.isdir(self.parts):
            return
        for name in sorted(os.listdir(self.parts)):
            if name != CONFIG:
                shutil.rmtree(os.path.join(self.parts, name), ignore_errors=True)
        shutil.rmtree(self.parts, ignore_errors=True)

    def remove_stale_staging(self) -> None:
        """Remove the staging folders of writers into ``out`` that are gone (killed mid-merge).

        A live writer holds the folder's write lock (:class:`~actstore.format.lock.WriteLock`)
        for its whole life, so when the lock can be taken no writer is alive and every staging
        folder is stale; when it cannot, nothing is removed (the live writer's files stay, and
        the merge's own writer then refuses with :class:`~actstore.errors.ConcurrentWriteError`).
        """
        if self.local_out is None or not os.path.isdir(self.local_out):
            return
        from ..errors import ConcurrentWriteError
        from ..format.lock import WriteLock

        try:
            lock = WriteLock(self.local_out, self.out)
        except ConcurrentWriteError:
            return  # a live writer: its staging folder is not stale
        try:
            for name in os.listdir(self.local_out):
                if name.startswith(".actstore-tmp-"):
                    shutil.rmtree(os.path.join(self.local_out, name), ignore_errors=True)
        finally:
            lock.release()

def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _local_base() -> str:
    base = settings.cache_dir()
    # a team cache on S3 cannot hold the parts; they need a local disk
    return base if "://" not in base else os.path.join(os.path.expanduser("~"), ".cache", "actstore")
