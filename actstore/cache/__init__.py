"""The unified cache: remote dataset bytes and extracted activations on any fsspec filesystem.

See :class:`UnifiedCache` (facade), :mod:`actstore.cache.store` (segment files, checksums,
eviction, compaction), :mod:`actstore.cache.segments` (the on-storage layout),
:mod:`actstore.cache.remote` (range reads of remote datasets), :mod:`actstore.cache.opening`
(index identity and offline mode) and :mod:`actstore.cache.activations` (the API the
extraction runner uses).
"""

from __future__ import annotations

from .activations import cache_space, space_id
from .unified import UnifiedCache

__all__ = ["UnifiedCache", "cache_space", "space_id"]
