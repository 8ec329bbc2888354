"""Opening a remote dataset through the cache: index identity, offline aliases, the source.

The index is the one mutable name in a dataset (a rewrite replaces it), so it is keyed by
the identity the remote reports for it (Hub LFS sha256 or git blob id, S3/HTTP ETag plus
size). That identity is a validator *within* the dataset's origin (URL and endpoint), never a
key shared with other datasets (see :mod:`actstore.cache.remote`). Each identity seen online
is remembered under the origin, so offline mode can open the newest version read before
without touching the network.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from .. import config
from ..errors import CacheError, DatasetNotFoundError, OfflineError
from .remote import CachedSource, origin_of

if TYPE_CHECKING:
    from ..format.reader import Dataset
    from .unified import UnifiedCache

__all__ = ["open_remote"]


def _index_identity(info: dict[str, Any]) -> str | None:
    """A content identity for the index file from its remote metadata, if the server has one."""
    lfs = info.get("lfs")
    if isinstance(lfs, dict) and (lfs.get("sha256") or lfs.get("oid")):
        return f"sha256:{lfs.get('sha256') or lfs.get('oid')}"
    if info.get("blob_id"):
        return f"git:{info['blob_id']}"
    size = info.get("size")
    for name in ("ETag", "etag", "Etag"):
        if info.get(name):
            tag = str(info[name]).strip('"')
            return f"etag:{tag}:{size}"
    if info.get("Last-Modified"):
        return f"lm:{info['Last-Modified']}:{size}"
    return None


def _alias_prefix(origin: str) -> str:
    return f"m:origin-alias:{hashlib.blake2b(origin.encode(), digest_size=16).hexdigest()}:"


def _remember(cache: UnifiedCache, origin: str, index_id: str, size: int) -> None:
    key = _alias_prefix(origin) + index_id
    if key not in cache.store:
        cache.store.put(key, json.dumps({"id": index_id, "size": size, "t": time.time()}).encode())
        try:
            cache.store.flush()
        except CacheError:  # a read-only cache: offline mode will not know this version
            cache.store.discard_pending()


def _recall(cache: UnifiedCache, url: str, origin: str) -> tuple[str, int]:
    """The newest index identity seen online for ``url`` (offline mode)."""
    prefix = _alias_prefix(origin)
    cache.store.refresh()
    keys = [k for k in cache.store.keys() if k.startswith(prefix)]
    docs = [json.loads(bytes(d[0])) for d in cache.store.get_many(keys) if d is not None]
    if not docs:
        raise OfflineError(
            f"Offline mode (ACTSTORE_OFFLINE or HF_HUB_OFFLINE) is on and the dataset {url!r} "
            f"was never opened online with the cache at {cache.url}; its index is not cached. "
            "Open it once while online, or unset the offline variable."
        )
    doc = max(docs, key=lambda d: d["t"])
    return doc["id"], int(doc["size"])


def open_remote(url: str, cache: UnifiedCache, *, storage_options: dict[str, Any] | None = None,
                verify_checksums: bool = False) -> Dataset:
    """Open a remote dataset whose bytes are read through ``cache`` (see :func:`actstore.open_dataset`)."""
    from ..format.metadata import decode_schema_metadata, parse_files
    from ..format.reader import INDEX_PATH, open_dataset, read_index_lazy
    from ..format.source import split_url

    fs, root = split_url(url, storage_options)
    origin = origin_of(url, fs)
    if config.offline():
        index_id, size = _recall(cache, url, origin)
    else:
        try:
            info = fs.info(f"{root.rstrip('/')}/{INDEX_PATH}")
        except FileNotFoundError:
            raise DatasetNotFoundError(
                f"No dataset index at {url}/{INDEX_PATH}: a folder without an index is not a "
                "dataset (check the URL, the revision, and your credentials)."
            ) from None
        index_id, size = _index_identity(info), int(info["size"])
    src = CachedSource(cache, fs, root, url=url, index_id=index_id)
    src.index_path = INDEX_PATH
    src.set_size(INDEX_PATH, size)
    table = read_index_lazy(src)  # the footer and location columns only: texts on first use
    src.bind_files(parse_files(decode_schema_metadata(table.schema.metadata)))
    if index_id is not None and not config.offline():
        # an index up to config.index_cache_whole_bytes() is fetched whole into the cache
        # (a no-op once it is there), so offline mode can read every column later; a larger
        # one keeps the columns read online, and an offline read of another is refused
        # naming the column (lazy_index.IndexTable._read)
        if size <= config.index_cache_whole_bytes():
            src.cache_whole(INDEX_PATH)
        _remember(cache, origin, index_id, size)
    # the index was opened once, above: the reader takes it as it is
    return open_dataset(url, source=src, verify_checksums=verify_checksums, index=table)
