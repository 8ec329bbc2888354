"""``extract(..., cache=...)``: compute only the prompts the activation cache lacks.

Entries are keyed as :meth:`actstore.UnifiedCache.warmup` keys them — model, revision,
``{"dtype", "max_length", "template"}`` (plus ``chat_template`` when used), view, layer and
the prompt *as given* (before the template) — so ``warmup`` and ``extract`` share entries.
Every row, computed now or cached earlier, is read back from the cache, so a row's bytes do
not depend on which run computed it. Pooled views only: full sequences (``"all"``),
generation, top-k logits and perplexity are not cached and are refused with ``cache=``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from ..format.layersel import request
from ..format.spec import CODEC_DTYPES
from .forward import GroupResult, check_lengths, run_group, tokenize
from .models import LoadedModel

__all__ = ["as_cache", "cache_space", "run_cached_group"]


def as_cache(cache: Any) -> Any:
    """A :class:`~actstore.cache.UnifiedCache` from an instance, a location, or True (default)."""
    if cache is None or cache is False:
        return None
    from ..cache import UnifiedCache

    if isinstance(cache, UnifiedCache):
        return cache
    return UnifiedCache(None if cache is True else cache)


def check_cacheable(spec: Any) -> None:
    """Refuse what the activation cache cannot hold, naming the setting to drop."""
    refused = [name for name, on in (("pooling='all'", "all" in spec.pooling),
                                     ("generate=", bool(spec.generate)),
                                     ("logits_k=", bool(spec.logits_k)),
                                     ("perplexity=True", spec.perplexity),
                                     (f"dtype={spec.dtype!r}", spec.dtype in CODEC_DTYPES)) if on]
    if refused:
        raise InvalidArgumentError(
            f"cache= holds pooled vectors only; it cannot be combined with {', '.join(refused)}. "
            "Drop cache= or those settings."
        )


def cache_space(dtype: str, max_length: int | None, template: str | None, chat: bool) -> dict[str, Any]:
    """The value-determining settings, spelled exactly as ``UnifiedCache.warmup`` spells them."""
    cfg: dict[str, Any] = {"dtype": dtype, "max_length": max_length, "template": template}
    if chat:
        cfg["chat_template"] = True
    return cfg


def run_cached_group(lm: LoadedModel, texts: list[str], raw: list[str], spec: Any, cache: Any,
                     space: dict[str, Any], on_batch: Callable[[int, int], None] | None) -> GroupResult:
    """Like :func:`run_group`, computing only rows whose vectors ``cache`` lacks."""
    key = {"revision": lm.revision, "config": space}
    named = [request(L) for L in spec.layers]  # the cache API takes the embeddings by name
    todo = cache.missing(lm.name, raw, layers=named, pooling=spec.pooling, **key)
    if todo:
        res = run_group(lm, [texts[i] for i in todo], spec.layers, spec.pooling,
                        batch_size=spec.batch_size, max_length=spec.max_length, on_batch=on_batch)
        vectors = {v: {request(L): a for L, a in per.items()} for v, per in res.views.items()}
        cache.put(lm.name, [raw[i] for i in todo], vectors, dtype=spec.dtype, **key)
        cache.flush()  # publish to other workers and later runs now, not at exit
    if on_batch is not None and len(todo) < len(texts):
        on_batch(len(texts) - len(todo), 0)
    ids, truncated = tokenize(lm, texts, spec.max_length)
    check_lengths(lm, texts, ids, spec.max_length)
    views = {}
    for view in spec.pooling:
        got = cache.get(lm.name, raw, layers=named, view=view, **key)
        views[view] = {L: np.ascontiguousarray(got[:, j]) for j, L in enumerate(spec.layers)}
    return GroupResult(views, [len(x) for x in ids], truncated)
