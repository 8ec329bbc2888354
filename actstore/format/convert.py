"""``convert``: re-encode an existing dataset in another storage dtype (e.g. bf16 -> int8).

Rows are read back a bounded batch at a time (at most ``BATCH_BYTES`` of float32 across every
layer and view) and written again through :class:`~actstore.format.writer.DatasetWriter`, so
memory stays bounded whatever the dataset's size. Texts, labels, token counts, user columns,
top-k logits, views, the model and the extraction record are kept. A codec source is
dequantised to float32 first (converting int8 to int8 again re-quantises with fresh scales).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from . import spec
from .index_builder import RESERVED_COLUMNS
from .reader import Dataset, open_dataset
from .token_masks import mask_columns
from .writer import DatasetWriter

__all__ = ["convert"]

#: Float32 bytes of one batch of rows, across every layer and view.
BATCH_BYTES = 256 << 20


def convert(src: str | os.PathLike[str] | Dataset, dst: str | os.PathLike[str], *, dtype: str,
            scale: str | None = None, overwrite: bool = False, shard_bytes: int | None = None,
            storage_options: dict[str, Any] | None = None) -> Dataset:
    """Write the dataset ``src`` again at ``dst`` with shards of ``dtype``.

    Parameters
    ----------
    src : str, path or Dataset
        The dataset to read (local folder or fsspec URL), or an open one.
    dst : str or path
        Where to write the converted dataset (must differ from ``src``).
    dtype : {"float32", "float16", "bfloat16", "int8", "fp8_e4m3"}
        Storage dtype of the new shards.
    scale : {"per_channel", "per_row", "per_channel_affine"}, optional
        Codec dtypes: the scale granularity (default ``"per_channel_affine"``).
    overwrite : bool
        Replace an existing dataset at ``dst``.
    shard_bytes : int, optional
        Target shard size (default: the writer's).
    storage_options : dict, optional
        fsspec options for both paths.

    Returns
    -------
    Dataset
        The converted dataset, opened.

    Examples
    --------
    >>> q = convert("acts/bf16", "acts/q", dtype="int8")     # doctest: +SKIP
    >>> q.info.codec["rel_l2"]                               # doctest: +SKIP
    0.0091
    """
    ds = src if isinstance(src, Dataset) else open_dataset(os.fspath(src), storage_options=storage_options)
    out = os.fspath(dst)
    if out.rstrip("/") == ds.url.rstrip("/"):
        raise InvalidArgumentError(
            f"convert() cannot write {out!r} over itself; write to another path, then move it."
        )
    if dtype not in spec.STORED_DTYPES:
        raise InvalidArgumentError(
            f"convert(dtype=...) must be one of {sorted(spec.STORED_DTYPES)}; got {dtype!r}."
        )
    info = ds.info
    if info.absent_layers:
        raise InvalidArgumentError(
            f"{ds.url!r} is a partial copy (layers {list(info.absent_layers)} are not here); pull "
            "every layer before converting."
        )
    layers = list(info.layers)
    full = info.storage == spec.STORAGE_FULL
    extraction = dict(info.extraction)
    extraction["converted"] = {"from_dtype": info.dtype, "to_dtype": dtype}
    kw: dict[str, Any] = {} if shard_bytes is None else {"shard_bytes": shard_bytes}
    per_row = info.dim * 4 * len(layers) * max(1, len(info.views))
    step = max(1, BATCH_BYTES // per_row)
    if full:  # a row holds many tokens: batch by a guess of 64 tokens per row
        step = max(1, step // 64)
    n = len(ds)
    with DatasetWriter(out, model=info.model, revision=info.revision, layers=layers, dim=info.dim,
                       dtype=dtype, scale=scale, pooling=list(info.views), logits_k=info.logits_k,
                       extraction=extraction, description=info.description, num_rows=n,
                       overwrite=overwrite, storage_options=storage_options, **kw) as w:
        for lo in range(0, n, step):
            w.add(**_rows(ds.select(np.arange(lo, min(n, lo + step))), layers, full))
    return open_dataset(out, storage_options=storage_options)


def _rows(part: Dataset, layers: list[Any], full: bool) -> dict[str, Any]:
    """Everything ``DatasetWriter.add`` needs to write ``part``'s rows again."""
    info = part.info
    if full:
        hidden: dict[Any, Any] = {L: [part.tokens(i, L) for i in range(len(part))] for L in layers}
    else:
        hidden = {L: part.layer(L) for L in layers}
    extra = [c for c in part.index.column_names if c not in RESERVED_COLUMNS]
    labels = part.labels
    return {
        "texts": part.texts,
        "hidden": hidden,
        "views": {v: {L: part.layer(L, view=v) for L in layers} for v in info.views[1:]},
        "labels": None if labels is None else labels.tolist(),
        "metadata": {c: part.index.column(c).to_pylist() for c in extra} or None,
        "num_tokens": None if full else part.index.column("num_tokens").to_pylist(),
        "logits_topk": part.logits_topk() if info.logits_k else None,
        **mask_columns(part),  # the token masks (spec section 5c) stay
    }
