"""Summarise decoded metadata as a :class:`~actstore.format.metadata.DatasetInfo`."""

from __future__ import annotations

from typing import Any

from ..errors import FormatError
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
    name = model.get("name", "")
    revision = model.get("revision")
    description = meta.get("actstore:description")
    version = ext.get("version")
    for key, value, optional in (("lmprobe:model.name", name, False),
                                 ("lmprobe:model.revision", revision, True),
                                 ("actstore:description", description, True),
                                 ("actstore:format.version", version, True)):
        if not (isinstance(value, str) or (optional and value is None)):
            raise FormatError(f"{key} must be a string{' or null' if optional else ''}; got {value!r:.80}.")
    return DatasetInfo(
        model=name,
        revision=revision,
        layers=tuple(request(L) for L in primary.layers),  # "embeddings", never -1 (layersel)
        dim=primary.dim,
        dtype=true_dtype,
        storage=primary.storage,
        pooling=primary.pooling,
        views=tuple(views),
        num_prompts=num_rows,
        format_version=str(meta.get("lmprobe:format_version")),
        actstore_version=version,
        logits_k=int(logits["k"]) if logits and "k" in logits else None,
        extraction=_dict(meta.get("actstore:extraction")),
        provenance=_dict(meta.get("lmprobe:provenance")),
        labels=_dict(meta.get("actstore:labels")),
        description=description,
        tensors=_dict(meta.get("lmprobe:tensors")),
        files=files,
    )
