"""``Dataset``: a lazy reader over a v2 dataset on any fsspec URL.

Opening reads the Parquet index (its footer holds all the metadata) and nothing else.
Tensor bytes are read on demand by exact byte ranges from the shard files, whose headers
are parsed by hand and checked against the file size and the metadata before use.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import (
    DatasetNotFoundError,
    FormatError,
    IntegrityError,
    InvalidArgumentError,
    LayerNotFoundError,
    require,
)
from . import spec
from .arrowio import arrow_buffer
from .dtypes import bf16_bits
from .header import HEADER_PROBE_BYTES, TensorEntry, header_length, parse_header
from .layersel import request, resolve_layer, resolve_layers
from .metadata import (
    DatasetInfo,
    ViewLayout,
    check_num_prompts,
    decode_schema_metadata,
    parse_files,
    parse_layout,
)
from .rows import read_rows, storage_numpy
from .source import ByteSource, LocalSource, source_for_url

__all__ = ["Dataset", "open_dataset", "read_index"]

INDEX_PATH = spec.INDEX_FILE.format(split="train", part=0, parts=1)


def read_index(source: ByteSource, path: str = INDEX_PATH) -> pa.Table:
    """Read the Parquet index of a dataset through ``source``.

    Nothing is allocated from a size before it is checked: the file may be at most
    ``spec.MAX_INDEX_BYTES``; its footer may declare at most ``MAX_INDEX_ROWS_PER_BYTE`` rows
    per byte of file and decoded column data at most ``MAX_INDEX_EXPANSION`` times the file
    (a decompression bomb declares far more).
    """
    try:
        size = source.size(path)
    except FileNotFoundError:
        raise DatasetNotFoundError(
            f"No dataset index at {getattr(source, 'url', '?')}/{path}: a folder without an "
            "index is not a dataset (an unfinished or interrupted write leaves none)."
        ) from None
    if not isinstance(size, int) or not 0 <= size <= spec.MAX_INDEX_BYTES:
        raise FormatError(
            f"{path}: the index is {size} bytes; at most {spec.MAX_INDEX_BYTES} are read "
            "(spec section 3); refusing to load it."
        )
    (data,) = source.read_ranges(path, [(0, size)])
    try:
        buf = arrow_buffer(data)  # not BytesIO: see arrowio (the exit-134 crash)
        md = pq.ParquetFile(pa.BufferReader(buf)).metadata
        rows = md.num_rows
        decoded = sum(md.row_group(g).column(c).total_uncompressed_size
                      for g in range(md.num_row_groups) for c in range(md.num_columns))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FormatError(f"{path}: the index is not a readable Parquet file ({exc}).") from None
    if rows < 0 or rows > spec.MAX_INDEX_ROWS_PER_BYTE * size + spec.INDEX_ROWS_SLACK:
        raise FormatError(
            f"{path}: the index declares {rows} rows in {size} bytes, more than "
            f"{spec.MAX_INDEX_ROWS_PER_BYTE} rows per byte allows; it is corrupt or a "
            "decompression bomb."
        )
    if decoded < 0 or decoded > spec.MAX_INDEX_EXPANSION * size + (64 << 20):
        raise FormatError(
            f"{path}: the index declares {decoded} bytes of decoded column data in a {size}-byte "
            f"file (more than {spec.MAX_INDEX_EXPANSION}x); it is corrupt or a decompression bomb."
        )
    try:
        table = pq.read_table(pa.BufferReader(buf))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FormatError(f"{path}: the index is not a readable Parquet file ({exc}).") from None
    if table.num_rows != rows:
        raise FormatError(f"{path}: the index footer declares {rows} rows but holds {table.num_rows}.")
    return table


def _check_columns(table: pa.Table) -> None:
    """Index columns the reader uses must have the types the spec gives them."""
    t = table.schema
    if "text" not in t.names:
        raise FormatError("The index lacks the required 'text' column.")
    if not (pa.types.is_string(t.field("text").type) or pa.types.is_large_string(t.field("text").type)):
        raise FormatError(f"The index's 'text' column must hold strings; it holds {t.field('text').type}.")
    if "label" in t.names:
        typ = t.field("label").type
        if not (pa.types.is_integer(typ) or pa.types.is_boolean(typ) or pa.types.is_floating(typ)
                or pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_null(typ)):
            raise FormatError(
                f"The index's 'label' column must hold integers, booleans, floats or strings; "
                f"it holds {typ}."
            )
    for name in ("shard_index", "row_offset", "shard_index_logits", "row_offset_logits"):
        if name in t.names and not pa.types.is_integer(t.field(name).type):
            raise FormatError(
                f"The index's {name!r} column must hold integers; it holds {t.field(name).type} "
                "(a fractional offset is refused, not truncated)."
            )
    for name in ("token_shard_ids", "token_shard_offsets"):
        if name in t.names:
            typ = t.field(name).type
            if not ((pa.types.is_list(typ) or pa.types.is_large_list(typ))
                    and pa.types.is_integer(typ.value_type)):
                raise FormatError(f"The index's {name!r} column must hold lists of integers; it holds {typ}.")


@dataclass
class _State:
    """Everything a dataset and its selections share: layout, index arrays, header cache."""

    source: ByteSource
    url: str
    table: pa.Table
    meta: dict[str, Any]
    views: dict[str, ViewLayout]
    logits: dict[str, Any] | None
    files: dict[str, dict[str, Any]]
    loc: tuple[np.ndarray, np.ndarray]
    logit_loc: tuple[np.ndarray, np.ndarray] | None
    verify_checksums: bool
    headers: dict[str, dict[str, TensorEntry]] = field(default_factory=dict)
    verified: set[str] = field(default_factory=set)
    info: DatasetInfo | None = None
    present: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _locations(table: pa.Table, cols: tuple[str, str], shard_rows: Sequence[int], what: str) -> tuple[np.ndarray, np.ndarray]:
    for c in cols:
        if c not in table.column_names:
            raise FormatError(f"The index lacks the {c!r} column needed to locate {what} rows.")
        if table.column(c).null_count:  # a null would cast to a garbage offset
            i = int(np.flatnonzero(table.column(c).is_null().to_numpy(zero_copy_only=False))[0])
            raise FormatError(
                f"The index's {c!r} column holds null values (first at row {i}); every row must "
                f"locate its {what} data."
            )
    shard = table.column(cols[0]).to_numpy(zero_copy_only=False).astype(np.int64)
    off = table.column(cols[1]).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.asarray(shard_rows, dtype=np.int64)
    bad = (shard < 0) | (shard >= len(rows))
    if not bad.any():
        bad = (off < 0) | (off >= rows[shard])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FormatError(
            f"Index row {i} points at {what} shard {int(shard[i])} offset {int(off[i])}, outside "
            f"the {len(rows)} shards the metadata describes; the index is corrupt."
        )
    return shard, off


def _build_state(source: ByteSource, table: pa.Table, url: str, verify_checksums: bool) -> _State:
    try:
        return _parse_state(source, table, url, verify_checksums)
    except FormatError as exc:  # every metadata error names the file it came from
        if str(exc).startswith(INDEX_PATH):
            raise
        raise type(exc)(f"{INDEX_PATH}: {exc}") from None


def _parse_state(source: ByteSource, table: pa.Table, url: str, verify_checksums: bool) -> _State:
    meta = decode_schema_metadata(table.schema.metadata, where=INDEX_PATH)
    views, logits = parse_layout(meta)
    if not views:
        raise FormatError("The dataset describes no hidden-state tensors (lmprobe:tensors.hidden_layers).")
    _check_columns(table)
    check_num_prompts(meta, table.num_rows)
    primary = next(iter(views.values()))
    loc = _locations(table, ("shard_index", "row_offset"), primary.shard_rows[: primary.last_token_shards], "hidden")
    logit_loc = None
    if logits is not None:
        cols = ("shard_index_logits", "row_offset_logits")
        if cols[0] not in table.column_names:
            cols = ("shard_index", "row_offset")
        logit_loc = _locations(table, cols, [s["num_prompts"] for s in logits["shards"]], "logits")
    return _State(source, url, table, meta, views, logits, parse_files(meta), loc, logit_loc, verify_checksums)


def open_dataset(
    url: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    source: ByteSource | None = None,
    verify_checksums: bool = False,
) -> Dataset:
    """Open a v2 dataset lazily: only the index is read.

    Parameters
    ----------
    url : str or path
        Local folder or fsspec URL (``memory://``, ``s3://``, ``hf://datasets/...``).
    storage_options : dict, optional
        fsspec options for remote URLs.
    source : ByteSource, optional
        Read through this byte source instead of a plain one (the cache passes its own).
    verify_checksums : bool
        Hash every tensor file against its recorded sha256 before its first use.

    Examples
    --------
    >>> ds = open_dataset("out/ds")              # doctest: +SKIP
    >>> ds.layer(1).shape                        # doctest: +SKIP
    (1000, 384)
    """
    src = source if source is not None else source_for_url(url, storage_options)
    table = read_index(src)
    return Dataset(_build_state(src, table, os.fspath(url), verify_checksums))


class Dataset:
    """A v2 activation dataset (or a selection of its rows), read lazily.

    Create one with :func:`open_dataset`. Selections made with :meth:`select` and
    :meth:`filter` share the parent's open state and read only their rows.
    """

    def __init__(self, state: _State, rows: np.ndarray | None = None) -> None:
        self._s = state
        self._rows = rows  # absolute row numbers, or None for every row

    # -- basic properties --------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._s.url

    @property
    def source(self) -> ByteSource:
        return self._s.source

    def __len__(self) -> int:
        return self._s.table.num_rows if self._rows is None else int(self._rows.size)

    def __repr__(self) -> str:
        i = self.info
        total = self._s.table.num_rows
        rows = f"{len(self)}" if self._rows is None else f"{len(self)} of {total}"
        return (
            f"Dataset({self.url!r}, model={i.model!r}, rows={rows}, layers={_short_list(i.layers)}, "
            f"dim={i.dim}, dtype={i.dtype!r}, views={_short_list(i.views)}"
            + (f", not here: layers {_short_list(i.absent_layers)}" if i.absent_layers else "") + ")"
        )

    def _repr_html_(self) -> str:
        """An HTML table for notebooks: the dataset's info, and the rows of this selection."""
        import html

        from .info import info_rows

        rows = info_rows(self.info, self.url)
        if self._rows is not None:
            rows.insert(1, ("selection", f"{len(self):,} of {self._s.table.num_rows:,} rows"))
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in rows)
        return f"<table><caption style='text-align:left'><b>Dataset</b></caption>{body}</table>"

    @property
    def _abs(self) -> np.ndarray:
        return np.arange(self._s.table.num_rows) if self._rows is None else self._rows

    @property
    def index(self) -> pa.Table:
        """The index rows of this selection as a pyarrow Table."""
        t = self._s.table
        return t if self._rows is None else t.take(pa.array(self._rows))

    @property
    def texts(self) -> list[str]:
        return self.index.column("text").to_pylist()

    @property
    def labels(self) -> np.ndarray | None:
        """The ``label`` column as numpy, or None when the dataset has no labels."""
        if "label" not in self._s.table.column_names:
            return None
        col = self.index.column("label")
        if col.null_count == len(col) and len(col):
            return None
        return self.column("label")

    def column(self, name: str) -> np.ndarray:
        """One index column as a numpy array (strings and lists as object arrays)."""
        if name not in self._s.table.column_names:
            raise InvalidArgumentError(
                f"The dataset has no column {name!r}; its columns are {self._s.table.column_names}."
            )
        return self.index.column(name).to_numpy(zero_copy_only=False)

    @property
    def info(self) -> DatasetInfo:
        if self._s.info is None:
            self._s.info = self._make_info()
        return self._s.info

    def _make_info(self) -> DatasetInfo:
        from .info import build_info

        primary = next(iter(self._s.views.values()))
        # report the stored dtype, read from the first header present (a partial pull may lack
        # some layers); _entry refuses a header that disagrees with actstore's recorded dtype
        true_dtype = primary.dtype
        for layer in self.present_layers(primary.name) if primary.shard_rows else ():
            true_dtype = spec.ST_DTYPES[self._entry(primary, layer, 0).dtype][0]
            break
        try:
            info = build_info(self._s.meta, self._s.views, self._s.logits, self._s.files,
                              self._s.table.num_rows, true_dtype)
        except FormatError as exc:
            raise type(exc)(f"{INDEX_PATH}: {exc}") from None
        present = self.present_layers(primary.name)
        if present != primary.layers:
            info = replace(info, layers=tuple(request(L) for L in present),
                           absent_layers=tuple(request(L) for L in primary.layers if L not in present))
        return info

    def present_layers(self, view: str | None = None) -> tuple[int, ...]:
        """The layers of a view whose shard files are all here (a partial pull holds some).

        Only local copies are checked (one ``stat`` per file); remote datasets hold every
        layer their metadata lists, and a missing file fails its read.
        """
        v = self._view(view)
        if not isinstance(self._s.source, LocalSource):
            return v.layers
        cached = self._s.present.get(v.name)
        if cached is None:
            cached = tuple(L for L in v.layers if all(
                os.path.exists(os.path.join(self._s.source.root, v.path(L, sh)))
                for sh in range(len(v.shard_rows))))
            self._s.present[v.name] = cached
        return cached

    # -- selections --------------------------------------------------------------------
    def _positions(self, rows: Any) -> np.ndarray:
        n = len(self)
        idx = np.asarray(rows)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise InvalidArgumentError(
                    f"A boolean row mask must have length {n}; got shape {idx.shape}."
                )
            idx = np.flatnonzero(idx)
        if idx.ndim == 0:
            idx = idx.reshape(1)
        if idx.size and idx.dtype.kind not in "iu":
            raise InvalidArgumentError(f"Rows must be integers or a boolean mask; got dtype {idx.dtype}.")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = int(idx[(idx < -n) | (idx >= n)][0])
            raise InvalidArgumentError(f"Row {bad} is out of range for a dataset of {n} rows.")
        idx = np.where(idx < 0, idx + n, idx)
        return self._abs[idx]

    def select(self, rows: Any) -> Dataset:
        """A lazy view over some rows (positions or a boolean mask), in the order given."""
        return Dataset(self._s, self._positions(rows))

    def filter(self, condition: Any) -> Dataset:
        """Rows where a boolean mask or a ``pyarrow.compute`` expression on the index holds.

        Examples
        --------
        >>> import pyarrow.compute as pc
        >>> pos = ds.filter(pc.field("label") == 1)      # doctest: +SKIP
        """
        if isinstance(condition, pa.compute.Expression):
            t = self.index.append_column("__pos", pa.array(np.arange(len(self))))
            keep = t.filter(condition).column("__pos").to_numpy()
            return self.select(keep)
        return self.select(np.asarray(condition, dtype=bool))

    # -- tensor access -----------------------------------------------------------------
    def _view(self, view: str | None) -> ViewLayout:
        views = self._s.views
        if view is None:
            return next(iter(views.values()))
        if view not in views:
            raise LayerNotFoundError(f"The dataset has no view {view!r}; it holds views {list(views)}.")
        return views[view]

    def _check_layer(self, v: ViewLayout, layer: int | str) -> int:
        """The stored number of ``layer`` (rules of :mod:`.layersel`: ``-1`` = the deepest block)."""
        if type(layer) is int and layer >= 0 and layer in v.layers:  # the common case, fast
            return layer
        return resolve_layer(layer, v.layers, where=f"view {v.name!r} of the dataset")

    def _entry(self, v: ViewLayout, layer: int, shard: int) -> TensorEntry:
        path = v.path(layer, shard)
        entry = self._header(path)
        key = v.key(layer)
        if key not in entry:
            raise IntegrityError(f"{path}: has no tensor {key!r} (found {sorted(entry)}).")
        e = entry[key]
        want = v.shard_rows[shard]
        if len(e.shape) != 2 or e.shape[0] != want or e.shape[1] != v.dim:
            raise IntegrityError(
                f"{path}: tensor {key!r} has shape {list(e.shape)}; the metadata expects "
                f"[{want}, {v.dim}]."
            )
        if e.dtype not in ("F32", "F16", "BF16"):
            raise IntegrityError(f"{path}: hidden states must be F32, F16 or BF16; found {e.dtype}.")
        if self._s.files and spec.FLOAT_DTYPES.get(v.dtype, ("",))[0] != e.dtype:
            raise IntegrityError(
                f"{path}: header dtype {e.dtype} disagrees with the metadata dtype {v.dtype!r}."
            )
        if shard:  # one dtype per layer: rows of another shard must not be reinterpreted
            first = self._entry(v, layer, 0)
            if first.dtype != e.dtype:
                raise IntegrityError(
                    f"{path}: header dtype {e.dtype} differs from {first.dtype} in shard 0 of "
                    f"layer {layer} ({v.path(layer, 0)}); every shard of a layer must share one "
                    "dtype (spec section 2)."
                )
        return e

    def _header(self, path: str) -> dict[str, TensorEntry]:
        cached = self._s.headers.get(path)
        if cached is not None:
            return cached
        src = self._s.source
        try:
            size = src.size(path)
        except FileNotFoundError:
            raise IntegrityError(f"{path}: shard file listed by the metadata is missing.") from None
        rec = self._s.files.get(path)
        if rec is not None and rec["size"] != size:
            raise IntegrityError(
                f"{path}: file is {size} bytes but the metadata records {rec['size']}; the file "
                "is truncated or was replaced."
            )
        (probe,) = src.read_ranges(path, [(0, min(size, HEADER_PROBE_BYTES))])
        n = header_length(probe, path=path, size=size)
        if 8 + n > len(probe):
            (probe,) = src.read_ranges(path, [(0, 8 + n)])
        entries = parse_header(probe, path=path, size=size)
        if self._s.verify_checksums:
            self._verify_file(path, size)
        self._s.headers[path] = entries
        return entries

    def _verify_file(self, path: str, size: int) -> None:
        rec = self._s.files.get(path)
        if rec is None or path in self._s.verified:
            return
        h = hashlib.sha256()
        step = 16 << 20
        for start in range(0, size, step):
            (blob,) = self._s.source.read_ranges(path, [(start, min(size, start + step))])
            h.update(blob)
        if h.hexdigest() != rec["sha256"]:
            raise IntegrityError(
                f"{path}: sha256 {h.hexdigest()} does not match the recorded {rec['sha256']}; "
                "the file is corrupt. Re-download it or run `actstore verify`."
            )
        self._s.verified.add(path)

    def _out_dtype(self, v: ViewLayout, layer: int, dtype: Any) -> np.dtype:
        if isinstance(dtype, str) and dtype == "bfloat16":
            require("ml_dtypes", "bf16")  # registers numpy's bfloat16 dtype
        if dtype is not None:
            return np.dtype(dtype)
        code = self._entry(v, layer, 0).dtype if v.shard_rows else "F32"
        return np.dtype(np.float16) if code == "F16" else np.dtype(np.float32)

    def _fill(self, v: ViewLayout, layer: int, rows: np.ndarray, out: np.ndarray) -> None:
        shard, off = self._s.loc
        s, o = shard[rows], off[rows]
        order = np.argsort(s, kind="stable")
        bounds = np.flatnonzero(np.diff(s[order])) + 1
        for group in np.split(order, bounds):
            if group.size == 0:
                continue
            sh = int(s[group[0]])
            entry = self._entry(v, layer, sh)
            bits = bf16_bits(out) if entry.dtype == "BF16" else None  # stored bits as they are
            read_rows(self._s.source, v.path(layer, sh), entry, o[group], group,
                      out if bits is None else bits)

    def layer(self, layer: int | str, *, view: str | None = None, dtype: Any = None,
              out: np.ndarray | None = None) -> np.ndarray:
        """All rows of one layer as one ``(n, dim)`` array (the fast path).

        float32 and bfloat16 shards come back as float32 (bfloat16 exactly), float16 as
        float16, unless ``dtype`` asks for another: ``dtype="bfloat16"`` gives numpy bfloat16
        (``ml_dtypes``, as JAX uses), bfloat16 shards then read bit for bit at half the memory.
        Pass ``out`` (C-contiguous, right shape) to read into a preallocated array.
        ``layer`` is a block number (negatives count from the deepest stored block, ``"last"``
        and ``"middle"`` work too) or ``"embeddings"`` (stored as lmprobe's layer ``-1``).

        Examples
        --------
        >>> X = ds.layer(16)                         # doctest: +SKIP
        >>> B = ds.layer(16, dtype="bfloat16")       # doctest: +SKIP
        """
        v = self._view(view)
        layer = self._check_layer(v, layer)
        shape = (len(self), v.dim)
        if out is None:
            out = np.empty(shape, dtype=self._out_dtype(v, layer, dtype))
        elif out.shape != shape or not out.flags.c_contiguous:
            raise InvalidArgumentError(
                f"out must be a C-contiguous array of shape {shape}; got shape {out.shape}."
            )
        self._fill(v, layer, self._abs, out)
        return out

    def get(self, rows: Any, layers: int | str | Sequence[int | str] | None = None, *, view: str | None = None,
            dtype: Any = None) -> np.ndarray:
        """Gather rows across layers: an array of shape ``(len(rows), len(layers), dim)``.

        Only those rows' bytes are read. ``dtype`` as in :meth:`layer` (``"bfloat16"`` keeps
        bfloat16 shards' bits). ``layers`` as in :meth:`layer`, or a list (kept in the order
        given); by default every stored layer in ``info.layers`` order.
        """
        v = self._view(view)
        if layers is None:
            layers = list(v.layers)
        else:  # one meaning of a layer: see .layersel (-1 = deepest block, "embeddings" by name)
            spec = layers if isinstance(layers, (str, int, np.integer)) else list(np.atleast_1d(layers).tolist())
            layers = resolve_layers(spec, v.layers, where=f"view {v.name!r} of the dataset")
        pos = self._positions(rows)
        out = np.empty((pos.size, len(layers), v.dim), dtype=self._out_dtype(v, layers[0], dtype))
        if len(layers) == 1:  # out[:, 0] is contiguous: fill it in place
            self._fill(v, layers[0], pos, out[:, 0])
            return out
        tmp = np.empty((pos.size, v.dim), dtype=out.dtype)
        for j, L in enumerate(layers):
            self._fill(v, L, pos, tmp)
            out[:, j] = tmp
        return out

    def iter_batches(self, layer: int | str, batch_size: int = 1024, *, shuffle: bool = False,
                     seed: int | None = None, view: str | None = None,
                     dtype: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(X, positions)`` batches of one layer, optionally in a seeded shuffled order
        (``dtype`` as in :meth:`layer`)."""
        if batch_size <= 0:
            raise InvalidArgumentError(f"batch_size must be positive; got {batch_size}.")
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        v = self._view(view)
        layer = self._check_layer(v, layer)
        out_dtype = self._out_dtype(v, layer, dtype)
        for start in range(0, len(self), batch_size):
            pos = order[start : start + batch_size]
            X = np.empty((pos.size, v.dim), dtype=out_dtype)
            self._fill(v, layer, self._abs[pos], X)
            yield X, pos

    def torch(self, layer: int | str, *, view: str | None = None, dtype: Any = None) -> Any:
        """One layer as a torch tensor; bfloat16 shards stay bfloat16 unless ``dtype`` is given."""
        torch = require("torch", "extract")
        v = self._view(view)
        layer = self._check_layer(v, layer)
        code = self._entry(v, layer, 0).dtype
        if dtype is None and code == "BF16":
            raw = np.empty((len(self), v.dim), dtype=np.uint16)
            self._fill(v, layer, self._abs, raw)
            return torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16)
        t = torch.from_numpy(self.layer(request(layer), view=view))
        return t if dtype is None else t.to(dtype)

    def tokens(self, row: int, layer: int | str, *, dtype: Any = None) -> np.ndarray:
        """Every token's hidden state of one row, ``(n_tokens, dim)`` (full-sequence datasets)."""
        v = self._view(None)
        if v.storage != spec.STORAGE_FULL:
            raise LayerNotFoundError(
                f"Per-token states need a full-sequence dataset; this one stores {v.storage!r} "
                f"views {list(self._s.views)}."
            )
        layer = self._check_layer(v, layer)
        (r,) = self._positions([row])
        t = self._s.table
        for c in ("token_shard_ids", "token_shard_offsets"):
            if c not in t.column_names:
                raise FormatError(f"The index lacks the {c!r} column needed for per-token states.")
        raw_ids = t.column("token_shard_ids")[int(r)].as_py()
        raw_offs = t.column("token_shard_offsets")[int(r)].as_py()
        if not isinstance(raw_ids, list) or not isinstance(raw_offs, list) or any(
            not isinstance(x, int) or not -(2**62) < x < 2**62 for x in raw_ids + raw_offs
        ):
            raise FormatError(f"Index row {int(r)} has invalid token_shard_ids/token_shard_offsets "
                              "(null, or values out of range).")
        ids = np.asarray(raw_ids, dtype=np.int64)
        offs = np.asarray(raw_offs, dtype=np.int64)
        if ids.size == 0 or ids.shape != offs.shape or ids.min() < 0 or ids.max() >= len(v.shard_rows):
            raise FormatError(f"Index row {int(r)} has invalid token_shard_ids/token_shard_offsets.")
        out = np.empty((ids.size, v.dim), dtype=self._out_dtype(v, layer, dtype))
        for sh in np.unique(ids):
            sel = np.flatnonzero(ids == sh)
            e = self._entry(v, layer, int(sh))
            if offs[sel].max() >= e.shape[0] or offs[sel].min() < 0:
                raise FormatError(f"Index row {int(r)} points past the end of shard {int(sh)}.")
            read_rows(self._s.source, v.path(layer, int(sh)), e, offs[sel], sel, out)
        return out

    def logits_topk(self, rows: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k logits at the last token: ``(values, indices)``, each ``(n, k)``."""
        desc, loc = self._s.logits, self._s.logit_loc
        if desc is None or loc is None:
            raise LayerNotFoundError("The dataset stores no top-k logits (no logits_topk tensor).")
        pos = self._abs if rows is None else self._positions(rows)
        k = desc.get("k")
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise FormatError(f"lmprobe:tensors.logits_topk.k must be a positive integer; got {k!r}.")
        s, o = loc[0][pos], loc[1][pos]
        needed = [int(sh) for sh in np.unique(s)]
        headers: dict[int, Any] = {}
        for sh in needed:  # check every header before allocating (k comes from strangers)
            shard = desc["shards"][sh]
            path = shard["file"]
            headers[sh] = entries = self._header(path)
            for key in (spec.LOGITS_VALUES_KEY, spec.LOGITS_INDICES_KEY):
                e = entries.get(key)
                if e is None or len(e.shape) != 2 or e.shape != (shard["num_prompts"], k):
                    raise IntegrityError(
                        f"{path}: tensor {key!r} missing or not shaped [{shard['num_prompts']}, {k}]."
                    )
                allowed = ("F32",) if key == spec.LOGITS_VALUES_KEY else ("I32", "I64")
                if e.dtype not in allowed:  # another code of the same width would be reinterpreted
                    raise IntegrityError(
                        f"{path}: tensor {key!r} has dtype {e.dtype}; expected {' or '.join(allowed)} "
                        "(spec section 2)."
                    )
        values = np.empty((pos.size, k), dtype=np.float32)
        indices = np.empty((pos.size, k), dtype=np.int64)
        for sh in needed:
            sel = np.flatnonzero(s == sh)
            path = desc["shards"][sh]["file"]
            for key, out in ((spec.LOGITS_VALUES_KEY, values), (spec.LOGITS_INDICES_KEY, indices)):
                e = headers[sh][key]
                tmp = np.empty((sel.size, k), dtype=storage_numpy(e.dtype))
                read_rows(self._s.source, path, e, o[sel], np.arange(sel.size), tmp)
                out[sel] = tmp
        return values, indices

    def verify(self, *, checksums: bool = True) -> Any:
        """Check every file against the metadata; returns a :class:`VerifyReport`."""
        from .verify import verify_dataset

        return verify_dataset(self, checksums=checksums)


def _short_list(items: Sequence[Any], keep: int = 8) -> str:
    """``repr(list(items))``, with the middle elided past ``keep`` items (a readable repr).

    Examples
    --------
    >>> _short_list(["embeddings", *range(32)])
    "['embeddings', 0, 1, 2, ..., 29, 30, 31] (33)"
    >>> _short_list([0, 1])
    '[0, 1]'
    """
    items = list(items)
    if len(items) <= keep:
        return repr(items)
    head, tail = items[: keep // 2], items[-(keep // 2) + 1:]
    inner = ", ".join([*map(repr, head), "...", *map(repr, tail)])
    return f"[{inner}] ({len(items)})"
