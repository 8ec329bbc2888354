"""Generic Hub transfers shared by datasets and probes: batched resumable uploads, pinned
downloads with sha256 checks, the Hub's size limits, and the mapping of client errors onto
actstore's errors.

A leaf module: it imports only :mod:`actstore.errors` and, lazily, ``huggingface_hub``.
Nothing here knows the activation format: callers say which files to commit last (the
"commit point", e.g. a dataset index), pass extra in-memory files (a README card) and the
sha256 they already know (the writer records every file's), so the client does not read
every byte again to hash it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

from .errors import (
    ActstoreError,
    DatasetNotFoundError,
    HubAuthError,
    HubError,
    IntegrityError,
    InvalidArgumentError,
    UnsafePathError,
    require,
)

__all__ = [
    "HUB_LIMITS",
    "DownloadPool",
    "HubLimits",
    "check_hub_limits",
    "download_files",
    "hub_errors",
    "make_api",
    "remote_files",
    "sha256_file",
    "upload_folder_in_batches",
]

_TOKEN_FIX = ("log in with `hf auth login` or set the HF_TOKEN environment variable "
              "(or pass token=) to a token with {need} access to this namespace")


@dataclass(frozen=True)
class HubLimits:
    """What the Hub accepts in one repo (its documented limits, late 2026).

    Attributes
    ----------
    files_per_folder : int
        Files in one folder (the Hub slows down and then refuses beyond about 10 k).
    files_per_repo : int
        Files in the whole repo (about 100 k).
    file_bytes : int
        Largest file recommended (20 GB); bigger files upload and download unreliably.
    """

    files_per_folder: int = 10_000
    files_per_repo: int = 100_000
    file_bytes: int = 20 * 10**9


HUB_LIMITS = HubLimits()


def check_hub_limits(sizes: Mapping[str, int], *, repo_id: str,
                     limits: HubLimits = HUB_LIMITS, fix_more: str = "", fix_fewer: str = "") -> None:
    """Refuse, before anything is sent, a folder the Hub would not accept.

    Parameters
    ----------
    sizes : mapping
        Repo path -> size in bytes of every file the repo will hold.
    repo_id : str
        Named in the message.
    limits : HubLimits
        The limits to check.
    fix_more, fix_fewer : str
        How the caller makes fewer, bigger files (too many files) or more, smaller ones
        (a file too big); appended to the message.

    Raises
    ------
    InvalidArgumentError
        Too many files in one folder or in the repo, or a file larger than ``limits.file_bytes``.
    """
    if len(sizes) > limits.files_per_repo:
        raise InvalidArgumentError(
            f"Pushing {len(sizes)} files to {repo_id!r} exceeds the Hub's limit of "
            f"{limits.files_per_repo} files per repo; nothing was sent. {fix_more}".rstrip())
    folders = Counter(p.rpartition("/")[0] for p in sizes)
    folder, n = folders.most_common(1)[0] if folders else ("", 0)
    if n > limits.files_per_folder:
        raise InvalidArgumentError(
            f"Folder {folder or '.'!r} would hold {n} files in {repo_id!r}, more than the Hub's "
            f"limit of {limits.files_per_folder} files per folder; nothing was sent. "
            f"{fix_more}".rstrip())
    big = [(s, p) for p, s in sizes.items() if s > limits.file_bytes]
    if big:
        size, path = max(big)
        raise InvalidArgumentError(
            f"{path} is {size / 1e9:.1f} GB, more than the {limits.file_bytes / 1e9:.0f} GB per "
            f"file the Hub accepts reliably; nothing was sent to {repo_id!r}. {fix_fewer}".rstrip())


def make_api(token: str | bool | None = None, endpoint: str | None = None) -> Any:
    """An ``HfApi`` for ``endpoint`` (default: ``HF_ENDPOINT``) and ``token`` (default: the
    client's own lookup: ``HF_TOKEN``, then the stored login). Whether uploads go through Xet
    or classic LFS is left to the client (actstore never switches Xet off)."""
    hf = require("huggingface_hub", "hub")
    return hf.HfApi(endpoint=endpoint, token=token)  # type: ignore[attr-defined]


@contextlib.contextmanager
def hub_errors(repo_id: str, action: str, *, revision: str | None = None,
               write: bool = False, repo_kind: str = "dataset") -> Iterator[None]:
    """Translate ``huggingface_hub`` errors raised inside the block into actstore errors.

    Parameters
    ----------
    repo_id : str
        Named in every message, and set as the error's ``repo_id`` attribute.
    action : str
        What was being done, e.g. ``"push to"``; used as "Could not {action} {repo_id}".
    revision : str, optional
        Named when the revision does not exist.
    write : bool
        Whether the block writes (a 401/403 then asks for a write token).
    repo_kind : str
        What the repo holds, in messages ("dataset", "probe (model)").

    Raises
    ------
    DatasetNotFoundError
        The repo or revision does not exist (``repo_id`` and ``status`` = 404 attached).
    HubAuthError, HubError
        The Hub refused or failed; ``status`` is the HTTP status (None for a network error).
    """
    errors = require("huggingface_hub.errors", "hub")
    need = "write" if write else "read"
    kind = repo_kind[0].upper() + repo_kind[1:]
    try:
        yield
    except ActstoreError:
        raise  # already ours (DatasetExistsError is an OSError, HubError a RuntimeError)
    except errors.RevisionNotFoundError:  # type: ignore[attr-defined]
        raise _tag(DatasetNotFoundError(
            f"Revision {revision!r} does not exist in {repo_kind} repo {repo_id!r}; pass a branch "
            "name or a commit sha that the repo has (see its commit history)."
        ), repo_id, 404) from None
    except errors.RepositoryNotFoundError:  # type: ignore[attr-defined]
        raise _tag(DatasetNotFoundError(
            f"{kind} repo {repo_id!r} was not found (or is private and the token cannot read "
            f"it); check the repo id, or {_TOKEN_FIX.format(need='read')}."
        ), repo_id, 404) from None
    except errors.HfHubHTTPError as exc:  # type: ignore[attr-defined]
        raise _http_error(exc, repo_id, action, need) from exc
    except RuntimeError as exc:
        # the client wraps failed LFS uploads in a bare RuntimeError
        cause = exc.__cause__
        if isinstance(cause, errors.HfHubHTTPError):  # type: ignore[attr-defined]
            raise _http_error(cause, repo_id, action, need) from exc
        raise
    except (OSError, _transport_error()) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise  # local files, not the network
        xet_status = _XET_STATUS.search(str(exc))
        if xet_status is not None:  # hf_xet reports the Hub's answer to its token request so
            raise _http_error(exc, repo_id, action, need, int(xet_status[1])) from exc
        raise _tag(HubError(
            f"Could not {action} {repo_id!r}: network error ({exc}); rerun to resume (files "
            "already transferred are not sent again)."), repo_id, None) from exc


_E = TypeVar("_E", HubError, DatasetNotFoundError)


def _tag(err: _E, repo_id: str, status: int | None) -> _E:
    """``err`` with the ``repo_id`` and HTTP ``status`` it is about, as attributes."""
    err.repo_id, err.status = repo_id, status
    return err


def _transport_error() -> type[Exception]:
    try:  # huggingface_hub 1.x+ talks through httpx (2.x: the httpx2 fork)
        import httpx2

        return httpx2.TransportError  # type: ignore[no-any-return]
    except ImportError:
        import httpx

        return httpx.TransportError


# how hf_xet words an HTTP error of the Hub (e.g. on its xet-write-token request)
_XET_STATUS = re.compile(r"HTTP status (?:client|server) error \((\d{3})\b")


def _http_error(exc: Any, repo_id: str, action: str, need: str,
                status: int | None = None) -> HubError:
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if status == 401:
        err: HubError = HubAuthError(
            f"Could not {action} {repo_id!r}: the Hub did not accept the credentials (no token, "
            f"or an invalid one; HTTP 401). Nothing was committed. Fix: {_TOKEN_FIX.format(need=need)}."
        )
    elif status == 403:
        err = HubAuthError(
            f"Could not {action} {repo_id!r}: the token has no {need} access to this repo or "
            f"namespace (read-only token or another namespace; HTTP 403). Nothing was committed "
            f"by this request. Fix: {_TOKEN_FIX.format(need=need)}."
        )
    elif status == 404:  # not found: rerunning cannot help
        err = HubError(f"Could not {action} {repo_id!r}: the Hub answered HTTP 404, not found "
                       f"({first}); check the repo id and the revision.")
    else:
        err = HubError(f"Could not {action} {repo_id!r}: the Hub answered HTTP {status} "
                       f"({first}). Rerun to resume; files already uploaded are not sent again.")
    return _tag(err, repo_id, status)


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def remote_files(api: Any, repo_id: str, repo_type: str, revision: str) -> dict[str, str]:
    """Path -> content id of every remote file (sha256 for LFS, git sha1 otherwise)."""
    out: dict[str, str] = {}
    for e in api.list_repo_tree(repo_id, repo_type=repo_type, revision=revision, recursive=True):
        if getattr(e, "lfs", None) is not None:
            out[e.path] = e.lfs.sha256
        elif hasattr(e, "blob_id"):
            out[e.path] = e.blob_id
    return out


def _local_files(local_dir: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(local_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [os.path.relpath(os.path.join(root, f), local_dir).replace(os.sep, "/")
                for f in sorted(files) if not f.startswith(".")]
    return out


def _batches(paths: Sequence[str], sizes: Mapping[str, int], batch_bytes: int,
             batch_files: int) -> list[list[str]]:
    out: list[list[str]] = []
    cur: list[str] = []
    total = 0
    for p in paths:
        if cur and (total + sizes[p] > batch_bytes or len(cur) >= batch_files):
            out.append(cur)
            cur, total = [], 0
        cur.append(p)
        total += sizes[p]
    return out + ([cur] if cur else [])


def upload_folder_in_batches(
    local_dir: str | os.PathLike[str], repo_id: str, repo_type: str, *, api: Any,
    revision: str = "main", last: Callable[[str], bool] = lambda p: False,
    extra_files: Mapping[str, bytes] | None = None, known_sha256: Mapping[str, str] | None = None,
    delete_stale: Callable[[str], bool] = lambda p: False, batch_bytes: int = 2 << 30,
    batch_files: int = 200, message: str = "Upload", progress: Callable[[str], None] | None = None,
    limits: HubLimits | None = None, fix_more: str = "", fix_fewer: str = "",
) -> str:
    """Upload ``local_dir`` so that readers never see a half state, resumably.

    Files for which ``last(path)`` is true (the commit point, e.g. the index) and
    ``extra_files`` (e.g. a generated README) go in the final commit; everything else goes
    first, in commits of at most ``batch_bytes`` / ``batch_files``. When all of it fits in one
    batch, there is a single commit. Files whose remote content already matches (by
    ``known_sha256`` or git sha1) are not sent again, so rerunning an interrupted upload sends
    only what is missing. Remote files for which ``delete_stale(path)`` is true and that are
    not part of this upload are deleted in the final commit.

    ``known_sha256`` must hold only values the caller trusts (e.g. recorded by the writer,
    for a file unchanged since): they are handed to the client as the files' sha256, so it
    does not read every byte again to hash it (Xet and LFS alike). ``limits`` (default
    :data:`HUB_LIMITS`) are checked on the repo's resulting file set before anything is sent;
    ``fix_more`` / ``fix_fewer`` say how to make fewer or smaller files.

    Returns
    -------
    str
        The sha of the head commit after the upload.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    local_dir = os.fspath(local_dir)
    extra = dict(extra_files or {})
    known = dict(known_sha256 or {})
    remote = remote_files(api, repo_id, repo_type, revision)
    paths = [p for p in _local_files(local_dir) if p not in extra]
    sizes = {p: os.path.getsize(os.path.join(local_dir, p)) for p in paths}
    final_set = {p: 0 for p in remote if not delete_stale(p)} | sizes
    final_set |= {p: len(data) for p, data in extra.items()}
    check_hub_limits(final_set, repo_id=repo_id, limits=limits or HUB_LIMITS,
                     fix_more=fix_more, fix_fewer=fix_fewer)

    def add(p: str) -> Any:
        op = CommitOperationAdd(p, os.path.join(local_dir, p))
        info = getattr(op, "upload_info", None)
        if p in known and info is not None and not getattr(info, "is_hashed", True):
            info.sha256 = bytes.fromhex(known[p])  # the client's public setter: no re-hash
        return op

    def unchanged(p: str) -> bool:
        return p in remote and known.get(p) == remote[p]

    body = [p for p in paths if not last(p) and not unchanged(p)]
    # an unchanged commit point is not sent again either (Xet would re-chunk it to find out)
    final = [p for p in paths if last(p) and not unchanged(p)]
    stale = [p for p in remote if delete_stale(p) and p not in sizes and p not in extra]
    batches = _batches(body, sizes, batch_bytes, batch_files)
    if len(batches) <= 1 and sum(sizes[p] for p in body) <= batch_bytes:
        final, batches = body + final, []  # small: one commit holds everything
    for i, batch in enumerate(batches, 1):
        if progress:
            progress(f"batch {i}/{len(batches)}: {len(batch)} files, "
                     f"{sum(sizes[p] for p in batch) / 1e6:.1f} MB")
        ops = [add(p) for p in batch]
        api.create_commit(repo_id, ops, repo_type=repo_type, revision=revision,
                          commit_message=f"{message} (part {i}/{len(batches)})")
    ops: list[Any] = [add(p) for p in final]
    ops += [CommitOperationAdd(p, data) for p, data in extra.items()]
    ops += [CommitOperationDelete(p) for p in stale]
    if progress:
        progress(f"final commit: {len(ops)} operations")
    info = api.create_commit(repo_id, ops, repo_type=repo_type, revision=revision,
                             commit_message=message)
    return str(info.oid)


class _HashingWriter:
    """A file the client's ``http_get`` writes to that hashes every chunk on a thread of its
    own while the download goes on (``hashlib`` releases the GIL), at most ``depth`` chunks
    behind. A rewind (the client restarts a download the server would not resume) drops the
    running hash: :meth:`hexdigest` then hashes the finished file."""

    def __init__(self, f: BinaryIO, *, depth: int = 3) -> None:
        import queue

        self._f = f
        self._chunks: queue.Queue[bytes | None] = queue.Queue(depth)
        self._hash = hashlib.sha256()
        self._valid = True
        self._thread = threading.Thread(target=self._run, name="actstore-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._hash.update(chunk)

    def write(self, data: bytes) -> int:
        if self._valid:
            self._chunks.put(data)
        return self._f.write(data)

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        self._valid = False
        return self._f.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        self._valid = False
        return self._f.truncate(size)

    def close(self) -> None:
        """Stop the hashing thread (idempotent)."""
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()

    def hexdigest(self, path: str) -> str:
        """The sha256 of what was written, the file at ``path`` once it is complete."""
        self.close()
        return self._hash.hexdigest() if self._valid else sha256_file(path)


@dataclass(frozen=True)
class _Entry:
    size: int
    sha256: str | None  # what the Hub lists for an LFS / Xet file
    xet: bool


class DownloadPool:
    """Pinned downloads of one repo on one pool of threads, each file's sha256 checked in the
    thread that downloaded it.

    The repo's file listing (one ``tree`` call, as ``snapshot_download`` makes) is requested
    at once; files are queued with :meth:`submit` as soon as the caller knows their names, so
    a small file that names the big ones (a dataset index) and the big ones share the pool,
    with no serial phase. A file the listing marks as Xet goes through the client's
    ``hf_hub_download`` (its HEAD + ``hf_xet``) and is hashed right after; any other file is
    one GET through the client's ``http_get`` (its retries and resumes), hashed while it
    streams in, without the HEAD the listing made redundant. A file submitted with nothing
    known of it (no sha256, no size: an index, a card) is that one GET at once, without
    waiting for the listing, and is checked against the listing's sha256 when it is done. A
    file already in ``local_dir`` with the expected size and sha256 is not downloaded again.

    Parameters
    ----------
    repo_id, repo_type : str
        The repo.
    revision : str
        A commit sha (pin it first: a branch could move between two files).
    local_dir : str
        Where files land, at their repo paths.
    token, endpoint : optional
        As for ``HfApi``.
    max_workers : int
        Downloads at once (``snapshot_download`` uses 8).

    Examples
    --------
    >>> with DownloadPool("org/ds", "dataset", revision=sha, local_dir="d") as pool:  # doctest: +SKIP
    ...     index = pool.submit("index/train-00000-of-00001.parquet")
    ...     pool.wait([index])
    """

    def __init__(self, repo_id: str, repo_type: str, *, revision: str, local_dir: str,
                 token: str | bool | None = None, endpoint: str | None = None,
                 max_workers: int = 8) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.repo_id, self.repo_type, self.revision = repo_id, repo_type, revision
        self.local_dir, self.token, self.endpoint = os.path.abspath(local_dir), token, endpoint
        self._api = make_api(token, endpoint)
        self._pool = ThreadPoolExecutor(max_workers + 1, thread_name_prefix="actstore-hub-get")
        self._listing = self._pool.submit(self._list)

    def __enter__(self) -> DownloadPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _list(self) -> dict[str, _Entry]:
        out: dict[str, _Entry] = {}
        files = [e for e in self._api.list_repo_tree(self.repo_id, repo_type=self.repo_type,
                                                     revision=self.revision, recursive=True)
                 if hasattr(e, "size") and hasattr(e, "blob_id")]  # files, not folders
        for e in files:
            lfs = getattr(e, "lfs", None)
            out[e.path] = _Entry(int(e.size), lfs.sha256 if lfs is not None else None,
                                 getattr(e, "xet_hash", None) is not None)
        self._share_listing(files)
        return out

    def _share_listing(self, files: list[Any]) -> None:
        """Hand the listing to the client's per-commit tree cache of ``local_dir``, as
        ``snapshot_download`` does, so its ``hf_hub_download`` of a Xet file skips the HEAD.
        The cache is the client's private module: without it, that HEAD is simply made."""
        try:
            from huggingface_hub._tree_cache import (
                TreeCacheEntry,
                tree_cache_folder_for_local_dir,
                write_tree_cache,
            )
        except ImportError:  # another client version: one HEAD per Xet file, nothing worse
            return
        entries = {e.path: TreeCacheEntry(
            size=e.size, blob_id=e.blob_id, lfs_sha256=e.lfs.sha256 if e.lfs else None,
            lfs_size=e.lfs.size if e.lfs else None, xet_hash=getattr(e, "xet_hash", None))
            for e in files}
        with contextlib.suppress(OSError, TypeError):
            write_tree_cache(tree_cache_folder_for_local_dir(self.local_dir), self.revision, entries)

    def submit(self, path: str, sha256: str | None = None, size: int | None = None) -> Future[bool]:
        """Queue ``path``; the future is True once it is in place and checked, False when the
        repo has no such file and nothing was expected of it (no ``sha256``).

        ``sha256`` / ``size`` are what the caller's metadata records (checked against the
        listing before any byte moves, and ``sha256`` against the bytes); without them the
        listing's sha256 of an LFS / Xet file is checked. A mismatch raises
        :class:`~actstore.errors.IntegrityError` from the future and leaves no file.
        """
        return self._pool.submit(self._fetch, path, sha256, size)

    @staticmethod
    def wait(futures: Sequence[Future[bool]]) -> list[bool]:
        """The futures' results in order; the first failure raises (queued ones are cancelled
        when the pool closes)."""
        from concurrent.futures import FIRST_EXCEPTION
        from concurrent.futures import wait as wait_all

        wait_all(futures, return_when=FIRST_EXCEPTION)
        return [f.result() for f in futures]

    def _where(self) -> str:
        return f"{self.repo_id}@{self.revision}"

    def _fetch(self, path: str, want: str | None, size: int | None) -> bool:
        full = os.path.abspath(os.path.join(self.local_dir, *path.split("/")))
        if not full.startswith(self.local_dir + os.sep) or ".." in path.split("/"):
            raise UnsafePathError(
                f"Repo path {path!r} of {self._where()} would land outside {self.local_dir}; "
                "refusing to write it. The dataset's metadata names an unsafe path: push the "
                "dataset again from a trusted copy.")
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if want is None and size is None:
            # nothing known of it yet (an index, a card): one GET at once, not after the listing
            return self._land(path, full, None, lambda part: self._get_http(path, part, None))
        entry = self._listing.result().get(path)
        if entry is None:
            if want is None:
                return False
            raise IntegrityError(
                f"{path} is named by the dataset's metadata but {self._where()} holds no such "
                "file; the repo is incomplete (a push did not finish, or the file was deleted). "
                "Push the dataset again, or pull only layers/views whose files exist.")
        if size is not None and size != entry.size:
            raise IntegrityError(
                f"{path} is {entry.size} bytes in {self._where()}, but the dataset's metadata "
                f"records {size}; nothing was downloaded. The repo holds a different file than "
                "its index describes: push the dataset again.")
        if want is not None and os.path.isfile(full) and os.path.getsize(full) == entry.size \
                and sha256_file(full) == want:
            return True  # pulled before, intact
        if entry.xet:
            return self._land(path, full, want, lambda part: self._get_xet(path, full), xet=True)
        return self._land(path, full, want, lambda part: self._get_http(path, part, entry.size))

    def _land(self, path: str, full: str, want: str | None, get: Callable[[str], str | None],
              *, xet: bool = False) -> bool:
        """Run ``get`` (download into a part file, or into place for Xet; the sha256 of the
        bytes, None when the repo has no such file), check the sha256 and move it into place."""
        head, name = os.path.split(full)
        part = full if xet else os.path.join(head, f".{name}.{threading.get_ident()}.part")
        try:
            got = get(part)
            if got is None:
                return False
            source = "the dataset's metadata records"
            if want is None:  # nothing recorded: the sha256 the Hub lists for an LFS/Xet file
                source, entry = "the Hub lists", self._listing.result().get(path)
                want = entry.sha256 if entry is not None else None
            if want is not None and got != want:
                for stale in {part, full}:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(stale)
                self._forget(path)
                raise IntegrityError(
                    f"{path} downloaded from {self._where()} has sha256 {got}, but {source} "
                    f"{want}; the file was deleted and not used. Pull again; if it persists, the "
                    "repo holds a corrupt file and must be pushed again.")
            if not xet:
                os.replace(part, full)
                self._forget(path)  # the client's record of an older copy no longer holds
            return True
        finally:
            if not xet:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part)

    def _forget(self, path: str) -> None:
        """Drop the client's local-dir record of ``path``, so it never vouches for other bytes."""
        meta = os.path.join(self.local_dir, ".cache", "huggingface", "download", path + ".metadata")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(meta)

    def _get_xet(self, path: str, full: str) -> str:
        from huggingface_hub import hf_hub_download

        hf_hub_download(self.repo_id, path, repo_type=self.repo_type, revision=self.revision,
                        local_dir=self.local_dir, token=self.token, endpoint=self.endpoint)
        return sha256_file(full)

    def _get_http(self, path: str, part: str, size: int | None) -> str | None:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.errors import EntryNotFoundError
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        url = hf_hub_url(self.repo_id, path, repo_type=self.repo_type, revision=self.revision,
                         endpoint=self.endpoint)
        with open(part, "wb") as f:
            sink = _HashingWriter(f)
            try:
                http_get(url, sink, headers=build_hf_headers(token=self.token),  # type: ignore[arg-type]
                         expected_size=size, displayed_filename=path)
            except EntryNotFoundError:
                return None
            finally:
                sink.close()
        return sink.hexdigest(part)


def download_files(
    repo_id: str, repo_type: str, paths: Sequence[str], *, revision: str, local_dir: str,
    token: str | bool | None = None, endpoint: str | None = None,
    expected_sha256: Mapping[str, str] | None = None, max_workers: int = 8,
) -> None:
    """Download ``paths`` at a pinned ``revision`` into ``local_dir``, checking sha256s, on one
    :class:`DownloadPool`.

    A file whose sha256 differs from ``expected_sha256`` (or, without one, from the sha256 the
    Hub lists for an LFS / Xet file) is deleted and :class:`~actstore.errors.IntegrityError`
    is raised, so a corrupt file is never used; a path the repo lacks is skipped unless a
    sha256 is expected of it.
    """
    expected = expected_sha256 or {}
    with DownloadPool(repo_id, repo_type, revision=revision, local_dir=local_dir, token=token,
                      endpoint=endpoint, max_workers=max_workers) as pool:
        pool.wait([pool.submit(p, expected.get(p)) for p in paths])
