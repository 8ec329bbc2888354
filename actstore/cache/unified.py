"""``UnifiedCache``: one bounded, content-addressed cache for remote bytes and activations.

Examples
--------
>>> import actstore
>>> cache = actstore.UnifiedCache("memory://doc-cache", max_bytes="1G")
>>> cache.stats()["entries"]
0
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import config
from ..format.source import split_url
from .activations import Activations
from .codec import COMPRESSION_CHOICES
from .store import SegmentStore

if TYPE_CHECKING:  # pragma: no cover
    from ..format.reader import Dataset

__all__ = ["UnifiedCache"]

#: Bumped when the on-storage layout changes; older layouts are simply not read.
LAYOUT = "v1"


class UnifiedCache:
    """A cache on any fsspec filesystem, shared safely by concurrent processes.

    Parameters
    ----------
    location : str or path, optional
        Local folder or fsspec URL (``s3://bucket/team-cache``, ``memory://...``); default
        ``ACTSTORE_CACHE_DIR`` or ``~/.cache/actstore``.
    max_bytes : int or str, optional
        Bound such as ``"50G"``; default ``ACTSTORE_CACHE_MAX_BYTES`` or unbounded.
        Least-recently-used segments are evicted after each flush that exceeds it.
    storage_options : dict, optional
        fsspec options for the cache location (e.g. ``{"endpoint_url": ...}`` for S3).
    compression : {"none", "zstd"}
        Codec for activation entries: ``"zstd"`` (level 1 after a byte shuffle) saves only
        4-14% on per-prompt vectors and slows warm reads, so the default is ``"none"`` (see
        ``benchmarks/results/cache.md``). Remote dataset bytes are stored as they are.
    verify : {"first", "always"}
        Kept for compatibility: every read checks its entries' checksums either way (see
        :class:`SegmentStore`), on the bytes read into this process.

    Examples
    --------
    >>> cache = UnifiedCache("memory://doc-cache-2")
    >>> cache.put("m", ["hi"], {"last_token": {0: [[1.0, 2.0]]}})
    >>> cache.get("m", ["hi"], layers=[0]).shape
    (1, 1, 2)
    """

    def __init__(self, location: str | os.PathLike[str] | None = None, *,
                 max_bytes: int | str | None = None, storage_options: dict[str, Any] | None = None,
                 compression: str = "none", verify: str = "first") -> None:
        if compression not in COMPRESSION_CHOICES:
            from ..errors import InvalidArgumentError

            raise InvalidArgumentError(
                f"compression must be one of {COMPRESSION_CHOICES}; got {compression!r}."
            )
        self.url = config.cache_dir(location)
        fs, root = split_url(self.url, storage_options)
        self.compression = compression
        self.store = SegmentStore(fs, f"{root.rstrip('/')}/{LAYOUT}",
                                  max_bytes=config.cache_max_bytes(max_bytes), verify=verify)
        self.activations = Activations(self.store, compression)
        # entries put but never flushed would be lost; publish them when this object is
        # collected or the interpreter exits, whichever comes first
        weakref.finalize(self, _flush_quietly, self.store)

    def __repr__(self) -> str:
        return f"UnifiedCache({self.url!r}, max_bytes={self.store.max_bytes})"

    def __enter__(self) -> UnifiedCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()

    # -- maintenance -------------------------------------------------------------------
    def flush(self) -> None:
        """Publish pending entries so other processes (and later runs) see them."""
        self.store.flush()

    def stats(self) -> dict[str, Any]:
        """Entry, segment and byte counts, the bound, orphans of killed writers
        (``orphan_files``, ``orphan_bytes``; reclaimed by :meth:`evict`), and this process's
        hits/misses/drops/write errors.

        Examples
        --------
        >>> UnifiedCache("memory://doc-cache-3").stats()["bytes"]
        0
        """
        segs = self.store.segments()
        orphans = self.store.orphans()
        kinds: dict[str, int] = {}
        for key in self.store.keys():
            kinds[key.split(":", 1)[0]] = kinds.get(key.split(":", 1)[0], 0) + 1
        return {
            "location": self.url, "segments": len(segs), "entries": sum(kinds.values()),
            "bytes": sum(s.size for s in segs), "max_bytes": self.store.max_bytes,
            "remote_range_entries": kinds.get("r", 0), "activation_entries": kinds.get("a", 0),
            "orphan_files": len(orphans), "orphan_bytes": sum(o["bytes"] for o in orphans),
            **self.store.counters, "problems": list(self.store.problems),
        }

    def ls(self) -> list[dict[str, Any]]:
        """One row per segment, least recently used first, then one per orphaned file of a
        killed writer (``orphan`` True, ``entries`` 0; see :meth:`SegmentStore.orphans`)."""
        used = self.store.last_used()
        rows = [{"segment": s.sid, "bytes": s.size, "entries": s.entries,
                 "created": s.created, "last_used": used.get(s.sid, s.created), "orphan": False}
                for s in self.store.segments()]
        now = time.time()
        orphans = [{"segment": o["name"], "bytes": o["bytes"], "entries": 0,
                    "created": now - o["age_s"], "last_used": now - o["age_s"], "orphan": True,
                    "reclaimable": o["reclaimable"]} for o in self.store.orphans()]
        return sorted(rows, key=lambda r: r["last_used"]) + orphans

    def evict(self, max_bytes: int | str | None = None) -> list[str]:
        """Delete the orphans of dead writers, then evict least-recently-used segments until
        the cache fits ``max_bytes``; returns the evicted segment ids. On a cache this
        process cannot write, raises :class:`~actstore.errors.CacheError`.

        Examples
        --------
        >>> UnifiedCache("memory://doc-cache-4").evict(max_bytes="1M")
        []
        """
        bound = config.cache_max_bytes(max_bytes)
        if bound is None:
            from ..errors import InvalidArgumentError

            raise InvalidArgumentError(
                "evict() needs a bound: pass max_bytes (e.g. '50G') or set ACTSTORE_CACHE_MAX_BYTES."
            )
        self.store.flush()
        return self.store.evict(bound)

    def compact(self) -> int:
        """Merge small segments into full-size ones; returns how many were merged away.

        Examples
        --------
        >>> UnifiedCache("memory://doc-cache-5").compact()
        0
        """
        return self.store.compact()

    def clear(self) -> None:
        """Delete every entry of this cache."""
        self.store.clear()

    # -- activations: the key schema and the entries live in :mod:`.activations` ---------
    def missing(self, model: str, prompts: Sequence[str], *, layers: Sequence[int | str],
                pooling: str | Sequence[str] = "last_token", revision: str | None = None,
                config: Mapping[str, Any] | None = None) -> list[int]:
        """Positions of the prompts that lack any requested (view, layer) vector
        (:meth:`Activations.missing <actstore.cache.activations.Activations.missing>`)."""
        return self.activations.missing(model, prompts, layers=layers, pooling=pooling,
                                        revision=revision, config=config)

    def put(self, model: str, prompts: Sequence[str],
            vectors: Mapping[str, Mapping[int | str, Any]], *, revision: str | None = None,
            config: Mapping[str, Any] | None = None, dtype: str | None = None) -> None:
        """Store ``vectors[view][layer]`` (an ``(n, dim)`` array) for each of ``n`` prompts
        (:meth:`Activations.put <actstore.cache.activations.Activations.put>`)."""
        self.activations.put(model, prompts, vectors, revision=revision, config=config, dtype=dtype)

    def get(self, model: str, prompts: Sequence[str], *, layers: Sequence[int | str],
            view: str = "last_token", revision: str | None = None,
            config: Mapping[str, Any] | None = None, raw: bool = False) -> np.ndarray:
        """Cached vectors as ``(n, len(layers), dim)``
        (:meth:`Activations.get <actstore.cache.activations.Activations.get>`)."""
        return self.activations.get(model, prompts, layers=layers, view=view, revision=revision,
                                    config=config, raw=raw)

    def to_dataset(self, out: str, model: str, prompts: Sequence[str], *,
                   layers: Sequence[int | str], pooling: str | Sequence[str] = "last_token",
                   revision: str | None = None, config: Mapping[str, Any] | None = None,
                   labels: Sequence[Any] | None = None, batch_size: int = 1024,
                   **writer_kwargs: Any) -> Dataset:
        """Assemble a v2 dataset at ``out`` from cached vectors
        (:meth:`Activations.to_dataset <actstore.cache.activations.Activations.to_dataset>`).

        Computing missing vectors is extraction's job: :func:`actstore.extraction.warmup`
        (``warmup(cache, model, prompts, ...)``) or ``actstore.extract(..., cache=cache)``.
        """
        return self.activations.to_dataset(out, model, prompts, layers=layers, pooling=pooling,
                                           revision=revision, config=config, labels=labels,
                                           batch_size=batch_size, **writer_kwargs)


def _flush_quietly(store: SegmentStore) -> None:
    try:
        store.flush()
    except Exception as exc:  # at exit, a failed flush only loses cache entries: report it
        logging.getLogger("actstore.cache").warning("cache flush at exit failed: %s", exc)
