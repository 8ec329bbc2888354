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
import tempfile
import time
import weakref
from collections.abc import Sequence
from typing import Any

from .. import config
from ..format.source import split_url
from .activations import ActivationsMixin
from .codec import COMPRESSION_CHOICES
from .store import SegmentStore

__all__ = ["UnifiedCache"]

#: Bumped when the on-storage layout changes; older layouts are simply not read.
LAYOUT = "v1"


class UnifiedCache(ActivationsMixin):
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

    # -- remote datasets ---------------------------------------------------------------
    def source(self, fs: Any, root: str, *, url: str, index_id: str | None) -> Any:
        """A :class:`~actstore.cache.remote.CachedSource` over ``root`` on ``fs``."""
        from .remote import CachedSource

        return CachedSource(self, fs, root, url=url, index_id=index_id)

    # -- extraction ----------------------------------------------------------------------
    def warmup(self, model: Any, prompts: Sequence[str], *, layers: Any = "all",
               pooling: str | Sequence[str] = "last_token", dtype: str = "float32",
               max_length: int | None = None, template: str | None = None,
               revision: str | None = None, **extract_kwargs: Any) -> list[int]:
        """Extract and cache the vectors of the prompts that are not cached yet.

        Calls :func:`actstore.extract` lazily (the one place the storage layer reaches up
        to extraction) on the missing prompts only. Returns their positions.

        Examples
        --------
        >>> todo = cache.warmup("gpt2", prompts, layers=[0, 6], pooling="last_token")  # doctest: +SKIP
        """
        from ..extract import LoadedModel, extract, load_model, resolve_model_layers
        from ..extract.cached import cache_space  # the keys extract(..., cache=) uses too
        from ..format.layersel import request  # stored -1 is asked for as 'embeddings'

        lm = model
        if isinstance(model, (str, os.PathLike)):
            lm = load_model(os.fspath(model), revision=revision)
        hf = lm.model if isinstance(lm, LoadedModel) else lm
        name = lm.name if isinstance(lm, LoadedModel) else hf.config.name_or_path
        rev = revision or (lm.revision if isinstance(lm, LoadedModel)
                           else getattr(hf.config, "_commit_hash", None))
        chosen = resolve_model_layers(layers, hf.config.num_hidden_layers)
        views = [pooling] if isinstance(pooling, str) else list(pooling)
        cfg = cache_space(dtype, max_length, template, bool(extract_kwargs.get("chat_template")))
        named = [request(L) for L in chosen]  # the cache API takes the embeddings by name
        todo = self.missing(name, prompts, layers=named, pooling=views, revision=rev, config=cfg)
        if not todo:
            return []
        with tempfile.TemporaryDirectory(prefix="actstore-warmup-") as tmp:
            out = os.path.join(tmp, f"run-{time.time_ns()}")
            ds = extract(lm, [prompts[i] for i in todo], out, layers=named, pooling=views,
                         dtype=dtype, max_length=max_length, template=template, progress=False,
                         **extract_kwargs)
            texts = [prompts[i] for i in todo]  # the untemplated prompts are the cache keys
            vectors = {v: {L: ds.layer(L, view=None if j == 0 else v) for L in named}
                       for j, v in enumerate(views)}
            self.put(name, texts, vectors, revision=rev, config=cfg, dtype=dtype)
        self.flush()
        return todo


def _flush_quietly(store: SegmentStore) -> None:
    try:
        store.flush()
    except Exception as exc:  # at exit, a failed flush only loses cache entries: report it
        logging.getLogger("actstore.cache").warning("cache flush at exit failed: %s", exc)
