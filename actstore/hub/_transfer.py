"""Generic Hub transfers shared by datasets and probes: batched resumable uploads, pinned
downloads with sha256 checks, and the mapping of client errors onto actstore's errors.

Nothing here knows the activation format: callers say which files to commit last (the
"commit point", e.g. a dataset index) and pass extra in-memory files (a README card).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import (
    ActstoreError,
    DatasetNotFoundError,
    HubAuthError,
    HubError,
    IntegrityError,
    require,
)

__all__ = [
    "download_files",
    "hub_errors",
    "make_api",
    "remote_files",
    "sha256_file",
    "upload_folder_in_batches",
]

_TOKEN_FIX = ("log in with `hf auth login` or set the HF_TOKEN environment variable "
              "(or pass token=) to a token with {need} access to this namespace")


def make_api(token: str | bool | None = None, endpoint: str | None = None) -> Any:
    """An ``HfApi`` for ``endpoint`` (default: ``HF_ENDPOINT``) and ``token`` (default: the
    client's own lookup: ``HF_TOKEN``, then the stored login). Whether uploads go through Xet
    or classic LFS is left to the client."""
    hf = require("huggingface_hub", "hub")
    return hf.HfApi(endpoint=endpoint, token=token)  # type: ignore[attr-defined]


@contextlib.contextmanager
def hub_errors(repo_id: str, action: str, *, revision: str | None = None,
               write: bool = False) -> Iterator[None]:
    """Translate ``huggingface_hub`` errors raised inside the block into actstore errors.

    Parameters
    ----------
    repo_id : str
        Named in every message.
    action : str
        What was being done, e.g. ``"push to"``; used as "Could not {action} {repo_id}".
    revision : str, optional
        Named when the revision does not exist.
    write : bool
        Whether the block writes (a 401/403 then asks for a write token).
    """
    errors = require("huggingface_hub.errors", "hub")
    need = "write" if write else "read"
    try:
        yield
    except ActstoreError:
        raise  # already ours (DatasetExistsError is an OSError, HubError a RuntimeError)
    except errors.RevisionNotFoundError:  # type: ignore[attr-defined]
        raise DatasetNotFoundError(
            f"Revision {revision!r} does not exist in dataset repo {repo_id!r}; pass a branch "
            "name or a commit sha that the repo has (see its commit history)."
        ) from None
    except errors.RepositoryNotFoundError:  # type: ignore[attr-defined]
        raise DatasetNotFoundError(
            f"Dataset repo {repo_id!r} was not found (or is private and the token cannot read "
            f"it); check the repo id, or {_TOKEN_FIX.format(need='read')}."
        ) from None
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
        raise HubError(f"Could not {action} {repo_id!r}: network error ({exc}); rerun to "
                       "resume (files already transferred are not sent again).") from exc


def _transport_error() -> type[Exception]:
    try:  # huggingface_hub 1.x+ talks through httpx (2.x: the httpx2 fork)
        import httpx2

        return httpx2.TransportError  # type: ignore[no-any-return]
    except ImportError:
        import httpx

        return httpx.TransportError


def _http_error(exc: Any, repo_id: str, action: str, need: str) -> HubError:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 401:
        return HubAuthError(
            f"Could not {action} {repo_id!r}: the Hub did not accept the credentials (no token, "
            f"or an invalid one; HTTP 401). Nothing was committed. Fix: {_TOKEN_FIX.format(need=need)}."
        )
    if status == 403:
        return HubAuthError(
            f"Could not {action} {repo_id!r}: the token has no {need} access to this repo or "
            f"namespace (read-only token or another namespace; HTTP 403). Nothing was committed "
            f"by this request. Fix: {_TOKEN_FIX.format(need=need)}."
        )
    if status == 404:  # not found: rerunning cannot help
        return HubError(f"Could not {action} {repo_id!r}: the Hub answered HTTP 404, not found "
                        f"({str(exc).splitlines()[0]}); check the repo id and the revision.")
    return HubError(f"Could not {action} {repo_id!r}: the Hub answered HTTP {status} "
                    f"({str(exc).splitlines()[0]}). Rerun to resume; files already uploaded "
                    "are not sent again.")


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
) -> str:
    """Upload ``local_dir`` so that readers never see a half state, resumably.

    Files for which ``last(path)`` is true (the commit point, e.g. the index) and
    ``extra_files`` (e.g. a generated README) go in the final commit; everything else goes
    first, in commits of at most ``batch_bytes`` / ``batch_files``. When all of it fits in one
    batch, there is a single commit. Files whose remote content already matches (by
    ``known_sha256`` or git sha1) are not sent again, so rerunning an interrupted upload sends
    only what is missing. Remote files for which ``delete_stale(path)`` is true and that are
    not part of this upload are deleted in the final commit.

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

    def unchanged(p: str) -> bool:
        return p in remote and known.get(p) == remote[p]

    body = [p for p in paths if not last(p) and not unchanged(p)]
    final = [p for p in paths if last(p)]
    stale = [p for p in remote if delete_stale(p) and p not in sizes and p not in extra]
    batches = _batches(body, sizes, batch_bytes, batch_files)
    if len(batches) <= 1 and sum(sizes[p] for p in body) <= batch_bytes:
        final, batches = body + final, []  # small: one commit holds everything
    for i, batch in enumerate(batches, 1):
        if progress:
            progress(f"batch {i}/{len(batches)}: {len(batch)} files, "
                     f"{sum(sizes[p] for p in batch) / 1e6:.1f} MB")
        ops = [CommitOperationAdd(p, os.path.join(local_dir, p)) for p in batch]
        api.create_commit(repo_id, ops, repo_type=repo_type, revision=revision,
                          commit_message=f"{message} (part {i}/{len(batches)})")
    ops: list[Any] = [CommitOperationAdd(p, os.path.join(local_dir, p)) for p in final]
    ops += [CommitOperationAdd(p, data) for p, data in extra.items()]
    ops += [CommitOperationDelete(p) for p in stale]
    if progress:
        progress(f"final commit: {len(ops)} operations")
    info = api.create_commit(repo_id, ops, repo_type=repo_type, revision=revision,
                             commit_message=message)
    return str(info.oid)


def download_files(
    repo_id: str, repo_type: str, paths: Sequence[str], *, revision: str, local_dir: str,
    token: str | bool | None = None, endpoint: str | None = None,
    expected_sha256: Mapping[str, str] | None = None, max_workers: int = 8,
) -> None:
    """Download ``paths`` at a pinned ``revision`` into ``local_dir``, checking sha256s.

    A file whose sha256 differs from ``expected_sha256`` is deleted and
    :class:`~actstore.errors.IntegrityError` is raised, so a corrupt file is never used.
    """
    hf = require("huggingface_hub", "hub")
    hf.snapshot_download(  # type: ignore[attr-defined]
        repo_id, repo_type=repo_type, revision=revision, allow_patterns=list(paths),
        local_dir=local_dir, token=token, endpoint=endpoint, max_workers=max_workers,
    )
    for p in paths:
        want = (expected_sha256 or {}).get(p)
        full = os.path.join(local_dir, p)
        if want is None:
            continue
        if not os.path.isfile(full):  # the client skips a pattern that matches nothing
            raise IntegrityError(
                f"{p} is named by the dataset's metadata but {repo_id}@{revision} holds no such "
                "file; the repo is incomplete (a push did not finish, or the file was deleted). "
                "Push the dataset again, or pull only layers/views whose files exist."
            )
        got = sha256_file(full)
        if got != want:
            os.unlink(full)
            # drop the client's metadata too, so the next pull downloads it again
            meta = os.path.join(local_dir, ".cache", "huggingface", "download", p + ".metadata")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(meta)
            raise IntegrityError(
                f"{p} downloaded from {repo_id}@{revision} has sha256 {got}, but the dataset's "
                f"metadata records {want}; the file was deleted and not used. Pull again; if it "
                "persists, the repo holds a corrupt file and must be pushed again."
            )
