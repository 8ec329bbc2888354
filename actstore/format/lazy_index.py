"""The index, read by byte ranges and decoded one column at a time on first use (issue #14).

Opening a dataset needs only its location columns; texts, labels and metadata columns of a
large index (10^7 rows) are most of its bytes and of its decoded size. :class:`IndexTable`
reads the Parquet footer (one ranged read at the end of the file), then, for each column it
is asked for, exactly the byte ranges of that column's chunks (one concurrent batch of ranged
reads through the dataset's :class:`~.source.ByteSource`), and decodes it (Parquet column
projection). A remote open therefore transfers the footer and the location columns' chunks,
never the texts; ``table()`` still gives the whole :class:`pyarrow.Table` for callers that
need it.

The fetched bytes are copied into one Arrow buffer the size of the file (:class:`SparseFile`):
its pages are only committed where bytes were written, so an untouched text column costs no
memory, and pyarrow reads it through a native ``BufferReader`` (no Python file object, which
pyarrow's threads could release at interpreter exit: see :mod:`.arrowio`). A range is read
only once; every column read first fetches every byte its chunks span (from the footer's
offsets, checked against the file size), so pyarrow never parses bytes that were not fetched.

Every read goes through the dataset's source, so the index is read at the version pinned at
open (S3 ``If-Match``, HTTP validators, the Hub commit; locally its inode and mtime): an index
replaced while the dataset is open raises :class:`~actstore.errors.DatasetChangedError` on
the next lazy read instead of mixing two versions.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import FormatError, OfflineError

__all__ = ["IndexTable", "SparseFile", "TAIL_BYTES"]

#: The first read of an index: this many bytes at its end (the footer of a 10^6-row index
#: fits); a longer footer costs a second read of exactly the rest.
TAIL_BYTES = 32 << 10
#: Bytes added after each column chunk's declared end (clipped to the file): Parquet readers
#: read that much past it for files of old writers whose sizes omit a dictionary header.
_CHUNK_PAD = 100
#: Chunks closer than this are fetched in one read (the gap is read too): the small columns
#: between location columns (an all-null label) cost less than a request.
_MERGE_GAP = 4 << 10


def _merge(spans: Sequence[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1] + gap:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def _allocate(size: int) -> pa.Buffer:
    """An Arrow-owned buffer whose pages are committed only where they are written.

    From the system allocator (``malloc``, which maps a large block lazily, page by page):
    Arrow's default mimalloc pool commits much more than the pages written (12 MB of RSS for
    60 KB written into a 64 MB buffer, measured), which would cost an open of a 10^7-row
    index most of the index's size in memory.
    """
    return pa.allocate_buffer(size, memory_pool=pa.system_memory_pool())


class SparseFile:
    """A file's bytes, fetched by ranges on demand into one Arrow buffer of the file's size.

    Parameters
    ----------
    source : ByteSource
        The dataset's byte source (its pins hold the version read).
    path : str
        The file, relative to the dataset root.
    size : int
        The file's size, already checked by the caller.

    Examples
    --------
    >>> import os, tempfile
    >>> from actstore.format.source import LocalSource
    >>> d = tempfile.mkdtemp(); open(os.path.join(d, "f"), "wb").write(b"0123456789")
    10
    >>> f = SparseFile(LocalSource(d), "f", 10)
    >>> f.ensure([(2, 5)]); bytes(f.buffer[2:5])
    b'234'
    >>> f.fetched
    3
    """

    def __init__(self, source: Any, path: str, size: int) -> None:
        self.source, self.path, self.size = source, path, size
        self.buffer = _allocate(size)
        self.spans: list[tuple[int, int]] = []  # fetched, merged, sorted
        #: Bytes fetched so far (what an open costs the network).
        self.fetched = 0
        self._lock = threading.Lock()

    def ensure(self, ranges: Sequence[tuple[int, int]], *, gap: int = 0) -> None:
        """Fetch whatever of ``ranges`` is not here yet, in one call to the source.

        A span is recorded only once its bytes are in the buffer (under a lock: threads
        reading the same column fetch it once).
        """
        with self._lock:
            want = []
            for s, e in _merge([(max(0, s), min(self.size, e)) for s, e in ranges if e > s], gap):
                want.extend(self._missing(s, e))
            if not want:
                return
            view = memoryview(self.buffer).cast("B")
            self.source.readinto(self.path, [(s, view[s:e]) for s, e in want])
            self.fetched += sum(e - s for s, e in want)
            self.spans = _merge(self.spans + want, 0)

    def _missing(self, s: int, e: int) -> list[tuple[int, int]]:
        out, pos = [], s
        for a, b in self.spans:
            if b <= pos:
                continue
            if a >= e:
                break
            if a > pos:
                out.append((pos, a))
            pos = max(pos, b)
            if pos >= e:
                break
        if pos < e:
            out.append((pos, e))
        return out

    def covers(self, s: int, e: int) -> bool:
        """Whether ``[s, e)`` has been fetched."""
        return not self._missing(s, e)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as the fetched spans' bytes (a DataLoader worker reads the rest anew)."""
        view = memoryview(self.buffer).cast("B")
        return {"source": self.source, "path": self.path, "size": self.size,
                "fetched": self.fetched, "blobs": [(s, bytes(view[s:e])) for s, e in self.spans]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.source, self.path, self.size = state["source"], state["path"], state["size"]
        self.fetched = state["fetched"]
        self.buffer = _allocate(self.size)
        view = memoryview(self.buffer).cast("B")
        for s, blob in state["blobs"]:
            view[s : s + len(blob)] = blob
        self.spans = [(s, s + len(b)) for s, b in state["blobs"]]
        self._lock = threading.Lock()


def open_sparse(source: Any, path: str, size: int) -> tuple[SparseFile, pq.ParquetFile]:
    """Fetch the footer of a Parquet file (the tail, then the rest if longer) and parse it.

    Raises
    ------
    FormatError
        The file is not Parquet (no ``PAR1`` tail, a footer longer than the file, a footer
        pyarrow cannot parse).
    """
    f = SparseFile(source, path, size)
    if size < 12:
        raise FormatError(f"{path}: the index is not a readable Parquet file ({size} bytes, "
                          "shorter than a Parquet file's header and footer).")
    f.ensure([(size - min(size, TAIL_BYTES), size)])
    tail = bytes(memoryview(f.buffer)[size - 8 : size])
    if tail[4:] != b"PAR1":
        raise FormatError(f"{path}: the index is not a readable Parquet file (no PAR1 footer).")
    footer = int.from_bytes(tail[:4], "little")
    if footer + 12 > size:
        raise FormatError(f"{path}: the index footer declares {footer} bytes in a {size}-byte "
                          "file; it is not a readable Parquet file.")
    f.ensure([(size - 8 - footer, size)])
    try:
        pf = pq.ParquetFile(pa.BufferReader(f.buffer))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FormatError(f"{path}: the index is not a readable Parquet file ({exc}).") from None
    return f, pf


def _leaves(t: pa.DataType) -> int:
    """Parquet leaf columns of an Arrow type (one per primitive inside lists, structs, maps)."""
    if pa.types.is_map(t):
        return _leaves(t.key_type) + _leaves(t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _leaves(t.value_type)
    if pa.types.is_struct(t):
        return sum(_leaves(t.field(i).type) for i in range(t.num_fields))
    return 1


def _leaf_owners(schema: pa.Schema) -> list[str]:
    """The top-level column of each Parquet leaf column, in file order (names may hold dots)."""
    return [f.name for f in schema for _ in range(_leaves(f.type))]


class IndexTable:
    """A Parquet index read lazily, column by column (the subset of ``pa.Table`` the reader uses).

    Parameters
    ----------
    file : SparseFile or None
        The index file, its footer fetched and checked by the caller.
    parquet : pyarrow.parquet.ParquetFile, optional
        ``file`` already opened (by :func:`open_sparse`), so its footer is not parsed again.
    table : pyarrow.Table, optional
        An index already decoded (it is used as it is).
    path : str
        The index's path, for error messages.

    Examples
    --------
    >>> t = IndexTable.of(pa.table({"text": ["a", "b"]}))
    >>> t.num_rows, t.column_names
    (2, ['text'])
    """

    def __init__(self, file: SparseFile | None, *, table: pa.Table | None = None,
                 path: str = "index", parquet: pq.ParquetFile | None = None) -> None:
        if (file is None) == (table is None):
            raise ValueError("IndexTable needs exactly one of a Parquet file or a table.")
        self._sparse, self._full, self._path = file, table, path
        self._pq: pq.ParquetFile | None = parquet
        self._cols: dict[str, pa.ChunkedArray] = {}
        self._decoded: set[str] = set()  # every column decoded whole so far, kept or not
        if table is not None:
            self.schema: pa.Schema = table.schema
            self.num_rows: int = table.num_rows
        else:
            pf = self._parquet()
            self.schema = pf.schema_arrow
            self.num_rows = pf.metadata.num_rows

    def __getstate__(self) -> dict[str, object]:
        """Pickled (spawned DataLoader workers) without pyarrow's file object, which does not
        pickle: the fetched bytes and the columns decoded so far travel."""
        state = dict(self.__dict__)
        state["_pq"] = None
        if self._full is not None:  # everything is decoded: the file's bytes are not needed
            state["_sparse"] = None
        return state

    @classmethod
    def of(cls, table: pa.Table) -> IndexTable:
        """Wrap an index that is already decoded."""
        return cls(None, table=table)

    @property
    def fetched(self) -> int:
        """Bytes of the index file read so far (the whole file for an index handed in decoded)."""
        return self._sparse.fetched if self._sparse is not None else -1

    @property
    def decoded(self) -> set[str]:
        """Names of the columns decoded (in full) so far."""
        return set(self.schema.names) if self._full is not None else set(self._decoded)

    @property
    def column_names(self) -> list[str]:
        return list(self.schema.names)

    def _parquet(self) -> pq.ParquetFile:
        if self._pq is None:
            assert self._sparse is not None
            try:
                self._pq = pq.ParquetFile(pa.BufferReader(self._sparse.buffer))
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise FormatError(f"{self._path}: the index is not a readable Parquet file ({exc}).") from None
        return self._pq

    def column(self, name: str, *, keep: bool = True) -> pa.ChunkedArray:
        """One column, decoded on first use (and kept, unless ``keep=False``)."""
        if self._full is not None:
            return self._full.column(name)
        col = self._cols.get(name)
        if col is None:
            col = self._read([name]).column(name)
            self._decoded.add(name)
            if keep:
                self._cols[name] = col
        return col

    def prefetch(self, names: Sequence[str]) -> None:
        """Fetch the chunks of several columns in one batch of reads (nothing is decoded)."""
        if self._sparse is not None and self._full is None:
            wanted = [n for n in names if n in self.schema.names and n not in self._cols]
            if wanted:
                self._sparse.ensure(self._chunk_ranges(wanted, None), gap=_MERGE_GAP)

    def rows(self, name: str, rows: np.ndarray) -> pa.Array | pa.ChunkedArray:
        """``column(name).take(rows)``, reading only the row groups that hold ``rows`` when the
        column is not decoded yet (texts of a few rows of a remote index)."""
        if self._full is not None or name in self._cols or self._sparse is None:
            return self.column(name).take(pa.array(rows))
        md = self._parquet().metadata
        if md.num_row_groups <= 1 or rows.size == 0:
            return self.column(name).take(pa.array(rows))
        starts = np.cumsum([0] + [md.row_group(g).num_rows for g in range(md.num_row_groups)])
        if int(starts[-1]) != self.num_rows:
            raise FormatError(f"{self._path}: the index's row groups hold {int(starts[-1])} rows but "
                              f"its footer declares {self.num_rows}; the index is corrupt.")
        groups = np.unique(np.searchsorted(starts, rows, side="right") - 1)
        if groups.size == md.num_row_groups:
            return self.column(name).take(pa.array(rows))
        t = self._read([name], [int(g) for g in groups])
        # position of each row within the concatenation of the groups read
        base = np.cumsum(np.concatenate(([0], starts[groups + 1] - starts[groups])))
        g_of = np.searchsorted(groups, np.searchsorted(starts, rows, side="right") - 1)
        return t.column(name).take(pa.array(rows - starts[groups[g_of]] + base[g_of]))

    def table(self) -> pa.Table:
        """Every column (decoded once, then kept)."""
        if self._full is None:
            self._full = self._read(None)
            self._cols.clear()
        return self._full

    def _chunk_ranges(self, names: Sequence[str] | None, groups: Sequence[int] | None) -> list[tuple[int, int]]:
        """The byte ranges of the chunks of ``names`` (every column for None) in ``groups``,
        each checked to lie inside the file."""
        assert self._sparse is not None
        md, size = self._parquet().metadata, self._sparse.size
        top = _leaf_owners(self.schema)
        if len(top) != md.num_columns:  # not a layout this reader maps: fetch every byte
            return [(0, size)]
        cols = [i for i, t in enumerate(top) if names is None or t in names]
        out = []
        for g in range(md.num_row_groups) if groups is None else groups:
            rg = md.row_group(g)
            for i in cols:
                cc = rg.column(i)
                start = cc.data_page_offset
                d = cc.dictionary_page_offset
                if cc.has_dictionary_page and d is not None and 0 < d < start:
                    start = d
                end = start + cc.total_compressed_size
                if not 0 <= start <= end <= size:
                    raise FormatError(
                        f"{self._path}: row group {g} column {top[i]!r} declares bytes {start}..{end} "
                        f"of a {size}-byte file; the index is corrupt."
                    )
                out.append((start, min(size, end + _CHUNK_PAD)))
        return out

    def _read(self, columns: list[str] | None, groups: list[int] | None = None) -> pa.Table:
        assert self._sparse is not None
        try:
            self._sparse.ensure(self._chunk_ranges(columns, groups), gap=_MERGE_GAP)
        except OfflineError as exc:
            what = "every column" if columns is None else f"the column(s) {columns}"
            url = getattr(self._sparse.source, "url", "the dataset")
            raise OfflineError(
                f"Offline mode is on and {what} of the index of {url} ({self._path}) were "
                f"never read while online, so they are not in the cache (an online open caches "
                f"the whole index only up to a size; this one is {self._sparse.size:,} bytes). "
                "Open the dataset once online and read them (ds.texts, ds.column(name)), or "
                "unset ACTSTORE_OFFLINE/HF_HUB_OFFLINE."
            ) from exc
        try:
            pf = self._parquet()
            t = pf.read(columns=columns) if groups is None else pf.read_row_groups(groups, columns=columns)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise FormatError(f"{self._path}: the index is not a readable Parquet file ({exc}).") from None
        want = self.num_rows if groups is None else sum(
            self._parquet().metadata.row_group(g).num_rows for g in groups)
        if t.num_rows != want:
            raise FormatError(f"{self._path}: the index footer declares {want} rows but "
                              f"holds {t.num_rows}.")
        return t
