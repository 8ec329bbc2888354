"""Where a writer puts files: staged locally, then published under their final names.

Local datasets stage inside the dataset folder and publish with an atomic ``os.replace``;
remote ones (any fsspec URL) stage in a temporary folder and publish by uploading the
finished file. Either way a file appears under its final name only once it is complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from typing import Any

from .source import split_url

__all__ = ["Target"]


class Target:
    """A dataset location being written: staging area plus publish/remove/exists."""

    def __init__(self, url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> None:
        text = os.fspath(url)
        self.url = text
        self.remote = "://" in text and not text.startswith("file://")
        if self.remote:
            self.fs, self.root = split_url(text, storage_options)
            self.staging = tempfile.mkdtemp(prefix="actstore-write-")
        else:
            self.fs, self.root = None, text.removeprefix("file://")
            os.makedirs(self.root, exist_ok=True)
            self.staging = os.path.join(self.root, f".actstore-tmp-{uuid.uuid4().hex[:12]}")
            os.makedirs(self.staging)

    def stage(self, name: str) -> str:
        """A fresh local path in the staging area."""
        return os.path.join(self.staging, name.replace("/", "__"))

    def publish(self, staged: str, rel: str) -> None:
        """Move a finished staged file to its final relative path."""
        if self.remote:
            self.fs.makedirs(os.path.dirname(f"{self.root}/{rel}"), exist_ok=True)
            self.fs.put_file(staged, f"{self.root}/{rel}")
            os.remove(staged)
        else:
            final = os.path.join(self.root, rel)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(staged, final)

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
        """Delete the staging area."""
        shutil.rmtree(self.staging, ignore_errors=True)
