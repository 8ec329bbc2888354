"""``DatasetInfo``: what a dataset holds, defined and built from decoded metadata here, and
shown (the text table ``repr(info)`` and ``actstore info`` print, and an HTML table for
notebooks)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import FormatError
from .codecs import info_summary
from .layersel import request
from .metadata import ViewLayout

__all__ = ["DatasetInfo", "build_info", "info_html", "info_rows", "info_text"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset holds, read from its index footer alone.

    ``dtype`` is the dtype of the stored tensors (taken from a shard header when the
    metadata's claim disagrees, as lmprobe's ``"float32"`` claim may; an actstore dataset whose
    header disagrees with its recorded dtype is refused). ``layers`` are the layers present:
    a partial local copy lists the others in ``absent_layers``.

    Examples
    --------
    >>> import actstore
    >>> info = actstore.open_dataset("acts/minilm").info     # doctest: +SKIP
    >>> info.model, info.layers, info.dim, info.dtype, info.num_prompts       # doctest: +SKIP
    """

    model: str
    revision: str | None
    layers: tuple[int | str, ...]  # stored layers; the embedding output as "embeddings" (layersel)
    dim: int
    dtype: str
    storage: str
    pooling: str
    views: tuple[str, ...]
    num_prompts: int
    format_version: str
    actstore_version: str | None
    logits_k: int | None
    extraction: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    tensors: dict[str, Any] = field(default_factory=dict, repr=False)
    files: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    #: Layers the metadata lists whose files are not in this (partially pulled) local copy.
    absent_layers: tuple[int | str, ...] = ()
    #: Codec datasets: dtype, scale granularity and the error measured at write time
    #: (``codecs.info_summary``); None for float datasets.
    codec: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)

    def __repr__(self) -> str:  # one aligned row per field, not one 1,000-character line
        return f"DatasetInfo(\n{_indent(info_text(self))}\n)"

    def _repr_html_(self) -> str:
        return info_html(self)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _fmt_layers(layers: Sequence[int | str]) -> str:
    blocks = [v for v in layers if not isinstance(v, str)]  # "embeddings" is not in a range
    if len(blocks) > 3 and blocks == list(range(blocks[0], blocks[-1] + 1)):
        names = [v for v in layers if isinstance(v, str)]
        return ", ".join([*names, f"{blocks[0]}–{blocks[-1]}"]) + f" ({len(layers)} layers)"
    return ", ".join(map(str, layers))


def info_rows(info: DatasetInfo, url: str | None = None,
              columns: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(label, value) rows describing ``info``; ``columns`` are the index's user columns."""
    size = sum(int(f.get("size", 0)) for f in info.files.values())
    written = info.provenance.get("actstore_version") if isinstance(info.provenance, dict) else None
    fmt = f"lmprobe v2 layout, format version {info.format_version}"
    if info.actstore_version:
        fmt += f" (actstore extensions {info.actstore_version})"
    rows = [("dataset", url)] if url else []
    rows += [
        ("model", (info.model or "-") + (f" @ {info.revision}" if info.revision else "")),
        ("prompts", f"{info.num_prompts:,}"),
        ("layers", _fmt_layers(info.layers)),
        ("dim", str(info.dim)),
        ("dtype", info.dtype),
        ("storage", info.storage),
        ("views", ", ".join(info.views)),
        ("logits top-k", str(info.logits_k) if info.logits_k else "-"),
        ("labels", str(info.labels.get("kind") or "-")),
    ]
    if columns is not None:
        rows.append(("columns", ", ".join(columns) if columns else "-"))
    rows += [
        ("format", fmt),
        ("written by", f"actstore {written}" if written else "-"),
        ("tensor bytes", f"{size / 1e6:,.1f} MB in {len(info.files)} files" if info.files else "-"),
    ]
    if info.codec:
        rows.insert(rows.index(("dtype", info.dtype)) + 1, ("codec", _codec_text(info.codec)))
    if info.description:
        rows.append(("description", info.description))
    return rows


def _codec_text(codec: dict[str, Any]) -> str:
    """``int8, per_channel scales; error worst layer: rel L2 0.9 %, cosine 0.99995, ...``."""
    return (f"{codec.get('dtype')}, {codec.get('scale')} scales; measured at write (worst layer): "
            f"rel L2 {100 * codec['rel_l2']:.2f} %, mean cosine {codec['mean_cosine']:.5f}, "
            f"max abs err {codec['max_abs_err']:.3g}, clipped {codec['clipped']}")


def info_text(info: DatasetInfo, url: str | None = None,
              columns: Sequence[str] | None = None) -> str:
    """An aligned two-column text table of :func:`info_rows`."""
    rows = info_rows(info, url, columns)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def info_html(info: DatasetInfo, url: str | None = None,
              columns: Sequence[str] | None = None) -> str:
    """An HTML table of :func:`info_rows`, for notebooks."""
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                   f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
                   for k, v in info_rows(info, url, columns))
    return f"<table><caption style='text-align:left'><b>DatasetInfo</b></caption>{body}</table>"


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
        codec=info_summary(meta.get("actstore:codec"), primary.name) if primary.codec else None,
    )
