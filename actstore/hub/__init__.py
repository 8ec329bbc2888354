"""Publish datasets to the Hugging Face Hub and get them back: push, pull, metadata.

``push_dataset`` uploads with the official client, data first and the index (with the card)
last, so a reader never sees an index pointing at missing shards; rerunning an interrupted
push sends only what is missing. ``pull_dataset`` downloads the index plus only the layers and
views asked for, pinned to one commit, and checks every file's sha256. ``fetch_metadata``
reads just the Parquet footer by range requests.

Everything Hub-generic (batched uploads, pinned downloads, error mapping) lives in
``_transfer`` so probes can reuse it.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

from ..config import cache_dir
from ..errors import (
    DatasetExistsError,
    DatasetNotFoundError,
    FormatError,
    IntegrityError,
    InvalidArgumentError,
    LayerNotFoundError,
    require,
)
from ..format import spec
from ..format.header import header_length, parse_header
from ..format.layersel import LayerSpec, resolve_layers
from ..format.metadata import (
    DatasetInfo,
    ViewLayout,
    decode_schema_metadata,
    parse_files,
    parse_layout,
)
from ..format.reader import Dataset
from ._transfer import (
    download_files,
    hub_errors,
    make_api,
    remote_files,
    sha256_file,
    upload_folder_in_batches,
)
from .card import build_dataset_card

__all__ = ["build_dataset_card", "fetch_metadata", "pull_dataset", "push_dataset"]

INDEX_PATH = spec.INDEX_FILE.format(split="train", part=0, parts=1)
_RECORD = os.path.join(".actstore", "hub.json")
_HEADER_PROBE = 1024  # bytes of a shard read for its header (one more read if it is longer)


def _is_index(path: str) -> bool:
    return path.startswith(spec.INDEX_DIR + "/")


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
    old = {p: oid for p, oid in remote.items() if _is_index(p)}
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
    endpoint: str | None = None, progress: bool = True,
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

    Examples
    --------
    >>> sha = actstore.push_dataset("out/ds", "org/acts", private=True)   # doctest: +SKIP
    """
    path = os.fspath(path)
    ds = _check_local(path)
    index_sha = sha256_file(os.path.join(path, INDEX_PATH))
    known = {p: f["sha256"] for p, f in ds.info.files.items()} | {INDEX_PATH: index_sha}
    card = build_dataset_card(ds.info, repo_id, license=license, tags=list(tags or []))
    api = make_api(token, endpoint)
    report = (lambda msg: print(f"actstore push {repo_id}: {msg}", flush=True)) if progress else None
    with hub_errors(repo_id, "push to", revision=revision, write=True), _bars(progress):
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
        _check_target(api, repo_id, revision, index_sha, overwrite, os.path.join(path, INDEX_PATH))
        return upload_folder_in_batches(
            path, repo_id, "dataset", api=api, revision=revision, last=_is_index,
            extra_files={"README.md": card.encode()}, known_sha256=known,
            delete_stale=lambda p: p.startswith(("index/", "tensors/")),
            batch_bytes=batch_bytes, message=f"actstore: push {ds.info.model} activations",
            progress=report,
        )


def _read_local_meta(local_dir: str) -> tuple[dict[str, Any], dict[str, ViewLayout], Any, dict[str, Any]]:
    import pyarrow.parquet as pq

    meta = decode_schema_metadata(pq.read_schema(os.path.join(local_dir, INDEX_PATH)).metadata)
    views, logits = parse_layout(meta)
    return meta, views, logits, parse_files(meta)


def _wanted_files(views: dict[str, ViewLayout], logits: dict[str, Any] | None,
                  layers: Sequence[int | str] | None, names: Sequence[str] | None,
                  want_logits: bool) -> list[str]:
    names = list(names) if names is not None else list(views)
    unknown = [n for n in names if n not in views]
    if unknown:
        raise LayerNotFoundError(f"The dataset has no view {unknown}; it holds views {list(views)}.")
    out: list[str] = []
    for name in names:
        v = views[name]
        missing = sorted(L for L in (layers or ()) if isinstance(L, int) and L >= 0 and L not in v.layers)
        if missing:
            raise LayerNotFoundError(
                f"Layers {missing} are not in view {name!r} of the dataset; it holds layers "
                f"{list(v.layers)}. Pass layers from that list."
            )
        # the one meaning of a layer (format/layersel): -1 = deepest block, "embeddings" by name
        chosen = v.layers if layers is None else resolve_layers(layers, v.layers, where=f"view {name!r} of the dataset")
        for layer in chosen:
            out += [v.path(layer, s) for s in range(len(v.shard_rows))]
    if want_logits and logits is not None:
        out += [s["file"] for s in logits["shards"]]
    return out


def pull_dataset(
    repo_id: str, *, layers: LayerSpec | None = None, views: Sequence[str] | None = None,
    logits: bool | None = None, revision: str | None = None,
    out: str | os.PathLike[str] | None = None, token: str | bool | None = None,
    endpoint: str | None = None, progress: bool = True,
) -> Dataset:
    """Download a dataset's index and only the requested layers/views; returns a ``Dataset``.

    Parameters
    ----------
    repo_id : str
        Hub dataset repo.
    layers : int, str or sequence of them, optional
        Layers to download (default: all): block numbers (negatives count from the deepest
        stored block), ``"embeddings"``, ``"all"``, ``"middle"``, ``"last"``.
    views : sequence of str, optional
        Pooled views to download (default: all).
    logits : bool, optional
        Download the top-k logits shards (default: only on a full pull).
    revision : str, optional
        Branch or commit sha; the pull is pinned to the commit it resolves to, which is
        recorded in ``<out>/.actstore/hub.json``.
    out : str or PathLike, optional
        Local folder (default: ``<actstore cache>/hub/datasets/<org>--<name>/<sha>``).
    progress : bool
        Show the Hub client's download bars.

    Examples
    --------
    >>> ds = actstore.pull_dataset("org/acts", layers=[16])   # doctest: +SKIP
    >>> X = ds.layer(16)                                       # doctest: +SKIP
    """
    from ..format.reader import open_dataset

    if layers is not None:  # the resolver's language (format/layersel), checked again on the index
        layers = [layers] if isinstance(layers, (int, str)) else list(layers)
        if not all(isinstance(i, (int, str)) and not isinstance(i, bool) for i in layers):
            raise InvalidArgumentError(
                f"layers must be ints or names ('embeddings', 'all', 'middle', 'last'); got {layers!r}."
            )
    api = make_api(token, endpoint)
    with hub_errors(repo_id, "pull", revision=revision), _bars(progress):
        sha = str(api.dataset_info(repo_id, revision=revision).sha)
        local = os.fspath(out) if out is not None else os.path.join(
            cache_dir(), "hub", "datasets", repo_id.replace("/", "--"), sha)
        kw = {"revision": sha, "local_dir": local, "token": token, "endpoint": endpoint}
        download_files(repo_id, "dataset", [INDEX_PATH, "README.md"], **kw)
        if not os.path.exists(os.path.join(local, INDEX_PATH)):
            raise DatasetNotFoundError(
                f"Dataset repo {repo_id!r} at {sha} holds no dataset index ({INDEX_PATH}); "
                "it is not an actstore/lmprobe dataset, or a push to it did not finish "
                "(rerun push_dataset)."
            )
        _, vs, lg, files = _read_local_meta(local)
        full = layers is None and views is None
        wanted = _wanted_files(vs, lg, layers, views, full if logits is None else logits)
        expected = {p: files[p]["sha256"] for p in wanted if p in files}
        download_files(repo_id, "dataset", wanted, expected_sha256=expected, **kw)
    _record(local, {"repo_id": repo_id, "revision": sha, "requested_revision": revision,
                    "endpoint": api.endpoint, "files": wanted})
    return open_dataset(local)


@contextlib.contextmanager
def _bars(enabled: bool) -> Iterator[None]:
    """The Hub client's progress bars off for the block when ``enabled`` is False."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_off = are_progress_bars_disabled()
    if not enabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_off:
            enable_progress_bars()


def _record(local: str, record: dict[str, Any]) -> None:
    os.makedirs(os.path.join(local, ".actstore"), exist_ok=True)
    with open(os.path.join(local, _RECORD), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)


def pulled_revision(local_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What ``pull_dataset`` recorded for ``local_dir`` (repo id, commit sha, files), if any."""
    try:
        with open(os.path.join(local_dir, _RECORD), encoding="utf-8") as f:
            return json.load(f)  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


def _footer(f: Any, where: str) -> bytes:
    """The Parquet footer (with its length and magic) in one or two range reads."""
    size = f.size
    f.seek(max(size - 16384, 0))  # most footers fit; else one more read
    tail = f.read()
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise FormatError(f"{where}: not a Parquet file (no PAR1 footer in its {size} bytes).")
    (n,) = struct.unpack("<I", tail[-8:-4])
    if n + 12 > size:
        raise FormatError(f"{where}: the Parquet footer claims {n} bytes but the file is {size} bytes.")
    if n + 8 > len(tail):
        f.seek(size - 8 - n)
        tail = f.read(n - len(tail) + 8) + tail
    return tail[-(n + 8):]


def _header_dtype(fs: Any, base: str, view: ViewLayout, files: dict[str, Any]) -> str:
    """The dtype a view's first shard header records, checked as the reader checks it.

    Reads one header by range (the first layer's shard 0). A header that is not F32/F16/BF16,
    or (in a dataset with recorded files) that disagrees with the metadata dtype, raises
    :class:`~actstore.errors.IntegrityError`, like ``Dataset.info``.
    """
    if not view.shard_rows:
        return view.dtype
    path = view.path(view.layers[0], 0)
    try:
        with fs.open(f"{base}/{path}", "rb", cache_type="none") as f:
            size = int(f.size)
            rec = files.get(path)
            if rec is not None and rec["size"] != size:
                raise IntegrityError(
                    f"{path}: file is {size} bytes but the metadata records {rec['size']}; the "
                    "file is truncated or was replaced."
                )
            probe = f.read(min(size, _HEADER_PROBE))  # one shard's header: ~150 bytes
            n = header_length(probe, path=path, size=size)
            if 8 + n > len(probe):
                f.seek(0)
                probe = f.read(8 + n)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: shard file listed by the metadata is missing.") from None
    entry = parse_header(probe, path=path, size=size).get(view.key(view.layers[0]))
    if entry is None:
        raise IntegrityError(f"{path}: has no tensor {view.key(view.layers[0])!r}.")
    allowed = (view.codec.codec.code,) if view.codec is not None else ("F32", "F16", "BF16")
    if entry.dtype not in allowed:  # a codec view (int8/fp8, spec section 2b) holds its codes
        raise IntegrityError(f"{path}: hidden states must be {' or '.join(allowed)}; found {entry.dtype}.")
    if files and spec.STORED_DTYPES.get(view.dtype, ("",))[0] != entry.dtype:
        raise IntegrityError(
            f"{path}: header dtype {entry.dtype} disagrees with the metadata dtype {view.dtype!r}."
        )
    return spec.ST_DTYPES[entry.dtype][0]


def fetch_metadata(repo_id: str, *, revision: str | None = None, token: str | bool | None = None,
                   endpoint: str | None = None) -> DatasetInfo:
    """What a Hub dataset holds, read by range requests: the index's Parquet footer and one
    shard header.

    The ``dtype`` is the stored one, read from the first shard header of the primary view (as
    ``Dataset.info`` reports it); a header that disagrees with the dtype the metadata records
    raises :class:`~actstore.errors.IntegrityError`.

    Examples
    --------
    >>> info = actstore.fetch_metadata("org/acts")   # doctest: +SKIP
    >>> info.layers, info.num_prompts                 # doctest: +SKIP
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..format.arrowio import arrow_buffer
    from ..format.info import build_info

    hf = require("huggingface_hub", "hub")
    fs = hf.HfFileSystem(endpoint=endpoint, token=token, skip_instance_cache=True)  # type: ignore[attr-defined]
    rev = quote(revision or "main", safe="")
    base = f"datasets/{repo_id}@{rev}"
    with hub_errors(repo_id, "read metadata of", revision=revision):
        try:
            with fs.open(f"{base}/{INDEX_PATH}", "rb", cache_type="none") as f:
                footer = _footer(f, INDEX_PATH)
        except FileNotFoundError as exc:
            raise DatasetNotFoundError(
                f"No dataset index at {repo_id}@{revision or 'main'}/{INDEX_PATH} ({exc}); check "
                "the repo id and revision, and that a push to it finished."
            ) from None
    try:  # an Arrow-owned buffer, never io.BytesIO (the exit-134 crash, see format.arrowio)
        md = pq.read_metadata(pa.BufferReader(arrow_buffer(b"PAR1" + footer)))
        arrow_meta = md.schema.to_arrow_schema().metadata
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(f"{INDEX_PATH}: the Parquet footer cannot be read ({exc}).") from None
    meta = decode_schema_metadata(arrow_meta)
    views, logits = parse_layout(meta)
    files = parse_files(meta)
    primary = next(iter(views.values()))
    with hub_errors(repo_id, "read a shard header of", revision=revision):
        dtype = _header_dtype(fs, base, primary, files)
    return build_info(meta, views, logits, files, md.num_rows, dtype)
