"""The activation side of the cache: pooled vectors per prompt, layer and view.

An entry is keyed by everything that determines its values — model name, model revision,
the extraction config (storage dtype, max length, template, ...), the pooling view, the
layer and the prompt text — so a vector can be reused exactly when it would be recomputed
identically, and never otherwise.

API for the extraction runner (``extract(..., cache=...)``)::

    todo = cache.missing(model, prompts, layers=[0, 3], pooling=["last_token"],
                         revision=sha, config=cfg)          # positions to compute
    cache.put(model, [prompts[i] for i in todo], {"last_token": {0: a0, 3: a3}},
              revision=sha, config=cfg)                       # arrays (n, dim), any float dtype
    X = cache.get(model, prompts, layers=[0, 3], view="last_token",
                  revision=sha, config=cfg)                   # (n, 2, dim)
    cache.flush()                                             # publish for other processes

``config`` must hold only settings that change the values (dtype, max_length, template,
chat_template, ...), not batch size or device; :func:`cache_space` spells it for extraction
(``extract(..., cache=)`` and :func:`actstore.extraction.warmup` both key entries by it).
``to_dataset`` builds on these.

Layers are block numbers (``0, 1, ...``) and ``"embeddings"`` for the embedding output (keyed
as lmprobe's stored ``-1``). A negative layer is refused: this API does not know the model's
depth, so ``-1`` (the deepest block elsewhere) cannot be resolved; extraction, which loads
the model, resolves ``-1``, ``"last"``, ``"middle"`` and ``"all"``.

:class:`Activations` works on a :class:`~actstore.cache.store.SegmentStore` it is given;
:class:`~actstore.cache.UnifiedCache` holds one and exposes its methods. Nothing here runs a
model: the cache owns the key schema, extraction owns computing the vectors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CacheError, InvalidArgumentError
from ..format.dtypes import bf16_bits_to_f32, numpy_storage_dtype, to_storage
from ..format.layersel import explicit_layers, request
from .codec import decode_array, encode_array
from .store import SegmentStore

if TYPE_CHECKING:  # pragma: no cover
    from ..format.reader import Dataset

__all__ = ["Activations", "activation_key", "cache_space", "space_id"]


def _h(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def space_id(model: str, revision: str | None, config: Mapping[str, Any] | None) -> str:
    """The hash of everything except the prompt that determines a vector's values.

    Examples
    --------
    >>> space_id("m", None, {"dtype": "float32"}) == space_id("m", None, {"dtype": "float32"})
    True
    """
    doc = {"model": str(model), "revision": revision, "config": dict(config or {})}
    return _h(json.dumps(doc, sort_keys=True, default=str))


def cache_space(dtype: str, max_length: int | None, template: str | None,
                chat_template: bool) -> dict[str, Any]:
    """The extraction settings that determine a vector's values: an entry's ``config``.

    ``extract(..., cache=)`` and :func:`actstore.extraction.warmup` key entries by it, so
    they share entries; batch size, device and shard size are not part of it.

    Examples
    --------
    >>> cache_space("float32", None, None, False)
    {'dtype': 'float32', 'max_length': None, 'template': None}
    """
    cfg: dict[str, Any] = {"dtype": dtype, "max_length": max_length, "template": template}
    if chat_template:  # absent, not False, when unused: entries of older runs keep their keys
        cfg["chat_template"] = True
    return cfg


def activation_key(space: str, prompt: str, view: str, layer: int) -> str:
    """The store key of one vector; ``layer`` is the stored number (``-1`` = the embeddings),
    so keys match lmprobe's numbering.

    Examples
    --------
    >>> activation_key("s", "p", "last_token", -1).endswith(":last_token:-1")
    True
    """
    return f"a:{space}:{_h(prompt)}:{view}:{int(layer)}"


def _views(pooling: str | Sequence[str]) -> list[str]:
    return [pooling] if isinstance(pooling, str) else list(pooling)


def _storage_dtype(arr: Any, dtype: str | None) -> str:
    if dtype is not None:
        return dtype
    if "torch" in type(arr).__module__:
        name = str(arr.dtype).removeprefix("torch.")
        return name if name in ("float16", "bfloat16") else "float32"
    kind = np.asarray(arr).dtype
    return "float16" if kind == np.float16 else "float32"


class Activations:
    """Per-prompt pooled vectors in ``store``; :class:`actstore.cache.UnifiedCache` holds one.

    Parameters
    ----------
    store : SegmentStore
        Where the entries live.
    compression : {"none", "zstd"}
        Codec for new entries (see :class:`~actstore.cache.UnifiedCache`).
    """

    def __init__(self, store: SegmentStore, compression: str) -> None:
        self.store = store
        self.compression = compression

    def missing(self, model: str, prompts: Sequence[str], *, layers: Sequence[int | str],
                pooling: str | Sequence[str] = "last_token", revision: str | None = None,
                config: Mapping[str, Any] | None = None) -> list[int]:
        """Positions of the prompts that lack any requested (view, layer) vector.

        Examples
        --------
        >>> cache.missing("gpt2", ["a", "b"], layers=[0])      # doctest: +SKIP
        [0, 1]
        """
        layers = explicit_layers(layers, what="cache.missing(layers=...)")
        space = space_id(model, revision, config)
        self.store.refresh()
        views = _views(pooling)
        return [i for i, p in enumerate(prompts)
                if any(activation_key(space, p, v, L) not in self.store for v in views for L in layers)]

    def put(self, model: str, prompts: Sequence[str], vectors: Mapping[str, Mapping[int | str, Any]], *,
            revision: str | None = None, config: Mapping[str, Any] | None = None,
            dtype: str | None = None) -> None:
        """Store ``vectors[view][layer]`` (an ``(n, dim)`` array) for each of ``n`` prompts.

        Arrays keep their float dtype (torch bfloat16 stays bfloat16) unless ``dtype`` is given.

        Examples
        --------
        >>> cache.put("gpt2", ["a"], {"last_token": {0: np.ones((1, 4))}})   # doctest: +SKIP
        """
        space = space_id(model, revision, config)
        for view, per_layer in vectors.items():
            for layer, arr in zip(explicit_layers(per_layer, what=f"cache.put vectors[{view!r}]"),
                                  per_layer.values()):
                name = _storage_dtype(arr, dtype)
                raw = to_storage(arr, name, what=f"vectors[{view!r}][{request(layer)!r}]")
                if raw.ndim != 2 or raw.shape[0] != len(prompts):
                    raise InvalidArgumentError(
                        f"vectors[{view!r}][{request(layer)!r}] must have shape ({len(prompts)}, dim); "
                        f"got {raw.shape}."
                    )
                for prompt, row in zip(prompts, raw):
                    data, codec = encode_array(row, name, self.compression)
                    self.store.put(activation_key(space, prompt, view, layer), data, codec=codec,
                                   meta={"dtype": name, "dim": int(raw.shape[1])})

    def get(self, model: str, prompts: Sequence[str], *, layers: Sequence[int | str],
            view: str = "last_token", revision: str | None = None,
            config: Mapping[str, Any] | None = None, raw: bool = False) -> np.ndarray:
        """Cached vectors as ``(n, len(layers), dim)``: float32 (float16 if stored so).

        ``raw=True`` returns the stored dtype (uint16 bits for bfloat16). Raises
        :class:`CacheError` naming the missing prompts if any vector is absent.
        """
        layers = explicit_layers(layers, what="cache.get(layers=...)")
        space = space_id(model, revision, config)
        keys = [activation_key(space, p, view, L) for p in prompts for L in layers]
        got = self.store.get_many(keys)
        absent = sorted({k // len(layers) for k, g in enumerate(got) if g is None})
        if absent:
            raise CacheError(
                f"{len(absent)} of {len(prompts)} prompts have no cached {view!r} vectors for "
                f"layers {[request(L) for L in layers]} of {model!r} (first: {prompts[absent[0]]!r}); run "
                "actstore.extraction.warmup(cache, ...) or cache.missing(...) + extraction first."
            )
        return self._assemble(got, len(prompts), len(layers), raw)

    def _assemble(self, got: list[Any], n: int, nl: int, raw: bool) -> np.ndarray:
        metas = {(m["dtype"], m["dim"]) for _, _, m in got}
        if len(metas) != 1:
            raise CacheError(f"Cached vectors disagree in dtype/dim: {sorted(metas)}.")
        ((name, dim),) = metas
        storage = numpy_storage_dtype(name)  # the one dtype table (format/spec.py)
        stored = np.empty((n * nl, dim), dtype=storage)
        for i, (data, codec, _) in enumerate(got):
            stored[i] = decode_array(data, codec, storage)
        stored = stored.reshape(n, nl, dim)
        if raw or name != "bfloat16":
            return stored
        return bf16_bits_to_f32(stored)

    def to_dataset(self, out: str, model: str, prompts: Sequence[str], *, layers: Sequence[int | str],
                   pooling: str | Sequence[str] = "last_token", revision: str | None = None,
                   config: Mapping[str, Any] | None = None, labels: Sequence[Any] | None = None,
                   batch_size: int = 1024, **writer_kwargs: Any) -> Dataset:
        """Assemble a v2 dataset at ``out`` from cached vectors (every one must be cached).

        Examples
        --------
        >>> ds = cache.to_dataset("out/ds", "gpt2", prompts, layers=[0, 3])   # doctest: +SKIP
        """
        from ..format.reader import open_dataset
        from ..format.writer import DatasetWriter

        views = _views(pooling)
        if not prompts:
            raise InvalidArgumentError("to_dataset needs at least one prompt.")
        keyed = explicit_layers(layers, what="cache.to_dataset(layers=...)")
        layers = [request(L) for L in keyed]  # the writer takes the embeddings by name
        space = space_id(model, revision, config)
        first = self.store.get_many([activation_key(space, prompts[0], views[0], keyed[0])])[0]
        if first is None:
            self.get(model, prompts[:1], layers=layers[:1], view=views[0], revision=revision,
                     config=config)  # raises the CacheError that names what is missing
        meta = first[2] if first else {}
        dim = int(meta.get("dim", 0))
        with DatasetWriter(out, model=model, layers=list(layers), dim=dim,
                           dtype=meta.get("dtype", "float32"), pooling=list(views),
                           revision=revision, extraction=dict(config or {}), **writer_kwargs) as w:
            for s in range(0, len(prompts), batch_size):
                chunk = list(prompts[s : s + batch_size])
                per_view = {v: self.get(model, chunk, layers=layers, view=v, revision=revision,
                                        config=config) for v in views}
                hidden = {L: per_view[views[0]][:, j] for j, L in enumerate(layers)}
                extra = {v: {L: per_view[v][:, j] for j, L in enumerate(layers)} for v in views[1:]}
                w.add(chunk, hidden=hidden, views=extra or None,
                      labels=None if labels is None else list(labels[s : s + batch_size]))
        return open_dataset(out)
