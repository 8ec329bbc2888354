"""``extract(..., cache=...)`` and :func:`~actstore.extraction.warmup.warmup`: compute only the
prompts the activation cache lacks.

Entries are keyed by model, revision, the run's :meth:`~.runconfig.RunConfig.cache_space`
(``{"dtype", "max_length", "template"}``, plus ``chat_template`` when used; the cache owns
that schema, :func:`actstore.cache.activations.cache_space`), view, layer and the prompt *as
given* (before the template) — so ``warmup`` and ``extract`` share entries. Every row,
computed now or cached earlier, is read back from the cache, so a row's bytes do not depend
on which run computed it. Pooled views only: full sequences (``"all"``), generation, top-k
logits and perplexity are not cached and are refused with ``cache=``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ..cache import UnifiedCache
from ..format.layersel import request
from .forward import GroupResult, check_lengths, run_group, tokenize
from .models import LoadedModel
from .runconfig import RunConfig

__all__ = ["as_cache", "fill_cache", "run_cached_group"]


def as_cache(cache: UnifiedCache | str | os.PathLike[str] | bool | None) -> UnifiedCache | None:
    """A :class:`~actstore.cache.UnifiedCache` from an instance, a location, or True (default)."""
    if cache is None or cache is False:
        return None
    if isinstance(cache, UnifiedCache):
        return cache
    return UnifiedCache(None if cache is True else cache)


def fill_cache(lm: LoadedModel, texts: list[str], raw: list[str], cfg: RunConfig,
               cache: UnifiedCache, on_batch: Callable[[int, int], None] | None) -> list[int]:
    """Compute and cache the vectors of the prompts ``cache`` lacks; returns their positions.

    ``texts`` are what the model sees (templated), ``raw`` the prompts as given (the keys).
    """
    key = {"revision": lm.revision, "config": cfg.cache_space()}
    layers = cfg.stored_layers
    named = [request(L) for L in layers]  # the cache API takes the embeddings by name
    todo = cache.missing(lm.name, raw, layers=named, pooling=list(cfg.pooling), **key)
    if todo:
        res = run_group(lm, [texts[i] for i in todo], layers, list(cfg.pooling),
                        batch_size=cfg.batch_size, max_length=cfg.max_length, on_batch=on_batch)
        vectors = {v: {request(L): a for L, a in per.items()} for v, per in res.views.items()}
        cache.put(lm.name, [raw[i] for i in todo], vectors, dtype=cfg.dtype, **key)
        cache.flush()  # publish to other workers and later runs now, not at exit
    return todo


def run_cached_group(lm: LoadedModel, texts: list[str], raw: list[str], cfg: RunConfig,
                     cache: UnifiedCache, on_batch: Callable[[int, int], None] | None) -> GroupResult:
    """Like :func:`run_group`, computing only rows whose vectors ``cache`` lacks."""
    todo = fill_cache(lm, texts, raw, cfg, cache, on_batch)
    if on_batch is not None and len(todo) < len(texts):
        on_batch(len(texts) - len(todo), 0)
    ids, truncated = tokenize(lm, texts, cfg.max_length)
    check_lengths(lm, texts, ids, cfg.max_length)
    key = {"revision": lm.revision, "config": cfg.cache_space()}
    layers = cfg.stored_layers
    named = [request(L) for L in layers]
    views = {}
    for view in cfg.pooling:
        got = cache.get(lm.name, raw, layers=named, view=view, **key)
        views[view] = {L: np.ascontiguousarray(got[:, j]) for j, L in enumerate(layers)}
    return GroupResult(views, [len(x) for x in ids], truncated, list(texts), list(range(len(texts))))
