"""Accumulates the index rows and tensor descriptors, and writes the Parquet index."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .._version import __version__
from ..errors import InvalidArgumentError, WriteError
from . import spec
from .columns import label_array

__all__ = ["IndexBuilder", "RESERVED_COLUMNS", "write_index_table"]

RESERVED_COLUMNS = spec.RESERVED_COLUMNS  # defined in spec; re-exported for old importers


def _versions() -> dict[str, Any]:
    out: dict[str, Any] = {
        "actstore_version": __version__,
        "extraction_backend": "actstore",
        "python_version": platform.python_version(),
        "numpy_version": sys.modules["numpy"].__version__,
        "pyarrow_version": pa.__version__,
    }
    for name in ("torch", "transformers"):  # recorded only when the caller already uses them
        if name in sys.modules:
            out[f"{name}_version"] = getattr(sys.modules[name], "__version__", None)
    out["created_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
    return out


class IndexBuilder:
    """Row columns, shard lists and file checksums gathered while a dataset is written."""

    def __init__(
        self, *, model: str, revision: str | None, layers: tuple[int, ...], dim: int,
        dtype: str, views: tuple[str, ...], shard_bytes: int, logits_k: int | None,
        extraction: dict[str, Any], description: str | None,
    ) -> None:
        self.model, self.revision = model, revision
        self.layers, self.dim, self.dtype, self.views = layers, dim, dtype, views
        self.shard_bytes, self.logits_k = shard_bytes, logits_k
        self.extraction, self.description = extraction, description
        self.texts: list[str] = []
        self.labels: list[Any] | None = None
        self.num_tokens: list[int | None] = []
        self.meta: dict[str, list[Any]] = {}
        self.loc: tuple[list[int], list[int]] = ([], [])
        self.logit_loc: tuple[list[int], list[int]] = ([], [])
        self.tokens: list[tuple[int, int, int]] = []  # (rest shard k, offset, n_tokens)
        self.shards: list[int] = []
        self.rest_shards: list[dict[str, int]] = []
        self._rest_prompts = 0
        self.logit_shards: list[dict[str, Any]] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.last_token_shards = 0
        #: Codec datasets: the CodecSpec and the per-view, per-layer error measured at write.
        self.codec: Any = None
        self.codec_stats: dict[str, dict[str, dict[str, Any]]] = {}
        #: Full sequence: write lmprobe's per-token lists too (True), never (False), or by
        #: size (None: up to ``spec.COMPAT_MAX_TOKENS`` tokens; spec section 5b).
        self.lmprobe_compat: bool | None = None
        #: Token masks (spec section 5c): column name -> one value per row.
        self.masks: dict[str, list[Any]] = {}

    @property
    def num_rows(self) -> int:
        return len(self.texts)

    def add_rows(
        self, texts: list[str], *, labels: list[Any] | None,
        metadata: dict[str, list[Any]] | None, num_tokens: list[int | None],
        masks: dict[str, list[Any]] | None = None,
    ) -> None:
        before = len(self.texts)
        if before and set(masks or {}) != set(self.masks):
            raise InvalidArgumentError(
                f"token masks {sorted(masks or {})} were given for this batch but {sorted(self.masks)} "
                "for the ones before; pass the same ones (prompt_tokens, special_first_token) on "
                "every add() or on none."
            )
        for name, values in (masks or {}).items():
            self.masks.setdefault(name, []).extend(values)
        if (labels is None) != (self.labels is None) and before:
            raise InvalidArgumentError(
                "labels were given for some batches but not others; pass labels on every "
                "add() or on none."
            )
        if labels is not None:
            self.labels = (self.labels or []) + labels
        for name in metadata or {}:
            if name in RESERVED_COLUMNS:
                raise InvalidArgumentError(
                    f"metadata column {name!r} clashes with a reserved index column; rename it."
                )
            self.meta.setdefault(name, [None] * before)
        n = len(texts)
        for name, col in self.meta.items():
            col.extend((metadata or {}).get(name, [None] * n))
        self.texts.extend(texts)
        self.num_tokens.extend(num_tokens)

    def add_locations(self, shard: int, offset: int, count: int) -> None:
        self.loc[0].extend([shard] * count)
        self.loc[1].extend(range(offset, offset + count))

    def add_logit_locations(self, shard: int, offset: int, count: int) -> None:
        self.logit_loc[0].extend([shard] * count)
        self.logit_loc[1].extend(range(offset, offset + count))

    def add_shard(self, rows: int) -> None:
        self.shards.append(rows)

    def add_tokens(self, rest_shard: int, offset: int, n_tokens: int, *, counted: bool = True) -> None:
        """One row's tokens; ``counted=False``: in an adopted shard whose descriptor came
        with it (:meth:`add_linked_rest_shard`), not in the shard being filled."""
        self.tokens.append((rest_shard, offset, n_tokens))
        self._rest_prompts += counted

    def add_linked_rest_shard(self, prompts: int, tokens: int) -> None:
        """An adopted token shard (:mod:`.linked`) with its own descriptor."""
        self.rest_shards.append({"num_prompts": prompts, "num_tokens": tokens})

    def add_rest_shard(self, tokens: int) -> None:
        self.rest_shards.append({"num_prompts": self._rest_prompts, "num_tokens": tokens})
        self._rest_prompts = 0

    @property
    def total_tokens(self) -> int:
        return sum(n for _, _, n in self.tokens)

    @property
    def token_lists(self) -> bool:
        """Whether the per-token list columns are written (the rule of spec section 5b)."""
        if not self.tokens:
            return False
        if self.lmprobe_compat is not None:
            return bool(self.lmprobe_compat)
        return self.total_tokens <= spec.COMPAT_MAX_TOKENS

    def set_last_token_shards(self, count: int) -> None:
        self.last_token_shards = count

    def add_logits_shard(self, rel: str, rows: int) -> None:
        self.logit_shards.append({"file": rel, "num_prompts": rows})

    def add_file(self, rel: str, size: int, sha256: str) -> None:
        self.files[rel] = {"size": size, "sha256": sha256}

    # -- output ------------------------------------------------------------------------
    def _view_descriptor(self, view: str, *, primary: bool) -> dict[str, Any]:
        itemsize = spec.STORED_DTYPES[self.dtype][1]
        full = primary and view == "all"
        desc: dict[str, Any] = {
            "type": "hidden",
            "layers": list(self.layers),
            "dim": self.dim,
            "dtype": self.dtype,
            "layout": "per_layer",
            "file_pattern": spec.HIDDEN_PATTERN if primary else spec.VIEW_PATTERN.replace("{view}", view),
            "key_pattern": spec.HIDDEN_KEY,
        }
        if full:
            desc["shards"] = [{"num_prompts": r, "num_tokens": r} for r in self.shards] + self.rest_shards
            desc["storage"] = spec.STORAGE_FULL
            desc["last_token_shards"] = self.last_token_shards
        else:
            desc["shards"] = [{"num_prompts": r} for r in self.shards]
            desc["storage"] = spec.STORAGE_POOLED
            desc["pooling"] = view
            desc["row_bytes"] = self.dim * itemsize
        desc["view"] = view
        if self.codec is not None:  # spec section 2b: codes under their own key, and scales
            desc["key_pattern"] = spec.CODES_KEY
            desc["codec"] = self.codec.descriptor()
        return desc

    def metadata(self) -> dict[str, Any]:
        """Schema metadata (unencoded): ``lmprobe:*`` then ``actstore:*`` keys."""
        tensors: dict[str, Any] = {"hidden_layers": self._view_descriptor(self.views[0], primary=True)}
        if self.logits_k:
            tensors["logits_topk"] = {
                "type": "logits_topk", "k": self.logits_k, "dtype": "float32",
                "indices_dtype": "int32", "pooling": "last_token",
                "file_pattern": spec.LOGITS_PATTERN, "row_bytes": self.logits_k * 8,
                "shards": self.logit_shards,
            }
        ext = ["views", "files"]
        must = [spec.CODEC_EXTENSION] if self.codec is not None else []
        if self.tokens:  # compact token columns always; required when the lists are absent
            (ext if self.token_lists else must).append(spec.COMPACT_TOKENS_EXTENSION)
        if self.masks:  # information only: a reader that ignores the masks reads right (5c.2)
            ext.append(spec.TOKEN_MASKS_EXTENSION)
        codec = {} if self.codec is None else {"actstore:codec": {
            "dtype": self.codec.codec.name, "scale": self.codec.scale, "layers": self.codec_stats}}
        return {
            "lmprobe:format_version": spec.LMPROBE_FORMAT_VERSION,
            "lmprobe:model": {"name": self.model, "revision": self.revision},
            "lmprobe:num_prompts": len(self.texts),
            "lmprobe:prompt_ordering": "input",
            "lmprobe:tensors": tensors,
            "lmprobe:provenance": _versions(),
            "actstore:format": {"version": spec.ACTSTORE_FORMAT_VERSION, "must_understand": must,
                                "extensions": ext + must},
            "actstore:views": {v: self._view_descriptor(v, primary=False) for v in self.views[1:]},
            "actstore:files": self.files,
            "actstore:extraction": self.extraction,
            "actstore:labels": {"kind": label_array(self.labels)[1] if self.labels else None},
            "actstore:description": self.description,
            **codec,
        }

    def table(self) -> pa.Table:
        """The index rows as a pyarrow table with lmprobe's column names and types."""
        n = len(self.texts)
        cols: dict[str, pa.Array] = {"text": pa.array(self.texts, type=pa.string())}
        cols["label"] = label_array(self.labels)[0] if self.labels else pa.nulls(n, pa.int32())
        cols["num_tokens"] = pa.array(self.num_tokens, type=pa.int32())
        cols["shard_index"] = pa.array(self.loc[0], type=pa.int32())
        cols["row_offset"] = pa.array(self.loc[1], type=pa.int32())
        if self.logits_k:
            cols["shard_index_logits"] = pa.array(self.logit_loc[0], type=pa.int32())
            cols["row_offset_logits"] = pa.array(self.logit_loc[1], type=pa.int32())
        if self.tokens:
            cols.update(self._token_columns())
        if "prompt_tokens" in self.masks:
            cols["prompt_tokens"] = pa.array(self.masks["prompt_tokens"], type=pa.int32())
        if "special_first_token" in self.masks:
            cols["special_first_token"] = pa.array(self.masks["special_first_token"], type=pa.bool_())
        for name, values in self.meta.items():
            try:
                cols[name] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise InvalidArgumentError(
                    f"metadata column {name!r} mixes incompatible types ({exc}); give it one type."
                ) from None
        return pa.table(cols)

    def _token_columns(self) -> dict[str, pa.Array]:
        lt = self.last_token_shards
        cols: dict[str, pa.Array] = {
            "token_shard": pa.array([lt + k for k, _, _ in self.tokens], type=pa.int32()),
            "token_start": pa.array([off for _, off, _ in self.tokens], type=pa.int64()),
        }
        if not self.token_lists:  # compact only (spec section 5b): O(rows), not O(tokens)
            return cols
        ids, offsets = [], []
        for (k, off, n_tok), lt_shard, lt_off in zip(self.tokens, *self.loc):
            ids.append([lt + k] * (n_tok - 1) + [lt_shard])
            offsets.append(list(range(off, off + n_tok - 1)) + [lt_off])
        return {
            "token_offset": pa.array(self.loc[1], type=pa.int64()),
            "token_shard_ids": pa.array(ids, type=pa.list_(pa.int64())),
            "token_shard_offsets": pa.array(offsets, type=pa.list_(pa.int64())),
            **cols,
        }

    def write(self, path: str) -> int:
        """Write the index Parquet file with all metadata in its schema; returns its size.

        Row groups of ``spec.INDEX_ROW_GROUP_ROWS`` rows, location columns delta-encoded
        (spec section 3, "Row groups and encodings"). The file's footer is read back
        (natively, no Python file object) and must hold every row, so a short or failed write
        raises :class:`~actstore.errors.WriteError`.
        """
        table = self.table()
        encoded = {k.encode(): json.dumps(v).encode() for k, v in self.metadata().items()}
        table = table.replace_schema_metadata(encoded)
        try:
            write_index_table(table, path)
            size = os.path.getsize(path)
            if table.num_rows > spec.MAX_INDEX_ROWS_PER_BYTE * size + spec.INDEX_ROWS_SLACK:
                # rows cheaper than readers accept (texts all alike): plain offsets, 4 B/row
                write_index_table(table, path, delta=False)
            rows = pq.read_metadata(path).num_rows
        except (OSError, pa.ArrowException) as exc:
            raise WriteError(
                f"{path}: writing the index failed ({exc}); disk full or a file-size limit? "
                "Nothing was committed."
            ) from exc
        if rows != table.num_rows:
            raise WriteError(f"{path}: the written index holds {rows} rows, not {table.num_rows}.")
        return os.path.getsize(path)


def _leaf_paths(table: pa.Table) -> list[str]:
    """The Parquet leaf column paths of ``table`` (``token_shard_ids.list.element``, ...)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table.slice(0, 0), sink)
    md = pq.read_metadata(pa.BufferReader(sink.getvalue()))
    return [md.schema.column(i).path for i in range(md.num_columns)]


def write_index_table(table: pa.Table, path: str, *, delta: bool = True) -> None:
    """Write an index table as the spec lays it out (section 3, "Row groups and encodings").

    Row groups of :data:`~.spec.INDEX_ROW_GROUP_ROWS` rows; the integer location columns
    (:data:`~.spec.DELTA_COLUMNS`) in ``DELTA_BINARY_PACKED`` (``delta=False``: dictionary or
    plain, as pyarrow chooses), every other column dictionary-encoded where it pays; no
    min/max statistics for ``text`` (a long prompt would be copied into the footer of every
    row group).

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "i.parquet")
    >>> write_index_table(pa.table({"text": ["a"], "row_offset": pa.array([0], pa.int32())}), p)
    >>> "DELTA_BINARY_PACKED" in pq.read_metadata(p).row_group(0).column(1).encodings
    True
    """
    leaves = _leaf_paths(table)
    delta_cols = [c for c in spec.DELTA_COLUMNS if c in leaves] if delta else []
    pq.write_table(
        table, path, row_group_size=spec.INDEX_ROW_GROUP_ROWS,
        use_dictionary=[c for c in leaves if c not in delta_cols],
        column_encoding={c: "DELTA_BINARY_PACKED" for c in delta_cols} or None,
        write_statistics=[c for c in leaves if c != "text"],
    )
