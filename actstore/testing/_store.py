"""The on-disk repository store behind :class:`actstore.testing.HubServer`.

Content lives once under ``blobs/<sha256>``; each repository is one JSON document holding
its branches and commits, where a commit maps every path to ``(sha256, size, git sha1, lfs)``.
That is enough to answer everything the ``huggingface_hub`` client asks (tree, paths-info,
resolve by branch or sha, preupload oids) without a real git object database.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..format.durable import atomic_file, atomic_write

__all__ = ["FileEntry", "HubStoreError", "RepoStore", "git_blob_sha1", "lfs_pointer"]

# extensions the Hub's default .gitattributes routes through LFS
LFS_SUFFIXES = (
    ".parquet", ".safetensors", ".bin", ".pt", ".pth", ".npy", ".npz", ".arrow", ".h5",
    ".gz", ".zst", ".zip", ".tar", ".pkl", ".onnx", ".msgpack",
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = b"".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n".encode() for s in LFS_SUFFIXES)


class HubStoreError(Exception):
    """An error the HTTP layer turns into a Hub error response."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub reports as a regular file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file git would store in place of an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class FileEntry:
    """One file of one commit."""

    path: str
    sha256: str
    size: int
    sha1: str  # git blob id: of the content (regular) or of the LFS pointer
    lfs: bool
    xet: str | None = None  # Xet file hash, when the content was uploaded through Xet

    def tree_json(self, xet: bool = False) -> dict[str, Any]:
        """The ``tree`` / ``paths-info`` entry; with ``xet``, Xet files carry ``xetHash``."""
        out: dict[str, Any] = {"type": "file", "oid": self.sha1, "size": self.size, "path": self.path}
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": self.size,
                          "pointerSize": len(lfs_pointer(self.sha256, self.size))}
        if xet and self.xet:
            out["xetHash"] = self.xet
        return out

    @property
    def etag(self) -> str:
        # content-addressed, as the client uses it as its cache blob name
        return self.sha256 if self.lfs else self.sha1


def wants_lfs(path: str, size: int, sample: bytes) -> bool:
    """The upload mode the Hub would choose: LFS for big, binary or LFS-tracked files."""
    return size >= LFS_SIZE_THRESHOLD or b"\0" in sample or path.lower().endswith(LFS_SUFFIXES)


class RepoStore:
    """Repositories, commits and content-addressed blobs under one directory, thread-safe."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        for sub in ("blobs", "uploads", "repos"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        self.lock = threading.RLock()

    # ---- blobs -------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> str:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise HubStoreError(400, "BadRequest", f"invalid sha256 oid {sha256!r}")
        return os.path.join(self.root, "blobs", sha256)

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        try:
            p = self.blob_path(sha256)
        except HubStoreError:
            return False
        return os.path.exists(p) and (size is None or os.path.getsize(p) == size)

    def put_blob_file(self, tmp_path: str, sha256: str, size: int) -> None:
        """Move an uploaded temp file into the blob store after checking size and sha256."""
        h = hashlib.sha256()
        with open(tmp_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        got_size = os.path.getsize(tmp_path)
        if got_size != size or h.hexdigest() != sha256:
            os.unlink(tmp_path)
            raise HubStoreError(400, "BadRequest",
                                f"uploaded object has size {got_size} / sha256 {h.hexdigest()}; "
                                f"expected {size} / {sha256}")
        os.replace(tmp_path, self.blob_path(sha256))

    def put_blob_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha):
            atomic_write(self.blob_path(sha), data, durable=False)
        return sha

    def tmp_path(self) -> str:
        return os.path.join(self.root, "uploads", secrets.token_hex(12))

    # ---- repos -------------------------------------------------------------------------
    def _repo_file(self, repo_type: str, repo_id: str) -> str:
        ns, name = repo_id.split("/")
        return os.path.join(self.root, "repos", repo_type, ns, name + ".json")

    def load(self, repo_type: str, repo_id: str) -> dict[str, Any] | None:
        path = self._repo_file(repo_type, repo_id)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def delete(self, repo_type: str, repo_id: str) -> None:
        """Delete a repository (its blobs stay: they may be shared)."""
        with self.lock:
            try:
                os.unlink(self._repo_file(repo_type, repo_id))
            except FileNotFoundError:
                raise HubStoreError(404, "RepoNotFound", f"Repository {repo_id} not found") from None

    def save(self, repo_type: str, repo_id: str, repo: dict[str, Any]) -> None:
        path = self._repo_file(repo_type, repo_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_file(path, "w", durable=False, encoding="utf-8") as f:
            json.dump(repo, f)

    def create(self, repo_type: str, repo_id: str, private: bool) -> dict[str, Any]:
        """Create a repository with the Hub's initial ``.gitattributes`` commit."""
        repo: dict[str, Any] = {"private": private, "branches": {}, "commits": {},
                                "created": time.time()}
        sha = self.put_blob_bytes(GITATTRIBUTES)
        entry = {"sha256": sha, "size": len(GITATTRIBUTES), "sha1": git_blob_sha1(GITATTRIBUTES),
                 "lfs": False}
        self._add_commit(repo, "main", None, {".gitattributes": entry}, "initial commit")
        self.save(repo_type, repo_id, repo)
        return repo

    @staticmethod
    def _add_commit(repo: dict[str, Any], branch: str, parent: str | None,
                    files: dict[str, dict[str, Any]], title: str) -> str:
        sha = hashlib.sha1(
            json.dumps([parent, sorted(files.items()), title, time.time_ns()]).encode()
        ).hexdigest()
        repo["commits"][sha] = {"parent": parent, "files": files, "title": title,
                                "date": time.time()}
        repo["branches"][branch] = sha
        return sha

    def resolve_rev(self, repo: dict[str, Any], rev: str) -> str:
        """A branch name or a full commit sha -> the commit sha."""
        if rev in repo["branches"]:
            return str(repo["branches"][rev])
        if rev in repo["commits"]:
            return rev
        raise HubStoreError(404, "RevisionNotFound", f"Invalid rev id: {rev}")

    @staticmethod
    def files(repo: dict[str, Any], commit: str) -> dict[str, FileEntry]:
        raw = repo["commits"][commit]["files"]
        return {p: FileEntry(path=p, **e) for p, e in raw.items()}

    def commit(self, repo_type: str, repo_id: str, branch: str, parent: str | None,
               ops: list[tuple[str, dict[str, Any]]], title: str,
               find_xet: Callable[[str], tuple[str, int] | None] | None = None) -> str:
        """Apply ``ops`` (the NDJSON lines after the header) on top of ``branch``.

        An ``lfsFile`` whose object was not uploaded by LFS is looked up with ``find_xet``
        (sha256 -> Xet hash and size), when given.
        """
        with self.lock:
            repo = self.load(repo_type, repo_id)
            if repo is None:
                raise HubStoreError(404, "RepoNotFound", f"Repository {repo_id} not found")
            if branch not in repo["branches"]:
                raise HubStoreError(404, "RevisionNotFound", f"Invalid rev id: {branch}")
            head = repo["branches"][branch]
            if parent is not None and parent != head:
                raise HubStoreError(412, "PreconditionFailed",
                                    f"parentCommit {parent} is not the head of {branch} ({head})")
            files = dict(repo["commits"][head]["files"])
            known = set(repo.get("lfs", []))
            for key, value in ops:
                self._apply(files, key, value, known, find_xet)
            sha = self._add_commit(repo, branch, head, files, title)
            self.save(repo_type, repo_id, repo)
            return sha

    def add_lfs_object(self, repo_type: str, repo_id: str, oid: str) -> None:
        """Record that ``repo_id`` owns LFS object ``oid`` (LFS storage is per repo)."""
        with self.lock:
            repo = self.load(repo_type, repo_id)
            if repo is not None and oid not in repo.setdefault("lfs", []):
                repo["lfs"].append(oid)
                self.save(repo_type, repo_id, repo)

    def _apply(self, files: dict[str, dict[str, Any]], key: str, value: dict[str, Any],
               known_lfs: set[str],
               find_xet: Callable[[str], tuple[str, int] | None] | None = None) -> None:
        import base64

        path = str(value.get("path", "")).strip("/")
        if not path or ".." in path.split("/"):
            raise HubStoreError(400, "BadRequest", f"invalid path {path!r}")
        if key == "file":
            data = base64.b64decode(value["content"])
            files[path] = {"sha256": self.put_blob_bytes(data), "size": len(data),
                           "sha1": git_blob_sha1(data), "lfs": False}
        elif key == "lfsFile":
            oid = str(value.get("oid"))
            xet = find_xet(oid) if find_xet is not None and oid not in known_lfs else None
            if xet is not None:
                files[path] = {"sha256": oid, "size": xet[1], "lfs": True, "xet": xet[0],
                               "sha1": git_blob_sha1(lfs_pointer(oid, xet[1]))}
                return
            if oid not in known_lfs or not self.has_blob(oid):
                raise HubStoreError(422, "LfsObjectMissing",
                                    f"LFS object {oid} for {path} was never uploaded")
            size = os.path.getsize(self.blob_path(oid))
            files[path] = {"sha256": oid, "size": size, "sha1": git_blob_sha1(lfs_pointer(oid, size)),
                           "lfs": True}
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubStoreError(404, "EntryNotFound", f"{path} does not exist")
        elif key == "deletedFolder":
            for p in [p for p in files if p.startswith(path + "/")]:
                del files[p]
        else:
            raise HubStoreError(400, "BadRequest", f"unknown commit operation {key!r}")


def list_tree(files: dict[str, FileEntry], base: str, recursive: bool,
              xet: bool = False) -> list[dict[str, Any]]:
    """Tree entries under ``base`` ("" = root), with directory entries, sorted by path.

    Raises ``EntryNotFound`` when ``base`` is neither the root nor a directory.
    """
    base = base.strip("/")
    prefix = base + "/" if base else ""
    if base and not any(p.startswith(prefix) for p in files):
        raise HubStoreError(404, "EntryNotFound", f"{base} does not exist or is not a folder")
    dirs: set[str] = set()
    out: list[dict[str, Any]] = []
    for path, entry in files.items():
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):].split("/")
        depth = len(rest) if recursive else 1
        for i in range(1, min(depth, len(rest) - 1) + 1):
            dirs.add(prefix + "/".join(rest[:i]))
        if recursive or len(rest) == 1:
            out.append(entry.tree_json(xet))
    out += [dir_json(d) for d in dirs]
    return sorted(out, key=lambda e: e["path"])


def dir_json(path: str) -> dict[str, Any]:
    return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0,
            "path": path}
