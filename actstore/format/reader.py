"""``Dataset``: a lazy reader over a v2 dataset on any fsspec URL.

Opening reads the Parquet index (its footer holds all the metadata) and nothing else.
Tensor bytes are read on demand by exact byte ranges from the shard files, whose headers
the dataset's :class:`~.shards.ShardCatalog` reads, checks against the file size and the
metadata, and caches before use (``verify`` checks files through the same catalog).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike, DTypeLike

from ..errors import (
    DatasetNotFoundError,
    FormatError,
    InvalidArgumentError,
    LayerNotFoundError,
    require,
)
from . import spec
from .codecs import QuantizedRows, Scales, gather_codes, read_coded
from .dtypes import bf16_bits
from .header import TensorEntry
from .info import DatasetInfo
from .layersel import request, resolve_layer, resolve_layers
from .lazy_index import IndexTable, open_sparse
from .metadata import (
    ViewLayout,
    check_num_prompts,
    decode_schema_metadata,
    parse_files,
    parse_layout,
)
from .rows import read_rows, storage_numpy
from .shards import ShardCatalog
from .source import ByteSource, source_for_url
from .token_masks import TokenMasks, build_token_masks, mask_ranges, ranges_to_ids
from .verify import VerifyReport, verify_catalog

if TYPE_CHECKING:
    import torch

    from .tokens import TokenLayout  # imported on first token use (it imports pyarrow.compute)

__all__ = ["Dataset", "RowSelection", "open_dataset", "read_index"]

#: Rows of a dataset or selection: a position, positions (negatives count from the end), or a
#: boolean mask of its length.
RowSelection = ArrayLike

INDEX_PATH = spec.INDEX_PATH  # re-exported: callers and tests import it from here


def read_index(source: ByteSource, path: str = INDEX_PATH) -> pa.Table:
    """Read the Parquet index of a dataset through ``source``.

    Nothing is allocated from a size before it is checked: the file may be at most
    ``spec.MAX_INDEX_BYTES``; its footer may declare at most ``MAX_INDEX_ROWS_PER_BYTE`` rows
    per byte of file and decoded column data at most ``MAX_INDEX_EXPANSION`` times the file
    (a decompression bomb declares far more).
    """
    return read_index_lazy(source, path).table()


def read_index_lazy(source: ByteSource, path: str = INDEX_PATH) -> IndexTable:
    """The index file, checked as :func:`read_index` checks it, read by byte ranges: its
    footer now, each column's chunks when the column is first used
    (:class:`~.lazy_index.IndexTable`)."""
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
    sparse, pf = open_sparse(source, path, size)
    md = pf.metadata
    rows = md.num_rows
    decoded = sum(md.row_group(g).column(c).total_uncompressed_size
                  for g in range(md.num_row_groups) for c in range(md.num_columns))
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
    table = IndexTable(sparse, path=path, parquet=pf)
    # one batch of reads for the columns that locate rows (and tokens, for a compact
    # full-sequence index); the texts, labels and metadata columns are read when first used
    names = table.column_names
    table.prefetch([*spec.LOCATION_COLUMNS, *(spec.TOKEN_LOCATION_COLUMNS if "token_start" in names else ())])
    return table


def _check_columns(table: IndexTable) -> None:
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
    """Everything a dataset and its selections share: layout, index arrays, shard catalog."""

    source: ByteSource
    url: str
    table: IndexTable  # columns decoded on first use
    meta: dict[str, Any]
    views: dict[str, ViewLayout]
    logits: dict[str, Any] | None
    files: dict[str, dict[str, Any]]
    loc: tuple[np.ndarray, np.ndarray]
    logit_loc: tuple[np.ndarray, np.ndarray] | None
    catalog: ShardCatalog
    info: DatasetInfo | None = None
    tokens: TokenLayout | None = None  # full sequence: built and checked on first token use
    masks: TokenMasks | None = None  # token masks (spec 5c): checked on first mask use


def _locations(table: IndexTable, cols: tuple[str, str], shard_rows: Sequence[int], what: str) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for c in cols:
        if c not in table.column_names:
            raise FormatError(f"The index lacks the {c!r} column needed to locate {what} rows.")
        col = table.column(c, keep=False)  # held as numpy below, not twice
        if col.null_count:  # a null would cast to a garbage offset
            i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise FormatError(
                f"The index's {c!r} column holds null values (first at row {i}); every row must "
                f"locate its {what} data."
            )
        out.append(_int_array(col))
        del col
    shard, off = out
    rows = np.asarray(shard_rows, dtype=np.int64)
    # checked a block at a time: temporaries stay small at 10^7 rows (no rows[shard] copy)
    for check in (lambda s, o: (s < 0) | (s >= len(rows)), lambda s, o: (o < 0) | (o >= rows[s])):
        for a in range(0, shard.size, _CHECK_BLOCK):
            bad = check(shard[a : a + _CHECK_BLOCK], off[a : a + _CHECK_BLOCK])
            if bad.any():
                i = a + int(np.flatnonzero(bad)[0])
                raise FormatError(
                    f"Index row {i} points at {what} shard {int(shard[i])} offset {int(off[i])}, "
                    f"outside the {len(rows)} shards the metadata describes; the index is corrupt."
                )
    return shard, off


#: Rows checked at once by :func:`_locations`.
_CHECK_BLOCK = 1 << 18


def _int_array(col: pa.ChunkedArray) -> np.ndarray:
    """An integer column without nulls as one numpy array of its own integer type (int32 as
    written: 4 bytes a row, not 8, at 10^7 rows), a zero-copy view when it is one chunk.

    Callers index it with row numbers and widen the rows they take (``read_rows`` computes
    byte offsets in int64), so no arithmetic is ever done in the stored width.
    """
    views = [_int_view(c) for c in col.chunks]
    if len(views) == 1:
        return views[0]
    return np.concatenate(views) if views else np.empty(0, dtype=np.int64)


def _int_view(chunk: pa.Array) -> np.ndarray:
    """A numpy view of an integer Arrow array without nulls (``to_numpy`` imports pandas,
    half a second of a cold open)."""
    t = chunk.type
    if not pa.types.is_integer(t) or chunk.null_count:
        return chunk.to_numpy(zero_copy_only=False)
    dt = np.dtype(f"={'i' if pa.types.is_signed_integer(t) else 'u'}{t.bit_width // 8}")
    return np.frombuffer(chunk.buffers()[1], dtype=dt, count=len(chunk), offset=chunk.offset * dt.itemsize)


def _build_state(source: ByteSource, table: IndexTable, url: str, verify_checksums: bool) -> _State:
    try:
        return _parse_state(source, table, url, verify_checksums)
    except FormatError as exc:  # every metadata error names the file it came from
        if str(exc).startswith(INDEX_PATH):
            raise
        raise type(exc)(f"{INDEX_PATH}: {exc}") from None


def _parse_state(source: ByteSource, table: IndexTable, url: str, verify_checksums: bool) -> _State:
    meta = decode_schema_metadata(table.schema.metadata, where=INDEX_PATH)
    views, logits = parse_layout(meta)
    if not views:
        raise FormatError("The dataset describes no hidden-state tensors (lmprobe:tensors.hidden_layers).")
    _check_columns(table)
    check_num_prompts(meta, table.num_rows)
    if all(c in table.column_names for c in spec.TOKEN_COMPACT_COLUMNS):
        from .tokens import check_compact_declared

        check_compact_declared(table, meta)
    primary = next(iter(views.values()))
    loc = _locations(table, ("shard_index", "row_offset"), primary.shard_rows[: primary.last_token_shards], "hidden")
    logit_loc = None
    if logits is not None:
        cols = ("shard_index_logits", "row_offset_logits")
        if cols[0] not in table.column_names:
            cols = ("shard_index", "row_offset")
        logit_loc = _locations(table, cols, [s["num_prompts"] for s in logits["shards"]], "logits")
    files = parse_files(meta)
    catalog = ShardCatalog(source, views, logits, files, verify_checksums=verify_checksums)
    return _State(source, url, table, meta, views, logits, files, loc, logit_loc, catalog)


def open_dataset(
    url: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    source: ByteSource | None = None,
    verify_checksums: bool = False,
    index: pa.Table | IndexTable | None = None,
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
    index : pyarrow.Table or IndexTable, optional
        The index, already opened through ``source`` with :func:`read_index_lazy` (the cache
        opens it to learn the files' checksums) or read with :func:`read_index`: it is used as
        it is, not read again.

    Examples
    --------
    >>> ds = open_dataset("out/ds")              # doctest: +SKIP
    >>> ds.layer(1).shape                        # doctest: +SKIP
    (1000, 384)
    """
    src = source if source is not None else source_for_url(url, storage_options)
    table = (read_index_lazy(src) if index is None
             else index if isinstance(index, IndexTable) else IndexTable.of(index))
    return Dataset(_build_state(src, table, os.fspath(url), verify_checksums))


class Dataset:
    """A v2 activation dataset (or a selection of its rows), read lazily.

    Create one with :func:`open_dataset`. Selections made with :meth:`select` and
    :meth:`filter` share the parent's open state and read only their rows.

    Examples
    --------
    >>> import actstore
    >>> ds = actstore.open_dataset("acts/minilm")            # doctest: +SKIP
    >>> X = ds.layer(3)                   # (rows, dim) float32, one read      # doctest: +SKIP
    >>> rows = ds.get([0, 5, 9], layers=[1, 3])               # (3, 2, dim)     # doctest: +SKIP
    >>> train = ds.select(range(100))      # a lazy row view                    # doctest: +SKIP
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
        """The index rows of this selection as a pyarrow Table (every column decoded)."""
        t = self._s.table.table()
        return t if self._rows is None else t.take(pa.array(self._rows))

    def _index_column(self, name: str) -> pa.ChunkedArray | pa.Array:
        """One index column of this selection, decoding only that column."""
        if self._rows is None:
            return self._s.table.column(name)
        return self._s.table.rows(name, self._rows)

    @property
    def texts(self) -> list[str]:
        return self._index_column("text").to_pylist()

    @property
    def labels(self) -> np.ndarray | None:
        """The ``label`` column as numpy, or None when the dataset has no labels."""
        if "label" not in self._s.table.column_names:
            return None
        col = self._index_column("label")
        if col.null_count == len(col) and len(col):
            return None
        return self.column("label")

    def column(self, name: str) -> np.ndarray:
        """One index column as a numpy array (strings and lists as object arrays)."""
        if name not in self._s.table.column_names:
            raise InvalidArgumentError(
                f"The dataset has no column {name!r}; its columns are {self._s.table.column_names}."
            )
        return self._index_column(name).to_numpy(zero_copy_only=False)

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
            true_dtype = spec.ST_DTYPES[self._entry(primary, layer, 0).dtype].name
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
        return self._s.catalog.present_layers(self._view(view))

    # -- selections --------------------------------------------------------------------
    def _positions(self, rows: RowSelection) -> np.ndarray:
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

    def _position(self, row: int) -> int:
        """The absolute row of one position of this selection (the scalar fast path)."""
        n = len(self)
        if isinstance(row, (int, np.integer)) and not isinstance(row, bool) and -n <= row < n:
            r = int(row) + n if row < 0 else int(row)
            return r if self._rows is None else int(self._rows[r])
        return int(self._positions([row])[0])

    def select(self, rows: RowSelection) -> Dataset:
        """A lazy view over some rows (positions or a boolean mask), in the order given."""
        return Dataset(self._s, self._positions(rows))

    def filter(self, condition: pa.compute.Expression | ArrayLike) -> Dataset:
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
        return self._s.catalog.entry(v, layer, shard)

    def _first_shard(self, rows: np.ndarray) -> int:
        """The shard holding the first of ``rows`` (absolute row numbers), or 0 for none."""
        return int(self._s.loc[0][rows[0]]) if rows.size else 0

    def _out_dtype(self, v: ViewLayout, layer: int, dtype: DTypeLike | None, shard: int = 0) -> np.dtype:
        """The output dtype: ``dtype`` if given, else from the stored dtype, read from the
        header of ``shard`` (one the rows live in: no request for a shard not read)."""
        if isinstance(dtype, str) and dtype == "bfloat16":
            require("ml_dtypes", "bf16")  # registers numpy's bfloat16 dtype
        if dtype is not None:
            return np.dtype(dtype)
        code = self._entry(v, layer, shard).dtype if v.shard_rows else "F32"
        return np.dtype(np.float16) if code == "F16" else np.dtype(np.float32)

    def _fill(self, v: ViewLayout, layer: int, rows: np.ndarray, out: np.ndarray) -> None:
        shard, off = self._s.loc
        self._fill_at(v, layer, shard[rows], off[rows], out)

    def _fill_at(self, v: ViewLayout, layer: int, s: np.ndarray, o: np.ndarray, out: np.ndarray,
                 dest: np.ndarray | None = None, *, grouped: bool = False) -> None:
        """Fill ``out[dest[i]]`` (``out[i]`` by default) with row ``o[i]`` of shard ``s[i]``:
        grouped by shard, each group one coalesced read of its runs of adjacent rows
        (:func:`~.rows.read_rows`). ``grouped``: ``s`` is already sorted (no sort here)."""
        order = None if grouped else np.argsort(s, kind="stable")
        ss = s if order is None else s[order]
        cuts = (np.flatnonzero(ss[1:] != ss[:-1]) + 1).tolist()
        for a, b in zip([0, *cuts], [*cuts, ss.size]):
            if b <= a:
                continue
            where: Any = slice(a, b) if order is None else order[a:b]
            group = (np.arange(a, b) if order is None else where) if dest is None else dest[where]
            sh = int(ss[a])
            entry = self._entry(v, layer, sh)
            if v.codec is not None:  # int8/fp8: dequantised a chunk at a time (codecs)
                read_coded(self._s.source, v.path(layer, sh), entry, self._scales(v, layer, sh),
                           v.codec, o[where], group, out)
                continue
            bits = bf16_bits(out) if entry.dtype == "BF16" else None  # stored bits as they are
            read_rows(self._s.source, v.path(layer, sh), entry, o[where], group,
                      out if bits is None else bits)

    def layer(self, layer: int | str, *, view: str | None = None, dtype: DTypeLike | None = None,
              out: np.ndarray | None = None) -> np.ndarray:
        """All rows of one layer as one ``(n, dim)`` array (the fast path).

        float32 and bfloat16 shards come back as float32 (bfloat16 exactly), float16 as
        float16, unless ``dtype`` asks for another: ``dtype="bfloat16"`` gives numpy bfloat16
        (``ml_dtypes``, as JAX uses), bfloat16 shards then read bit for bit at half the memory.
        Pass ``out`` (C-contiguous, right shape) to read into a preallocated array.
        int8 and fp8_e4m3 datasets (spec section 2b) are dequantised to float32 (or ``dtype``)
        a cache-sized chunk at a time; :meth:`codes` gives their stored codes and scales.
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
            out = np.empty(shape, dtype=self._out_dtype(v, layer, dtype, self._first_shard(self._abs)))
        elif out.shape != shape or not out.flags.c_contiguous:
            raise InvalidArgumentError(
                f"out must be a C-contiguous array of shape {shape}; got shape {out.shape}."
            )
        self._fill(v, layer, self._abs, out)
        return out

    def get(self, rows: RowSelection, layers: int | str | Sequence[int | str] | None = None, *,
            view: str | None = None, dtype: DTypeLike | None = None) -> np.ndarray:
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
        out = np.empty((pos.size, len(layers), v.dim),
                       dtype=self._out_dtype(v, layers[0], dtype, self._first_shard(pos)))
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
                     dtype: DTypeLike | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(X, positions)`` batches of one layer, optionally in a seeded shuffled order
        (``dtype`` as in :meth:`layer`)."""
        if batch_size <= 0:
            raise InvalidArgumentError(f"batch_size must be positive; got {batch_size}.")
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        v = self._view(view)
        layer = self._check_layer(v, layer)
        out_dtype = self._out_dtype(v, layer, dtype, self._first_shard(self._abs))
        for start in range(0, len(self), batch_size):
            pos = order[start : start + batch_size]
            X = np.empty((pos.size, v.dim), dtype=out_dtype)
            self._fill(v, layer, self._abs[pos], X)
            yield X, pos

    def torch(self, layer: int | str, *, view: str | None = None,
              dtype: torch.dtype | None = None) -> torch.Tensor:
        """One layer as a torch tensor; bfloat16 shards stay bfloat16 unless ``dtype`` is given."""
        torch = require("torch", "extract")
        v = self._view(view)
        layer = self._check_layer(v, layer)
        code = self._entry(v, layer, self._first_shard(self._abs)).dtype
        if dtype is None and code == "BF16":
            raw = np.empty((len(self), v.dim), dtype=np.uint16)
            self._fill(v, layer, self._abs, raw)
            return torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16)
        t = torch.from_numpy(self.layer(request(layer), view=view))
        return t if dtype is None else t.to(dtype)

    # -- tokens of full-sequence datasets (spec section 5b) -----------------------------
    def _full_view(self) -> ViewLayout:
        v = self._view(None)
        if v.storage != spec.STORAGE_FULL:
            raise LayerNotFoundError(
                f"Per-token states need a full-sequence dataset; this one stores {v.storage!r} "
                f"views {list(self._s.views)}."
            )
        return v

    def _token_layout(self) -> TokenLayout:
        """The checked token layout (built from O(rows) columns on first use, then shared)."""
        v = self._full_view()
        if self._s.tokens is None:
            from .tokens import build_token_layout

            self._s.tokens = build_token_layout(self._s.table, v, self._s.loc)
        return self._s.tokens

    @property
    def num_tokens_total(self) -> int:
        """Tokens stored for the rows of this selection (full-sequence datasets)."""
        t = self._token_layout()
        return t.total if self._rows is None else int(t.counts[self._rows].sum())

    def token_range(self, row: int) -> tuple[int, int]:
        """``(start, stop)``: the global token ids of one row's tokens (``row`` is a position
        in this selection; ids are the dataset's, as :meth:`get_tokens` takes them).

        Examples
        --------
        >>> a, b = ds.token_range(3)                      # doctest: +SKIP
        >>> ds.get_tokens(range(a, b), layers=[12])[:, 0]   # == ds.tokens(3, 12)  # doctest: +SKIP
        """
        t = self._token_layout()
        (r,) = self._positions([row])
        return int(t.cum[r]), int(t.cum[r + 1])

    def token_rows(self, token_ids: ArrayLike) -> np.ndarray:
        """The dataset row of each global token id (a binary search on O(rows) counts)."""
        t = self._token_layout()
        return t.row_of(self._token_ids(t, token_ids))

    def _token_ids(self, t: TokenLayout, token_ids: ArrayLike) -> np.ndarray:
        ids = np.asarray(token_ids)
        if ids.ndim == 0:
            ids = ids.reshape(1)
        if ids.size and ids.dtype.kind not in "iu":
            raise InvalidArgumentError(f"Token ids must be integers; got dtype {ids.dtype}.")
        ids = ids.astype(np.int64, copy=False).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= t.total):
            bad = int(ids[(ids < 0) | (ids >= t.total)][0])
            raise InvalidArgumentError(
                f"Token id {bad} is out of range: the dataset holds {t.total} tokens (ids 0.."
                f"{t.total - 1}; see token_range)."
            )
        return ids

    def get_tokens(self, token_ids: ArrayLike, layers: int | str | Sequence[int | str] | None = None,
                   *, dtype: DTypeLike | None = None) -> np.ndarray:
        """Gather tokens by global id across layers: ``(len(token_ids), len(layers), dim)``.

        Ids are the dataset's (``token_range`` gives a row's); reads are grouped by shard and
        runs of adjacent stored rows become one read, as in :meth:`get`. ``layers`` and
        ``dtype`` as in :meth:`get`.
        """
        t = self._token_layout()
        v = self._view(None)
        if layers is None:
            want = list(v.layers)
        else:
            sel = layers if isinstance(layers, (str, int, np.integer)) else list(np.atleast_1d(layers).tolist())
            want = resolve_layers(sel, v.layers, where=f"view {v.name!r} of the dataset")
        ids = self._token_ids(t, token_ids)
        # located in storage order (one sort of the ids, see locate_sorted), each shard's
        # rows one coalesced read, written back to the caller's order
        s, o, where = t.locate_sorted(ids)
        first = int(s[0]) if s.size else 0
        out = np.empty((ids.size, len(want), v.dim), dtype=self._out_dtype(v, want[0], dtype, first))
        if len(want) == 1:
            self._fill_at(v, want[0], s, o, out[:, 0], where, grouped=True)
            return out
        tmp = np.empty((ids.size, v.dim), dtype=out.dtype)
        for j, L in enumerate(want):
            self._fill_at(v, L, s, o, tmp, where, grouped=True)
            out[:, j] = tmp
        return out

    def tokens(self, row: int, layer: int | str, *, dtype: DTypeLike | None = None) -> np.ndarray:
        """Every token's hidden state of one row, ``(n_tokens, dim)`` (full-sequence datasets).

        Either token layout (compact, or lmprobe's per-token lists) reads the same; a row's
        tokens ``0..N-2`` are one contiguous read.
        """
        v = self._full_view()
        layer = self._check_layer(v, layer)
        t = self._token_layout()
        r = self._position(row)
        for sh in t.row_shards(r):  # headers first: the file must hold the rows it claims
            self._entry(v, layer, sh)
        lo, hi = int(t.cum[r]), int(t.cum[r + 1])
        if t.rest_shard is None or t.rest_start is None:  # lmprobe's per-token lists
            s, o = t.locate(np.arange(lo, hi, dtype=np.int64))
            out = np.empty((s.size, v.dim), dtype=self._out_dtype(v, layer, dtype, int(s[0])))
            self._fill_at(v, layer, s, o, out)
            return out
        n, last = hi - lo, int(t.last_shard[r])
        out = np.empty((n, v.dim), dtype=self._out_dtype(v, layer, dtype, last))
        if n > 1:  # tokens 0..N-2: one contiguous range of one shard, one read
            start = int(t.rest_start[r])
            self._fill_at(v, layer, np.full(n - 1, int(t.rest_shard[r])),
                          np.arange(start, start + n - 1, dtype=np.int64), out[: n - 1], grouped=True)
        self._fill_at(v, layer, np.array([last]), t.last_off[r : r + 1], out[n - 1 :], grouped=True)
        return out

    def _token_masks(self) -> TokenMasks:
        """The checked token masks (spec section 5c), decoded on first use, then shared."""
        t = self._token_layout()
        if self._s.masks is None:
            self._s.masks = build_token_masks(self._s.table, self._s.meta, t.counts)
        return self._s.masks

    def _mask_ranges(self, mask: str | None, rows: RowSelection | None,
                     skip_first_token: bool | str) -> tuple[TokenLayout, np.ndarray, np.ndarray, np.ndarray]:
        t = self._token_layout()
        pos = self._abs if rows is None else self._positions(rows)
        # the mask columns are decoded (and checked) only for a mask that needs them
        need = mask not in (None, "first") or (isinstance(skip_first_token, str) and skip_first_token == "special")
        masks = self._token_masks() if need else TokenMasks(None, None)
        lo, hi = mask_ranges(masks, t.counts, pos, mask, skip_first_token)
        return t, pos, lo, hi

    def token_ids(self, mask: str | None = None, rows: RowSelection | None = None, *,
                  skip_first_token: bool | str = False) -> np.ndarray:
        """Global ids (as :meth:`get_tokens` takes them) of the tokens a mask selects.

        Parameters
        ----------
        mask : {"prompt", "continuation", "first", "special"}, optional
            Token masks of spec section 5c: the prompt's tokens, the generated continuation's,
            each row's token 0, or token 0 where it is a special token the tokenizer added
            (BOS, CLS). None: every token. ``"prompt"``/``"continuation"`` need the
            ``prompt_tokens`` column, ``"special"`` the ``special_first_token`` one.
        rows : positions, optional
            Rows of this selection (default: all), in the order given.
        skip_first_token : bool or "special"
            Also leave out token 0 of every row (True) or where it is special.

        Examples
        --------
        >>> ids = ds.token_ids("continuation")                    # doctest: +SKIP
        >>> X = ds.get_tokens(ids, layers=[12])                   # doctest: +SKIP
        """
        t, pos, lo, hi = self._mask_ranges(mask, rows, skip_first_token)
        return ranges_to_ids(t.cum[pos], lo, hi)

    def token_mask(self, mask: str, rows: RowSelection | None = None) -> np.ndarray:
        """Per-token booleans of a mask (:meth:`token_ids`) over the tokens of ``rows``
        (default: every row of this selection), rows in order, each row's tokens in order.

        Examples
        --------
        >>> ds.token_mask("prompt", rows=[0])        # doctest: +SKIP
        array([ True,  True,  True, False, False])
        """
        t, pos, lo, hi = self._mask_ranges(mask, rows, False)
        n = t.counts[pos]
        out = np.zeros(int(n.sum()), dtype=bool)
        out[ranges_to_ids(np.concatenate(([0], np.cumsum(n)[:-1])).astype(np.int64), lo, hi)] = True
        return out

    def _scales(self, v: ViewLayout, layer: int, shard: int) -> Scales:
        """The checked scales (and offsets) of one codec shard file (the catalog keeps them)."""
        return self._s.catalog.scales(v, layer, shard)

    def codes(self, layer: int | str, rows: RowSelection | None = None, *,
              view: str | None = None) -> QuantizedRows:
        """The stored codes and scales of an int8/fp8 dataset, not dequantised.

        For callers that dequantise themselves (on a GPU, at a quarter of float32's bytes);
        see :class:`~actstore.format.codecs.QuantizedRows` for the formula.
        ``rows`` as in :meth:`get` (default: every row of this selection).
        """
        v = self._view(view)
        layer = self._check_layer(v, layer)
        if v.codec is None:
            raise InvalidArgumentError(
                f"codes() needs an int8 or fp8_e4m3 dataset; view {v.name!r} stores {v.dtype}. "
                "Use layer() for float datasets."
            )
        pos = self._abs if rows is None else self._positions(rows)
        shard, off = self._s.loc

        def read(sh: int, offs: np.ndarray, dest: np.ndarray, out: np.ndarray) -> None:
            read_rows(self._s.source, v.path(layer, sh), self._entry(v, layer, sh), offs, dest, out)

        return gather_codes(v.codec, v.dim, shard[pos], off[pos], read,
                            lambda sh: self._scales(v, layer, sh))

    def logits_topk(self, rows: RowSelection | None = None) -> tuple[np.ndarray, np.ndarray]:
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
        # check every header before allocating (k comes from strangers)
        headers = {sh: self._s.catalog.logits_entries(sh) for sh in needed}
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

    def verify(self, *, checksums: bool = True) -> VerifyReport:
        """Check every file against the metadata; returns a :class:`~.verify.VerifyReport`."""
        return verify_catalog(self._s.catalog, self.url, checksums=checksums)


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
