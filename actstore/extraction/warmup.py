"""``warmup(cache, model, prompts, ...)``: fill the activation cache with the vectors it lacks.

Extraction computes, the cache stores: :class:`~actstore.cache.UnifiedCache` owns the key
schema (:func:`actstore.cache.activations.cache_space`) and never runs a model. Entries are
keyed exactly as ``extract(..., cache=cache)`` keys them, so a warmed cache makes a later
``extract`` compute nothing for those prompts.

Examples
--------
>>> from actstore.extraction import warmup
>>> todo = warmup(cache, "gpt2", prompts, layers=[0, 6], pooling="last_token")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..cache import UnifiedCache
from ..format.layersel import LayerSpec
from .cached import fill_cache
from .inputs import PromptSet, apply_template
from .models import as_loaded
from .runconfig import RunConfig

__all__ = ["warmup"]


def warmup(cache: UnifiedCache, model: Any, prompts: Sequence[str], *, layers: LayerSpec = "all",
           pooling: str | Sequence[str] = "last_token", dtype: str = "float32",
           max_length: int | None = None, template: str | None = None,
           chat_template: bool = False, batch_size: int = 32, revision: str | None = None,
           tokenizer: Any = None, device: str = "auto", model_dtype: Any = "auto",
           trust_remote_code: bool = False, progress: bool = False) -> list[int]:
    """Extract and cache the vectors of the prompts that ``cache`` lacks; returns their positions.

    Parameters
    ----------
    cache : UnifiedCache
        Where the vectors go (flushed before returning, so other processes see them).
    model : str, PreTrainedModel or LoadedModel
        As for :func:`actstore.extract` (a name/path is loaded once, here).
    prompts : sequence of str
        The prompts as given (the cache's keys; ``template``/``chat_template`` are applied
        to what the model sees).
    layers, pooling, dtype, max_length, template, chat_template, batch_size
        As for :func:`actstore.extract`; pooled views only.

    Returns
    -------
    list of int
        The positions in ``prompts`` that were computed now (empty when all were cached).
    """
    prompts = list(prompts)
    cfg = RunConfig.create(pooling=pooling, dtype=dtype, batch_size=batch_size,
                           max_length=max_length, shard_size=None, logits_k=None,
                           perplexity=False, template=template, chat_template=chat_template)
    if template is not None:
        apply_template([], template, None, False)  # refuse a template without {prompt} first
    lm = as_loaded(model, tokenizer,
                   revision=revision, device=device, dtype=model_dtype,
                   trust_remote_code=trust_remote_code, progress=progress)
    texts = prompts
    if template is not None or chat_template:
        texts = apply_template(prompts, template, lm.tokenizer, chat_template)
    # keyed by the model's name and revision as loaded, the same keys extract(cache=) uses
    cfg = cfg.bind(lm, layers, None, PromptSet(texts))
    cfg.check_cacheable()
    return fill_cache(lm, texts, prompts, cfg, cache, None)
