"""The top-level ``open_dataset``: one entry point for local paths and remote URLs.

Local paths (and in-process ``memory://``) go straight to the format reader. Remote URLs
(``s3://``, ``http(s)://``, ``hf://datasets/org/name@rev``, any other fsspec protocol) read
their index and tensor bytes through :class:`actstore.cache.UnifiedCache`, so a second read
of the same rows is local, and offline mode serves whatever was read before.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import InvalidArgumentError
from .format.reader import Dataset
from .format.reader import open_dataset as _open_format

__all__ = ["open_dataset"]

_IN_PROCESS = ("file", "local", "memory")


def _protocol(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def _with_revision(url: str, revision: str | None) -> str:
    """Pin an ``hf://`` URL to ``revision`` (``hf://datasets/org/name@rev/...``)."""
    if revision is None:
        return url
    if _protocol(url) != "hf":
        raise InvalidArgumentError(
            f"revision= applies to hf:// URLs only; got {url!r}. Pin other stores by path."
        )
    head, _, rest = url[len("hf://"):].partition("/")  # "datasets", "org/name[@rev]/..."
    org, _, tail = rest.partition("/")
    name, _, sub = tail.partition("/")
    if "@" in name:
        if name.split("@", 1)[1] != revision:
            raise InvalidArgumentError(
                f"The URL {url!r} already pins revision {name.split('@', 1)[1]!r} but revision="
                f"{revision!r} was given; give one of them."
            )
        return url
    return f"hf://{head}/{org}/{name}@{revision}" + (f"/{sub}" if sub else "")


def open_dataset(
    url: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    cache: Any = None,
    revision: str | None = None,
    verify_checksums: bool = False,
) -> Dataset:
    """Open a v2 activation dataset from a local path or any fsspec URL.

    Only the index is read; tensor rows are fetched on demand by byte ranges. Remote bytes
    are kept in the cache, keyed by where they came from (URL, endpoint, validator), so
    repeated reads are local and another dataset can never be served them.

    Parameters
    ----------
    url : str or path
        Local folder, ``s3://bucket/ds``, ``https://host/ds``, ``hf://datasets/org/name``.
    storage_options : dict, optional
        fsspec options for the dataset's filesystem (e.g. S3 ``endpoint_url``).
    cache : UnifiedCache, str or False, optional
        The cache for remote bytes (a cache, a cache location, or False for none); default
        ``UnifiedCache()`` (``ACTSTORE_CACHE_DIR`` or ``~/.cache/actstore``).
    revision : str, optional
        Hub revision (branch, tag or commit) for ``hf://`` URLs.
    verify_checksums : bool
        Hash each tensor file against its recorded sha256 before first use.

    Examples
    --------
    >>> import actstore
    >>> ds = actstore.open_dataset("s3://team-bucket/llama-acts")   # doctest: +SKIP
    >>> X = ds.get(range(0, 1000, 10), layers=[16])                 # doctest: +SKIP
    """
    text = _with_revision(os.fspath(url), revision)
    if _protocol(text) in _IN_PROCESS or cache is False:
        return _open_format(text, storage_options=storage_options, verify_checksums=verify_checksums)
    from .cache import UnifiedCache
    from .cache.opening import open_remote

    if not isinstance(cache, UnifiedCache):
        cache = UnifiedCache(cache)
    return open_remote(text, cache, storage_options=storage_options,
                       verify_checksums=verify_checksums)
