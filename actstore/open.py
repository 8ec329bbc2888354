"""The top-level ``open_dataset``: one entry point for local paths and remote URLs.

Local paths go straight to the format reader. (The cache issue routes remote URLs
through :class:`actstore.cache.UnifiedCache`.)
"""

from __future__ import annotations

import os
from typing import Any

from .format.reader import Dataset
from .format.reader import open_dataset as _open_format

__all__ = ["open_dataset"]


def open_dataset(
    url: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    verify_checksums: bool = False,
) -> Dataset:
    """Open a v2 activation dataset from a local path or any fsspec URL.

    Examples
    --------
    >>> import actstore
    >>> ds = actstore.open_dataset("out/ds")       # doctest: +SKIP
    """
    return _open_format(url, storage_options=storage_options, verify_checksums=verify_checksums)
