"""The index's schema metadata: parsed and validated (the summary, ``DatasetInfo``, is built
in :mod:`.info`).

Everything here is data from strangers, and this module is the one place it is parsed: the
reader, the Hub code and the cache all go through :func:`decode_schema_metadata`,
:func:`parse_layout` and :func:`parse_files`. JSON is bounded in size and depth *before* it is
parsed (``MAX_METADATA_BYTES``, ``MAX_JSON_DEPTH``: a linear scan, so a deeply nested value
cannot reach the recursive parser), and every key is checked for its JSON type and range
before use, so hostile metadata raises only :class:`FormatError` subclasses naming the key
(the reader adds the index file's name). A descriptor is accepted only when its layers are
unique bounded integers, its shards a list of counts, its file pattern exactly the canonical
one, and its key pattern names nothing but ``{layer}``.

Why a hand-written typed parser and not a validation library: the schema is small (a dozen
keys), its rules are not only types (canonical patterns, counts that must agree, paths that
must stay inside the root), and the messages must name the key, what was expected and the
fix. pydantic happens to be installed here but is no dependency of actstore, and its lax
mode coerces exactly what must be refused (``"5"`` or ``5.0`` to ``5``, ``true`` to ``1``);
strict mode everywhere plus custom validators would be more code than the checks themselves.
"""

from __future__ import annotations

import functools
import json
import re
import string
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FormatError, UnsupportedVersionError
from .codec_spec import CodecSpec, parse_codec
from .paths import safe_relpath
from .spec import (
    ACTSTORE_FORMAT_VERSION,
    CODEC_EXTENSION,
    EXT_PREFIX,
    HIDDEN_PATTERN,
    KNOWN_EXTENSIONS,
    LMPROBE_FORMAT_VERSION,
    MAX_DIM,
    MAX_JSON_DEPTH,
    MAX_LAYER,
    MAX_METADATA_BYTES,
    MAX_ROWS,
    META_PREFIX,
    STORAGE_FULL,
    STORAGE_POOLED,
    STORED_DTYPES,
    VIEW_NAME,
    VIEW_PATTERN,
)

__all__ = [
    "ViewLayout",
    "bounded_json",
    "check_num_prompts",
    "decode_schema_metadata",
    "parse_files",
    "parse_layout",
]


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
    #: The compact storage codec of an int8/fp8 view (spec section 2b); None for floats.
    codec: CodecSpec | None = None

    def path(self, layer: int, shard: int) -> str:
        """Relative path of one shard file, checked to stay inside the dataset (memoised:
        every read names its file, and the check costs about 50 us)."""
        return _shard_path(self.file_pattern, self.name, layer, shard)

    def key(self, layer: int) -> str:
        return self.key_pattern.format(layer=layer)


@functools.lru_cache(maxsize=1 << 16)
def _shard_path(pattern: str, view: str, layer: int, shard: int) -> str:
    """:meth:`ViewLayout.path` (a refused path raises each time: errors are not cached)."""
    return safe_relpath(pattern.format(layer=layer, shard=shard), field=f"{view}.file_pattern")


def bounded_json(raw: bytes | str, *, where: str, error: type[FormatError] = FormatError,
                 limit: int = MAX_METADATA_BYTES) -> Any:
    """Decode JSON from a dataset with its size and nesting depth bounded first.

    Raises ``error`` (a :class:`FormatError`) naming ``where`` for text that is too large,
    nested deeper than ``MAX_JSON_DEPTH``, not UTF-8, or not JSON; nothing else escapes
    (no ``RecursionError``, ``UnicodeDecodeError``).
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if len(data) > limit:
        raise error(f"{where} is {len(data)} bytes of JSON; at most {limit} are accepted.")
    depth = _json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{where} nests JSON {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted.")
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise error(f"{where} is not valid UTF-8 JSON ({type(exc).__name__}: {exc}).") from None


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def _json_depth(data: bytes) -> int:
    """Deepest bracket nesting outside strings (a linear scan, before any parser recurses)."""
    if b"[" not in data and b"{" not in data:
        return 0
    stripped = np.frombuffer(_JSON_STRING.sub(b"", data), dtype=np.uint8)
    deepest, depth, chunk = 0, 0, 1 << 20  # 1 MiB at a time: little scratch memory
    for start in range(0, stripped.size, chunk):
        c = stripped[start : start + chunk]
        step = ((c == 91) | (c == 123)).astype(np.int8) - ((c == 93) | (c == 125)).astype(np.int8)
        running = np.cumsum(step, dtype=np.int64) + depth
        deepest = max(deepest, int(running.max()))
        depth = int(running[-1])
    return deepest


def decode_schema_metadata(raw: dict[bytes, bytes] | None, *, where: str = "index") -> dict[str, Any]:
    """Decode ``lmprobe:*`` and ``actstore:*`` keys (JSON values) into one dict.

    Keys keep their prefix; values that are not JSON stay strings (as lmprobe reads them).
    Keys and values must be UTF-8, and are bounded in size and nesting depth; anything else
    raises :class:`FormatError` naming the key and ``where`` (the index file).
    """
    out: dict[str, Any] = {}
    total = 0
    for k, v in (raw or {}).items():
        try:
            key = k.decode("utf-8") if isinstance(k, bytes) else str(k)
        except UnicodeDecodeError:
            raise FormatError(f"{where}: a schema metadata key is not UTF-8 ({k[:40]!r}).") from None
        if not key.startswith((META_PREFIX, EXT_PREFIX)):
            continue
        data = v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogatepass")
        total += len(data)
        if total > MAX_METADATA_BYTES:
            raise FormatError(
                f"{where}: schema metadata exceeds {MAX_METADATA_BYTES} bytes (at key {key!r})."
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{where}: schema metadata {key!r} is not UTF-8 text.") from None
        where_key = f"{where}: schema metadata {key!r}"
        depth = _json_depth(data)
        if depth > MAX_JSON_DEPTH:
            raise FormatError(f"{where_key} nests JSON {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted.")
        try:
            out[key] = json.loads(text, parse_constant=_no_constant)
            continue
        except (ValueError, RecursionError):
            pass
        out[key] = text
    return out


def _int(value: object, *, where: str, lo: int = 0, hi: int = MAX_ROWS) -> int:
    """A JSON integer (not a bool, not a float such as 2.0 or 2.5) within ``[lo, hi]``."""
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise FormatError(f"{where} must be an integer between {lo} and {hi}; got {_show(value)}.")
    return int(value)


def _str(value: object, *, where: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise FormatError(f"{where} must be a string; got {_show(value)}.")
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _major(version: object, *, field_name: str) -> int:
    if isinstance(version, bool) or not isinstance(version, (str, int, float)):
        raise FormatError(f"{field_name} must look like '2.0'; got {_show(version)}.")
    head = str(version).split(".")[0]
    if not (head.isascii() and head.isdigit() and len(head) <= 6):
        raise FormatError(f"{field_name} must look like '2.0'; got {_show(version)}.")
    return int(head)


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
    if ext is not None and not isinstance(ext, dict):
        raise FormatError(f"'actstore:format' must be an object; got {_show(ext)}.")
    if isinstance(ext, dict):
        ext_version = ext.get("version", ACTSTORE_FORMAT_VERSION)
        if _major(ext_version, field_name="actstore:format.version") > 2:
            raise UnsupportedVersionError(
                f"actstore extension version {ext_version} is newer than this reader supports "
                f"({ACTSTORE_FORMAT_VERSION}); upgrade actstore."
            )
        must = ext.get("must_understand") or []
        if not isinstance(must, list) or not all(isinstance(x, str) for x in must):
            raise FormatError(
                f"actstore:format.must_understand must be a list of strings; got {_show(must)}."
            )
        unknown = sorted(set(must) - KNOWN_EXTENSIONS)
        if unknown:
            raise UnsupportedVersionError(
                f"The dataset requires extensions {unknown} that this reader does not "
                f"understand (known: {sorted(KNOWN_EXTENSIONS)}); upgrade actstore."
            )


def _fields(pattern: object, *, where: str, allowed: frozenset[str]) -> set[str]:
    """The field names of a ``str.format`` pattern, each checked (no conversion, no index,
    an integer width of at most two digits), so formatting it can neither fail nor blow up."""
    if not isinstance(pattern, str) or len(pattern) > 1024:
        raise FormatError(f"{where} must be a string of at most 1024 characters; got {_show(pattern)}.")
    try:
        parts = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise FormatError(f"{where} {pattern!r} is malformed ({exc}).") from None
    names: set[str] = set()
    for _, name, spec, conv in parts:
        if name is None:
            continue
        # the width is bounded too: {layer:0999999999d} would build a gigabyte-long name
        width = spec[:-1] if spec.endswith("d") else spec
        if name not in allowed or conv or (spec and not (width.isascii() and width.isdigit()
                                                         and len(width) <= 2)):
            raise FormatError(
                f"{where} {pattern!r} may only use {sorted('{' + a + '}' for a in allowed)} "
                f"fields with an integer width of at most 2 digits such as {{layer:03d}}; "
                f"found {{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}."
            )
        names.add(name)
    return names


_LAYER_SHARD = frozenset({"layer", "shard"})


def _check_pattern(pattern: object, *, where: str, layers: int = 1, shards: int = 1,
                   canonical: str | None = None) -> str:
    """A file pattern: only ``{layer}``/``{shard}``, inside the root, naming a distinct file
    for each layer and shard, and exactly ``canonical`` when given (spec section 5)."""
    names = _fields(pattern, where=f"{where}.file_pattern", allowed=_LAYER_SHARD)
    assert isinstance(pattern, str)
    safe_relpath(pattern.format(layer=0, shard=0), field=f"{where}.file_pattern")
    for name, count in (("layer", layers), ("shard", shards)):
        if count > 1 and name not in names:
            raise FormatError(
                f"{where}.file_pattern {pattern!r} has no {{{name}}} field but the view has "
                f"{count} {name}s; every {name} would map to the same file."
            )
    if canonical is not None and pattern != canonical:
        raise FormatError(
            f"{where}.file_pattern is {pattern!r}; it must be exactly {canonical!r} (lmprobe "
            "reads the primary view under that name and ignores this field; a view's files "
            "lie in its own folder, so no view can read another's)."
        )
    return pattern


def _int_list(value: object, *, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise FormatError(f"{where} must be a list of integers; got {_show(value)}.")
    if any(not -MAX_LAYER <= v <= MAX_LAYER for v in value):
        raise FormatError(f"{where} holds a layer outside [-{MAX_LAYER}, {MAX_LAYER}]; got {_show(value)}.")
    if len(set(value)) != len(value):
        dupes = sorted({v for v in value if value.count(v) > 1})
        raise FormatError(f"{where} lists layers {dupes} more than once; each layer must be unique.")
    return tuple(value)


def _shard_rows(shards: object, *, where: str, full: bool, lt: int) -> tuple[int, ...]:
    if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
        raise FormatError(f"{where}.shards must be a list of {{'num_prompts': int}} objects.")
    rows = []
    for i, s in enumerate(shards):
        n = _int(s.get("num_prompts"), where=f"{where}.shards[{i}].num_prompts")
        if full and i >= lt:
            tokens = s.get("num_tokens")
            n = n if tokens is None else _int(tokens, where=f"{where}.shards[{i}].num_tokens")
        rows.append(n)
    return tuple(rows)


def _view(name: str, desc: object, *, default_pooling: str, where: str,
          canonical: str | None = None) -> ViewLayout:
    if not isinstance(desc, dict):
        raise FormatError(f"{where} must be an object; got {type(desc).__name__}.")
    if desc.get("layout", "per_layer") != "per_layer":
        raise FormatError(
            f"{where}.layout is {_show(desc.get('layout'))}; only the v2 'per_layer' layout is supported."
        )
    layers = _int_list(desc.get("layers"), where=f"{where}.layers")
    dim = desc.get("dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 0 < dim <= MAX_DIM:
        raise FormatError(f"{where}.dim must be a positive integer (at most {MAX_DIM}); got {_show(dim)}.")
    shards = desc.get("shards")
    if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
        raise FormatError(f"{where}.shards must be a list of {{'num_prompts': int}} objects.")
    storage = desc.get("storage", STORAGE_POOLED)
    if storage not in (STORAGE_POOLED, STORAGE_FULL):
        raise FormatError(f"{where}.storage must be 'pooled' or 'full_sequence'; got {_show(storage)}.")
    key_pattern = desc.get("key_pattern", "hidden.layer_{layer}")
    if not isinstance(key_pattern, str) or "{layer}" not in key_pattern:
        raise FormatError(f"{where}.key_pattern must contain '{{layer}}'; got {_show(key_pattern)}.")
    _fields(key_pattern, where=f"{where}.key_pattern", allowed=frozenset({"layer"}))
    lt_raw = desc.get("last_token_shards", 0)
    lt = 0 if lt_raw is None else lt_raw
    if storage == STORAGE_FULL and (not isinstance(lt, int) or isinstance(lt, bool)
                                    or not 0 < lt <= len(shards)):
        raise FormatError(
            f"{where}.last_token_shards must be between 1 and {len(shards)} for full-sequence "
            f"storage; got {_show(lt_raw)}."
        )
    dtype = desc.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype not in STORED_DTYPES:
        raise FormatError(f"{where}.dtype must be one of {sorted(STORED_DTYPES)}; got {_show(dtype)}.")

    codec = parse_codec(dtype, desc, where=where)
    pooling = desc.get("pooling", default_pooling)
    _str(pooling, where=f"{where}.pooling")
    full = storage == STORAGE_FULL
    return ViewLayout(
        name=name,
        pooling=str(pooling),
        storage=storage,
        layers=layers,
        dim=dim,
        dtype=str(dtype),
        file_pattern=_check_pattern(desc.get("file_pattern"), where=where, layers=len(layers),
                                    shards=len(shards), canonical=canonical),
        key_pattern=key_pattern,
        shard_rows=_shard_rows(shards, where=where, full=full, lt=int(lt) if full else 0),
        last_token_shards=int(lt) if full else len(shards),
        codec=codec,
    )


def _check_codec_declared(meta: dict[str, Any], views: dict[str, ViewLayout]) -> None:
    """Refuse int8/fp8 views in a dataset whose ``must_understand`` lacks ``codecs``: older
    readers would not know to refuse it (spec section 2b), so it was written wrong or edited."""
    coded = [name for name, v in views.items() if v.codec is not None]
    if not coded:
        return
    fmt = meta.get(f"{EXT_PREFIX}format")
    must = fmt.get("must_understand") if isinstance(fmt, dict) else None
    if not isinstance(must, list) or CODEC_EXTENSION not in must:
        raise FormatError(
            f"View(s) {coded} store {views[coded[0]].dtype} codes but actstore:format.must_understand "
            f"does not list {CODEC_EXTENSION!r} (spec section 2b); the dataset is corrupt or was edited."
        )


def parse_layout(meta: dict[str, Any]) -> tuple[dict[str, ViewLayout], dict[str, Any] | None]:
    """Parse the hidden-state views and the logits descriptor from decoded metadata.

    Returns
    -------
    views : dict
        View name -> layout; the primary view (lmprobe's ``hidden_layers``) comes first.
    logits : dict or None
        The ``logits_topk`` descriptor, with ``k``, its ``shards[i]["file"]`` paths and
        ``num_prompts`` checked.
    """
    check_versions(meta)
    tensors = meta.get(f"{META_PREFIX}tensors")
    if not isinstance(tensors, dict):
        raise FormatError("'lmprobe:tensors' must be an object of tensor descriptors.")
    views: dict[str, ViewLayout] = {}
    hidden = tensors.get("hidden_layers")
    if hidden is not None:
        if not isinstance(hidden, dict):
            raise FormatError("lmprobe:tensors.hidden_layers must be an object.")
        storage = hidden.get("storage", STORAGE_POOLED)
        default = "all" if storage == STORAGE_FULL else "last_token"
        label = hidden.get("view") or hidden.get("pooling") or default
        name = _str(label, where="lmprobe:tensors.hidden_layers.view")
        assert name is not None
        if storage == STORAGE_FULL:
            name = "all"
        views[name] = _view(name, hidden, default_pooling=default,
                            where="lmprobe:tensors.hidden_layers", canonical=HIDDEN_PATTERN)
    extra = meta.get(f"{EXT_PREFIX}views") or {}
    if not isinstance(extra, dict):
        raise FormatError("'actstore:views' must be an object mapping view names to descriptors.")
    for name, desc in extra.items():
        if name in views:
            raise FormatError(f"actstore:views redefines the primary view {name!r}.")
        if not VIEW_NAME.match(name):
            raise FormatError(f"actstore:views has a view named {_show(name)}; names are [a-z0-9_]{{1,64}}.")
        views[name] = _view(name, desc, default_pooling=name, where=f"actstore:views.{name}",
                            canonical=VIEW_PATTERN.replace("{view}", name))
    _check_codec_declared(meta, views)
    logits = tensors.get("logits_topk")
    if logits is not None:
        if not isinstance(logits, dict) or not isinstance(logits.get("shards"), list):
            raise FormatError("lmprobe:tensors.logits_topk must have a 'shards' list.")
        k = logits.get("k")
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise FormatError(f"lmprobe:tensors.logits_topk.k must be a positive integer; got {_show(k)}.")
        for i, shard in enumerate(logits["shards"]):
            if not isinstance(shard, dict) or "file" not in shard:
                raise FormatError(f"lmprobe:tensors.logits_topk.shards[{i}] lacks 'file'.")
            safe_relpath(shard["file"], field=f"lmprobe:tensors.logits_topk.shards[{i}].file")
            _int(shard.get("num_prompts"), where=f"lmprobe:tensors.logits_topk.shards[{i}].num_prompts")
    return views, logits


_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


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
            or isinstance(entry.get("size"), bool)
            or not 0 <= entry["size"] <= MAX_ROWS
            or not isinstance(entry.get("sha256"), str)
            or not _HEX.match(entry["sha256"])
        ):
            raise FormatError(f"actstore:files[{path!r}] must be {{'size': int, 'sha256': 64 hex}}.")
        out[rel] = {"size": entry["size"], "sha256": entry["sha256"].lower()}
    return out


def check_num_prompts(meta: dict[str, Any], num_rows: int) -> None:
    """``lmprobe:num_prompts``, when present, must be the index's row count."""
    claim = meta.get(f"{META_PREFIX}num_prompts")
    if claim is None:
        return
    if not isinstance(claim, int) or isinstance(claim, bool) or claim != num_rows:
        raise FormatError(
            f"lmprobe:num_prompts is {_show(claim)} but the index holds {num_rows} rows; the "
            "index and its metadata disagree (a truncated or edited index)."
        )
