"""The unified cache: remote dataset bytes and extracted activations on any fsspec filesystem.

See :class:`UnifiedCache` (facade), :mod:`actstore.cache.store` (segment files, checksums,
eviction), :mod:`actstore.cache.remote` (range reads of remote datasets) and
:mod:`actstore.cache.activations` (the API the extraction runner uses).
"""

from __future__ import annotations

from .activations import space_id
from .unified import UnifiedCache

__all__ = ["UnifiedCache", "space_id"]
