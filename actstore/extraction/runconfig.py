"""One run configuration, checked once, from ``extract()`` down to the metadata.

:class:`RunConfig` holds every setting that determines what a run computes and stores. It is
built and checked once by :meth:`RunConfig.create` (storage dtype, pooling names, sizes),
before any model loads; :meth:`RunConfig.bind` adds what only the loaded model knows (its
public name and revision, the padding side, the resolved layers, the checked generation
options) and the prompts' fingerprint. The bound object goes everywhere: the runner, the
cached path (:meth:`RunConfig.cache_space` keys the activation cache), the part writer and
``config.json``/the dataset metadata (:meth:`RunConfig.record`, the same dict a rerun is
compared with).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..cache.activations import cache_space
from ..errors import InvalidArgumentError
from ..format.layersel import LayerSpec
from ..format.spec import CODEC_DTYPES, POOLINGS, STORED_DTYPES
from .generate import check_generate, generated_views
from .inputs import PromptSet
from .layers import resolve_model_layers
from .models import LoadedModel

__all__ = ["RunConfig", "fingerprint"]

# settings only the loaded model (or the templated prompts) can fill in
_BOUND_LATER = ("layers", "revision", "padding_side", "generate")


def fingerprint(prompts: PromptSet) -> str:
    """The sha256 of the texts the model sees and the labels (what a rerun must match)."""
    h = hashlib.sha256()
    for t in prompts.texts:
        h.update(t.encode("utf-8") + b"\x00")
    h.update(json.dumps(prompts.labels, default=str).encode())
    return h.hexdigest()


def _poolings(pooling: str | Sequence[str]) -> tuple[str, ...]:
    names = [pooling] if isinstance(pooling, str) else list(pooling)
    unknown = [p for p in names if p not in POOLINGS]
    if unknown or not names:
        raise InvalidArgumentError(
            f"Unknown pooling {unknown or names}; expected some of {', '.join(POOLINGS)}."
        )
    if "all" in names:  # full sequences are the primary view; pooled ones ride along
        names = ["all"] + [p for p in names if p != "all"]
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class RunConfig:
    """What a run computes and stores; recorded in the metadata and compared on rerun.

    Build it with :meth:`create` (which checks every setting) and :meth:`bind` (once the
    model is loaded); fields that only the model knows are None until then.
    """

    pooling: tuple[str, ...]
    dtype: str
    batch_size: int
    max_length: int | None
    shard_size: int
    logits_k: int | None
    perplexity: bool
    template: str | None
    chat_template: bool
    num_prompts: int = 0
    model: str | None = None  # the published name (never a local path)
    prompts_sha256: str | None = None
    layers: tuple[int, ...] | None = None  # stored numbers, -1 = the embedding output
    revision: str | None = None
    padding_side: str | None = None
    generate: Mapping[str, Any] | None = None

    @classmethod
    def create(cls, *, pooling: str | Sequence[str], dtype: str, batch_size: int,
               max_length: int | None, shard_size: int | None, logits_k: int | None,
               perplexity: bool, template: str | None, chat_template: bool) -> RunConfig:
        """Check the settings that need neither the prompts nor the model, once;
        ``shard_size=None`` picks the default (1024 prompts, 64 for full sequences)."""
        if dtype not in STORED_DTYPES:  # the floats, and the codecs int8/fp8_e4m3 (format/codecs.py)
            raise InvalidArgumentError(f"dtype must be one of {sorted(STORED_DTYPES)}; got {dtype!r}.")
        for name, value in (("batch_size", batch_size), ("shard_size", shard_size),
                            ("max_length", max_length)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InvalidArgumentError(f"{name} must be a positive integer; got {value!r}.")
        poolings = _poolings(pooling)
        return cls(pooling=poolings, dtype=dtype, batch_size=batch_size, max_length=max_length,
                   shard_size=shard_size or (64 if poolings[0] == "all" else 1024),
                   logits_k=logits_k, perplexity=perplexity, template=template,
                   chat_template=chat_template)

    def with_prompts(self, num_prompts: int, prompts_sha256: str | None,
                     model: str | None) -> RunConfig:
        """The configuration with what is known of the prompts and the model before it loads
        (the fingerprint only without a chat template, the name only for a model name)."""
        return dataclasses.replace(self, num_prompts=num_prompts, prompts_sha256=prompts_sha256,
                                   model=model)

    def bind(self, lm: LoadedModel, layers: LayerSpec, generate: Mapping[str, Any] | None,
             prompts: PromptSet) -> RunConfig:
        """The configuration with the model's facts, the resolved layers, the checked
        generation options and the fingerprint of ``prompts`` (as the model sees them)."""
        return dataclasses.replace(
            self, model=lm.published_name, revision=lm.revision,
            padding_side=lm.tokenizer.padding_side, prompts_sha256=fingerprint(prompts),
            layers=tuple(resolve_model_layers(layers, lm.model.config.num_hidden_layers)),
            generate=None if generate is None else check_generate(dict(generate), list(self.pooling), lm),
        )

    @property
    def bound(self) -> bool:
        """Whether :meth:`bind` filled in the model's facts."""
        return self.layers is not None

    @property
    def stored_layers(self) -> list[int]:
        """The resolved layers (only once bound)."""
        if self.layers is None:
            raise RuntimeError("RunConfig.bind() must run before the layers are known")
        return list(self.layers)

    @property
    def views(self) -> list[str]:
        """The stored views: the poolings, then ``generated_<p>`` ones when generating."""
        return generated_views(list(self.pooling)) if self.generate else list(self.pooling)

    def record(self) -> dict[str, Any]:
        """The JSON record of ``config.json`` and the metadata's ``extraction.run``.

        The keys and value types are those earlier versions wrote (lists, not tuples), so a
        rerun compares equal with the record of the run it resumes.
        """
        return {
            "model": self.model, "revision": self.revision, "template": self.template,
            "chat_template": self.chat_template, "padding_side": self.padding_side,
            "layers": None if self.layers is None else list(self.layers),
            "pooling": list(self.pooling), "dtype": self.dtype, "batch_size": self.batch_size,
            "max_length": self.max_length, "shard_size": self.shard_size,
            "logits_k": self.logits_k, "perplexity": self.perplexity,
            "generate": None if self.generate is None else dict(self.generate),
            "prompts_sha256": self.prompts_sha256, "num_prompts": self.num_prompts,
        }

    def known(self) -> dict[str, Any]:
        """The part of :meth:`record` that is known before the model loads (for the early
        refusal of a rerun with other settings)."""
        rec = self.record()
        for key in _BOUND_LATER:
            del rec[key]
        for key in ("model", "prompts_sha256"):  # known only for a model name / no chat template
            if rec[key] is None:
                del rec[key]
        return rec

    def cache_space(self) -> dict[str, Any]:
        """The activation cache's ``config`` for this run's vectors."""
        return cache_space(self.dtype, self.max_length, self.template, self.chat_template)

    def check_cacheable(self) -> None:
        """Refuse what the activation cache cannot hold, naming the setting to drop."""
        refused = [name for name, on in (("pooling='all'", "all" in self.pooling),
                                         ("generate=", bool(self.generate)),
                                         ("logits_k=", bool(self.logits_k)),
                                         ("perplexity=True", self.perplexity),
                                         (f"dtype={self.dtype!r}", self.dtype in CODEC_DTYPES)) if on]
        if refused:
            raise InvalidArgumentError(
                f"cache= holds pooled vectors only; it cannot be combined with "
                f"{', '.join(refused)}. Drop cache= or those settings."
            )
