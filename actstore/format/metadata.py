"""The index's schema metadata: parsed, validated, and summarised as :class:`DatasetInfo`.

Everything here is data from strangers. A descriptor is accepted only when its layers are
unique integers, its shards a list of counts, and its file pattern names nothing but
``{layer}``/``{shard}`` and resolves inside the dataset root.
"""

from __future__ import annotations

import json
import string
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import FormatError, UnsupportedVersionError
from .paths import safe_relpath
from .spec import (
    ACTSTORE_FORMAT_VERSION,
    EXT_PREFIX,
    KNOWN_EXTENSIONS,
    LMPROBE_FORMAT_VERSION,
    META_PREFIX,
    STORAGE_FULL,
    STORAGE_POOLED,
)

__all__ = ["DatasetInfo", "ViewLayout", "decode_schema_metadata", "parse_layout"]


@dataclass(frozen=True)
class ViewLayout:
    """Where the rows of one view (a pooled or full-sequence hidden-state tensor) live."""

    name: str
    pooling: str
    storage: str
    layers: tuple[int, ...]
    dim: int
    dtype: str
    file_pattern: str
    key_pattern: str
    shard_rows: tuple[int, ...]
    last_token_shards: int = 0

    def path(self, layer: int, shard: int) -> str:
        """Relative path of one shard file, checked to stay inside the dataset."""
        return safe_relpath(
            self.file_pattern.format(layer=layer, shard=shard), field=f"{self.name}.file_pattern"
        )

    def key(self, layer: int) -> str:
        return self.key_pattern.format(layer=layer)


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset holds, read from its index footer alone.

    ``dtype`` is the dtype of the stored tensors (taken from a shard header when the
    metadata's claim disagrees, as lmprobe's ``"float32"`` claim may).
    """

    model: str
    revision: str | None
    layers: tuple[int, ...]
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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)

    def __repr__(self) -> str:  # one aligned row per field, not one 1,000-character line
        from .info import info_text

        return f"DatasetInfo(\n{_indent(info_text(self))}\n)"

    def _repr_html_(self) -> str:
        from .info import info_html

        return info_html(self)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def decode_schema_metadata(raw: dict[bytes, bytes] | None) -> dict[str, Any]:
    """Decode ``lmprobe:*`` and ``actstore:*`` keys (JSON values) into one dict.

    Keys keep their prefix; values that are not JSON stay strings (as lmprobe reads them).
    """
    out: dict[str, Any] = {}
    for k, v in (raw or {}).items():
        key = k.decode() if isinstance(k, bytes) else str(k)
        if not key.startswith((META_PREFIX, EXT_PREFIX)):
            continue
        text = v.decode() if isinstance(v, bytes) else str(v)
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def _major(version: object, *, field_name: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise FormatError(
            f"{field_name} must look like '2.0'; got {version!r}."
        ) from None


def check_versions(meta: dict[str, Any]) -> None:
    """Refuse datasets this reader cannot interpret (missing, older or newer majors)."""
    if f"{META_PREFIX}format_version" not in meta:
        raise FormatError(
            "The index has no 'lmprobe:format_version' in its schema metadata; it is not a "
            "v2 activation dataset (v1 datasets must be upgraded with lmprobe first)."
        )
    version = meta[f"{META_PREFIX}format_version"]
    major = _major(version, field_name="lmprobe:format_version")
    if major > 2:
        raise UnsupportedVersionError(
            f"Dataset format version {version} is newer than this reader supports "
            f"({LMPROBE_FORMAT_VERSION}); upgrade actstore (pip install -U actstore)."
        )
    if major < 2:
        raise FormatError(
            f"Dataset format version {version} is a v1 layout; upgrade it to v2 with lmprobe."
        )
    ext = meta.get(f"{EXT_PREFIX}format")
    if isinstance(ext, dict):
        ext_version = ext.get("version", ACTSTORE_FORMAT_VERSION)
        if _major(ext_version, field_name="actstore:format.version") > 2:
            raise UnsupportedVersionError(
                f"actstore extension version {ext_version} is newer than this reader supports "
                f"({ACTSTORE_FORMAT_VERSION}); upgrade actstore."
            )
        unknown = sorted(set(ext.get("must_understand") or []) - KNOWN_EXTENSIONS)
        if unknown:
            raise UnsupportedVersionError(
                f"The dataset requires extensions {unknown} that this reader does not "
                f"understand (known: {sorted(KNOWN_EXTENSIONS)}); upgrade actstore."
            )


def _check_pattern(pattern: object, *, where: str) -> str:
    if not isinstance(pattern, str):
        raise FormatError(f"{where}.file_pattern must be a string; got {pattern!r}.")
    try:
        parts = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise FormatError(f"{where}.file_pattern {pattern!r} is malformed ({exc}).") from None
    for _, name, spec, conv in parts:
        if name is None:
            continue
        # the width is bounded too: {layer:0999999999d} would build a gigabyte-long name
        width = spec.rstrip("d") if spec else ""
        if name not in {"layer", "shard"} or conv or (spec and not (width.isdigit() and len(width) <= 2)):
            raise FormatError(
                f"{where}.file_pattern {pattern!r} may only use {{layer}} and {{shard}} "
                f"fields with an integer width of at most 2 digits such as {{layer:03d}}; "
                f"found {{{name}{':' + spec if spec else ''}}}."
            )
    safe_relpath(pattern.format(layer=0, shard=0), field=f"{where}.file_pattern")
    return pattern


def _int_list(value: object, *, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise FormatError(f"{where} must be a list of integers; got {value!r}.")
    if len(set(value)) != len(value):
        dupes = sorted({v for v in value if value.count(v) > 1})
        raise FormatError(f"{where} lists layers {dupes} more than once; each layer must be unique.")
    return tuple(value)


def _view(name: str, desc: object, *, default_pooling: str, where: str) -> ViewLayout:
    if not isinstance(desc, dict):
        raise FormatError(f"{where} must be an object; got {type(desc).__name__}.")
    if desc.get("layout", "per_layer") != "per_layer":
        raise FormatError(
            f"{where}.layout is {desc.get('layout')!r}; only the v2 'per_layer' layout is supported."
        )
    layers = _int_list(desc.get("layers"), where=f"{where}.layers")
    dim = desc.get("dim")
    if not isinstance(dim, int) or dim <= 0:
        raise FormatError(f"{where}.dim must be a positive integer; got {dim!r}.")
    shards = desc.get("shards")
    if not isinstance(shards, list) or not all(
        isinstance(s, dict) and isinstance(s.get("num_prompts"), int) for s in shards
    ):
        raise FormatError(f"{where}.shards must be a list of {{'num_prompts': int}} objects.")
    storage = desc.get("storage", STORAGE_POOLED)
    if storage not in (STORAGE_POOLED, STORAGE_FULL):
        raise FormatError(f"{where}.storage must be 'pooled' or 'full_sequence'; got {storage!r}.")
    key_pattern = desc.get("key_pattern", "hidden.layer_{layer}")
    if not isinstance(key_pattern, str) or "{layer}" not in key_pattern:
        raise FormatError(f"{where}.key_pattern must contain '{{layer}}'; got {key_pattern!r}.")
    lt = int(desc.get("last_token_shards", 0) or 0)
    if storage == STORAGE_FULL and not 0 < lt <= len(shards):
        raise FormatError(
            f"{where}.last_token_shards must be between 1 and {len(shards)} for full-sequence "
            f"storage; got {desc.get('last_token_shards')!r}."
        )
    return ViewLayout(
        name=name,
        pooling=str(desc.get("pooling", default_pooling)),
        storage=storage,
        layers=layers,
        dim=dim,
        dtype=str(desc.get("dtype", "float32")),
        file_pattern=_check_pattern(desc.get("file_pattern"), where=where),
        key_pattern=key_pattern,
        shard_rows=tuple(
            int(s.get("num_tokens", s["num_prompts"])) if storage == STORAGE_FULL and i >= lt
            else int(s["num_prompts"])
            for i, s in enumerate(shards)
        ),
        last_token_shards=lt if storage == STORAGE_FULL else len(shards),
    )


def parse_layout(meta: dict[str, Any]) -> tuple[dict[str, ViewLayout], dict[str, Any] | None]:
    """Parse the hidden-state views and the logits descriptor from decoded metadata.

    Returns
    -------
    views : dict
        View name -> layout; the primary view (lmprobe's ``hidden_layers``) comes first.
    logits : dict or None
        The ``logits_topk`` descriptor, with its ``shards[i]["file"]`` paths checked.
    """
    check_versions(meta)
    tensors = meta.get(f"{META_PREFIX}tensors")
    if not isinstance(tensors, dict):
        raise FormatError("'lmprobe:tensors' must be an object of tensor descriptors.")
    views: dict[str, ViewLayout] = {}
    hidden = tensors.get("hidden_layers")
    if hidden is not None:
        storage = hidden.get("storage", STORAGE_POOLED) if isinstance(hidden, dict) else None
        default = "all" if storage == STORAGE_FULL else "last_token"
        name = str(hidden.get("view") or hidden.get("pooling") or default)
        if storage == STORAGE_FULL:
            name = "all"
        views[name] = _view(name, hidden, default_pooling=default, where="lmprobe:tensors.hidden_layers")
    extra = meta.get(f"{EXT_PREFIX}views") or {}
    if not isinstance(extra, dict):
        raise FormatError("'actstore:views' must be an object mapping view names to descriptors.")
    for name, desc in extra.items():
        if name in views:
            raise FormatError(f"actstore:views redefines the primary view {name!r}.")
        views[name] = _view(name, desc, default_pooling=name, where=f"actstore:views.{name}")
    logits = tensors.get("logits_topk")
    if logits is not None:
        if not isinstance(logits, dict) or not isinstance(logits.get("shards"), list):
            raise FormatError("lmprobe:tensors.logits_topk must have a 'shards' list.")
        for i, shard in enumerate(logits["shards"]):
            if not isinstance(shard, dict) or "file" not in shard:
                raise FormatError(f"lmprobe:tensors.logits_topk.shards[{i}] lacks 'file'.")
            safe_relpath(shard["file"], field=f"lmprobe:tensors.logits_topk.shards[{i}].file")
    return views, logits


def parse_files(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``actstore:files``: relative path -> {size, sha256}, each path and value checked."""
    files = meta.get(f"{EXT_PREFIX}files") or {}
    if not isinstance(files, dict):
        raise FormatError("'actstore:files' must map relative paths to {size, sha256}.")
    out: dict[str, dict[str, Any]] = {}
    for path, entry in files.items():
        rel = safe_relpath(path, field="actstore:files")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("size"), int)
            or not isinstance(entry.get("sha256"), str)
            or len(entry["sha256"]) != 64
        ):
            raise FormatError(f"actstore:files[{path!r}] must be {{'size': int, 'sha256': 64 hex}}.")
        out[rel] = {"size": entry["size"], "sha256": entry["sha256"].lower()}
    return out
