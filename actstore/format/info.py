"""Summarise decoded metadata as a :class:`~actstore.format.metadata.DatasetInfo`."""

from __future__ import annotations

from typing import Any

from .layersel import request
from .metadata import DatasetInfo, ViewLayout

__all__ = ["build_info"]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def build_info(
    meta: dict[str, Any],
    views: dict[str, ViewLayout],
    logits: dict[str, Any] | None,
    files: dict[str, dict[str, Any]],
    num_rows: int,
    true_dtype: str,
) -> DatasetInfo:
    """Build the info object; ``true_dtype`` comes from a shard header, not the claim."""
    primary = next(iter(views.values()))
    model = _dict(meta.get("lmprobe:model"))
    ext = _dict(meta.get("actstore:format"))
    return DatasetInfo(
        model=str(model.get("name", "")),
        revision=model.get("revision"),
        layers=tuple(request(L) for L in primary.layers),  # "embeddings", never -1 (layersel)
        dim=primary.dim,
        dtype=true_dtype,
        storage=primary.storage,
        pooling=primary.pooling,
        views=tuple(views),
        num_prompts=num_rows,
        format_version=str(meta.get("lmprobe:format_version")),
        actstore_version=ext.get("version"),
        logits_k=int(logits["k"]) if logits and "k" in logits else None,
        extraction=_dict(meta.get("actstore:extraction")),
        provenance=_dict(meta.get("lmprobe:provenance")),
        labels=_dict(meta.get("actstore:labels")),
        description=meta.get("actstore:description"),
        tensors=_dict(meta.get("lmprobe:tensors")),
        files=files,
    )
