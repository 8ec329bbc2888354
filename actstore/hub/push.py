"""``push_dataset``: upload a local dataset, data first and the index (with the card) last.

A reader never sees an index pointing at missing shards; rerunning an interrupted push sends
only what is missing. The sha256 the writer recorded are handed to the client for files
unchanged since (same size, not modified after the index), so the client does not hash every
byte again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..errors import DatasetExistsError, IntegrityError, InvalidArgumentError
from ..format.metadata import decode_schema_metadata
from ..format.reader import Dataset
from ..hub_client import (
    HUB_LIMITS,
    HubLimits,
    check_hub_limits,
    hub_errors,
    make_api,
    remote_files,
    sha256_file,
    upload_folder_in_batches,
)
from ._common import INDEX_PATH, bars, is_index
from .card import build_dataset_card

__all__ = ['push_dataset']


def _check_local(path: str) -> Dataset:
    from ..format.reader import open_dataset

    ds = open_dataset(path)
    for rel, f in ds.info.files.items():
        full = os.path.join(path, rel)
        if not os.path.exists(full) or os.path.getsize(full) != f["size"]:
            raise IntegrityError(
                f"{full} is missing or not {f['size']} bytes as the index records; the local "
                "dataset is incomplete, so it was not pushed. Run `actstore verify` on it."
            )
    return ds


def _trusted_sha256(path: str, ds: Dataset) -> dict[str, str]:
    """Every dataset file's sha256, from the index where it can be trusted, else hashed here.

    The writer records each file's sha256 and size in the index, which it writes last. A file
    whose size matches and that was not modified after the index (mtime not newer) still holds
    what was hashed: its recorded sha256 is used as is, so neither actstore nor the Hub client
    reads it again. Any other file is hashed once here; one that no longer matches its record
    is refused.

    Raises
    ------
    IntegrityError
        A file modified after the index no longer has the sha256 the index records.
    """
    index_mtime = os.stat(os.path.join(path, INDEX_PATH)).st_mtime_ns
    out: dict[str, str] = {}
    for rel, f in ds.info.files.items():
        full = os.path.join(path, rel)
        st = os.stat(full)
        if st.st_size == f["size"] and st.st_mtime_ns <= index_mtime:
            out[rel] = f["sha256"]
            continue
        got = sha256_file(full)
        if got != f["sha256"]:
            raise IntegrityError(
                f"{full} was modified after the dataset index was written and its sha256 {got} "
                f"is not the {f['sha256']} the index records; nothing was pushed. Run "
                "`actstore verify` on the dataset, and extract it again if it is damaged."
            )
        out[rel] = got
    return out


_IMAGE_MAGIC = {".png": (b"\x89PNG\r\n\x1a\n",), ".jpg": (b"\xff\xd8\xff",),
                ".jpeg": (b"\xff\xd8\xff",), ".svg": (b"<?xml", b"<svg")}


def _sweep_image(plot: str | os.PathLike[str] | None) -> dict[str, bytes]:
    """``{"images/sweep.<ext>": bytes}`` for a sweep plot, checked to be the image it says."""
    if plot is None:
        return {}
    ext = os.path.splitext(os.fspath(plot))[1].lower()
    with open(plot, "rb") as f:
        data = f.read()
    if ext not in _IMAGE_MAGIC or not data.lstrip().startswith(_IMAGE_MAGIC[ext]):
        raise InvalidArgumentError(
            f"sweep_plot {os.fspath(plot)!r} is not a PNG, JPEG or SVG image (by its extension "
            "and first bytes); pass the plot file a sweep wrote, e.g. <demo out>/sweep.png."
        )
    return {f"images/sweep{'.jpg' if ext == '.jpeg' else ext}": data}


def _label_counts(ds: Dataset) -> dict[str, int] | None:
    """Rows per label value, in sorted order; None without labels."""
    import numpy as np

    labels = ds.labels
    if labels is None:
        return None
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    return {str(v): int(n) for v, n in zip(values.tolist(), counts.tolist(), strict=True)}


_MORE = ("Write fewer, larger shards: extract again with a bigger shard_bytes "
         "(e.g. shard_bytes=4 << 30), or push fewer layers/views.")
_FEWER = ("Write smaller shards: extract again with a smaller shard_bytes "
          "(e.g. shard_bytes=2 << 30).")


def _content(index_file: str) -> tuple[Any, dict[str, Any]]:
    """An index's rows and metadata, less what differs between identical extractions
    (``created_at``); the metadata holds every shard's sha256, so equal content means the
    same dataset."""
    import pyarrow.parquet as pq

    table = pq.read_table(index_file)
    meta = decode_schema_metadata(table.schema.metadata)
    prov = meta.get("lmprobe:provenance")
    if isinstance(prov, dict):
        meta["lmprobe:provenance"] = {k: v for k, v in prov.items() if k != "created_at"}
    return table.replace_schema_metadata(None), meta



def _same_dataset(api: Any, repo_id: str, revision: str, local_index: str) -> bool:
    """Whether the repo's index describes the same dataset as ``local_index`` (by content)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="actstore-push-") as tmp:
        remote = api.hf_hub_download(repo_id, INDEX_PATH, repo_type="dataset", revision=revision,
                                     local_dir=tmp)
        old_rows, old_meta = _content(remote)
    new_rows, new_meta = _content(local_index)
    return bool(old_meta == new_meta and old_rows.equals(new_rows))



def _check_target(api: Any, repo_id: str, revision: str, index_sha: str, overwrite: bool,
                  local_index: str) -> None:
    """Refuse to mix two datasets in one repo; with ``overwrite``, retract the old index first.

    An index that differs only in ``created_at`` (the same extraction run again) is the same
    dataset: it is replaced without ``overwrite``.
    """
    remote = remote_files(api, repo_id, "dataset", revision)
    old = {p: oid for p, oid in remote.items() if is_index(p)}
    if not old or old == {INDEX_PATH: index_sha}:
        return  # empty repo, an interrupted push of this dataset, or this very dataset
    if list(old) == [INDEX_PATH] and _same_dataset(api, repo_id, revision, local_index):
        return  # the same content; the new index replaces the old one in the final commit
    if not overwrite:
        raise DatasetExistsError(
            f"Dataset repo {repo_id!r} (revision {revision!r}) already holds a different "
            "dataset (its rows, shards or settings differ from the one being pushed); push to "
            "another repo, or pass overwrite=True (CLI: --overwrite) to replace it."
        )
    from huggingface_hub import CommitOperationDelete

    # readers must never pair the old index with new shards of the same name
    api.create_commit(repo_id, [CommitOperationDelete(p) for p in old], repo_type="dataset",
                      revision=revision, commit_message="Retract the previous dataset index")



def push_dataset(
    path: str | os.PathLike[str], repo_id: str, *, private: bool | None = None,
    token: str | bool | None = None, revision: str = "main", overwrite: bool = False,
    license: str = "cc-by-4.0", tags: Sequence[str] | None = None, batch_bytes: int = 2 << 30,
    endpoint: str | None = None, progress: bool = True, limits: HubLimits | None = None,
    sweep_plot: str | os.PathLike[str] | None = None,
) -> str:
    """Push a local dataset to a Hub dataset repo, resumably; returns the commit sha.

    Parameters
    ----------
    path : str or PathLike
        A local v2 dataset folder (with its index).
    repo_id : str
        ``"namespace/name"``; the dataset repo is created when missing.
    private : bool, optional
        Visibility of a newly created repo (an existing repo keeps its own).
    token : str, optional
        Hub token with write access; default: ``HF_TOKEN`` or the stored login.
    revision : str
        Branch to push to (created from ``main`` when missing).
    overwrite : bool
        Replace a different dataset already in the repo (refused otherwise).
    license, tags
        For the dataset card's front matter.
    batch_bytes : int
        Datasets larger than this go up in several commits of about this size, index last.
    endpoint : str, optional
        Hub URL; default ``HF_ENDPOINT``.
    progress : bool
        Print one line per commit and show the client's per-file upload bars.
    limits : HubLimits, optional
        The Hub's file-count and file-size limits, checked before anything is sent (default
        :data:`actstore.hub_client.HUB_LIMITS`: 10 k files per folder, 100 k per repo, 20 GB
        per file).
    sweep_plot : str or PathLike, optional
        A probe-sweep plot (PNG, JPEG or SVG, e.g. the one ``actstore demo`` draws) to push as
        ``images/sweep.<ext>`` and show in the dataset card.

    Raises
    ------
    InvalidArgumentError
        The dataset would exceed ``limits`` (the message says which shard size fixes it), or
        ``sweep_plot`` is not a PNG, JPEG or SVG file.
    IntegrityError
        A local file is missing, of the wrong size, or changed since the index recorded it.

    Examples
    --------
    >>> sha = actstore.push_dataset("out/ds", "org/acts", private=True)   # doctest: +SKIP
    """
    path = os.fspath(path)
    ds = _check_local(path)
    extra = _sweep_image(sweep_plot)
    card = build_dataset_card(ds.info, repo_id, license=license, tags=list(tags or []),
                              label_counts=_label_counts(ds), sweep_image=next(iter(extra), None))
    extra["README.md"] = card.encode()
    sizes = {p: f["size"] for p, f in ds.info.files.items()}
    sizes |= {INDEX_PATH: os.path.getsize(os.path.join(path, INDEX_PATH))}
    sizes |= {p: len(data) for p, data in extra.items()}
    # before any request; checked again against what the repo already holds
    check_hub_limits(sizes, repo_id=repo_id, limits=limits or HUB_LIMITS, fix_more=_MORE,
                     fix_fewer=_FEWER)
    index_sha = sha256_file(os.path.join(path, INDEX_PATH))
    known = _trusted_sha256(path, ds) | {INDEX_PATH: index_sha}
    api = make_api(token, endpoint)
    report = (lambda msg: print(f"actstore push {repo_id}: {msg}", flush=True)) if progress else None
    with hub_errors(repo_id, "push to", revision=revision, write=True), bars(progress):
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
        _check_target(api, repo_id, revision, index_sha, overwrite, os.path.join(path, INDEX_PATH))
        return upload_folder_in_batches(
            path, repo_id, "dataset", api=api, revision=revision, last=is_index,
            extra_files=extra, known_sha256=known,
            delete_stale=lambda p: p.startswith(("index/", "tensors/")),
            batch_bytes=batch_bytes, message=f"actstore: push {ds.info.model} activations",
            progress=report, limits=limits, fix_more=_MORE, fix_fewer=_FEWER,
        )
