"""The index, decoded one column at a time on first use (issue #14).

Opening a dataset needs only its location columns; texts, labels and metadata columns of a
large index (10^7 rows) are most of its decoded size. :class:`IndexTable` holds the checked
Parquet file and decodes a column when it is first asked for (Parquet column projection), then
keeps it. ``table()`` gives the whole :class:`pyarrow.Table` for callers that need it.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import FormatError

__all__ = ["IndexTable"]


class IndexTable:
    """A Parquet index read lazily, column by column (the subset of ``pa.Table`` the reader uses).

    Parameters
    ----------
    file : pyarrow.parquet.ParquetFile or None
        The checked index file (its size and footer were checked by the caller).
    data : pyarrow.Buffer, optional
        The bytes ``file`` reads (kept so the index pickles).
    table : pyarrow.Table, optional
        An index already decoded (it is used as it is).
    path : str
        The index's path, for error messages.
    """

    def __init__(self, file: pq.ParquetFile | None, *, table: pa.Table | None = None,
                 path: str = "index", data: pa.Buffer | None = None) -> None:
        if (file is None) == (table is None):
            raise ValueError("IndexTable needs exactly one of a Parquet file or a table.")
        self._file, self._full, self._path = file, table, path
        self._source_bytes = data  # the file's bytes, for pickling
        self._cols: dict[str, pa.ChunkedArray] = {}
        if table is not None:
            self.schema: pa.Schema = table.schema
            self.num_rows: int = table.num_rows
        else:
            assert file is not None
            self.schema = file.schema_arrow
            self.num_rows = file.metadata.num_rows

    def __getstate__(self) -> dict[str, object]:
        """Pickled (spawned DataLoader workers) as the index bytes and what is decoded so far;
        a ``ParquetFile`` itself does not pickle."""
        if self._file is not None and self._source_bytes is None:
            self.table()  # no bytes kept: pickle the decoded table
        state = dict(self.__dict__)
        f, raw = state.pop("_file"), state.pop("_source_bytes")
        state["_bytes"] = None if f is None or self._full is not None else raw
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        raw = state.pop("_bytes")
        self.__dict__.update(state)
        self._source_bytes = raw
        self._file = None if raw is None else pq.ParquetFile(pa.BufferReader(raw))

    @classmethod
    def of(cls, table: pa.Table) -> IndexTable:
        """Wrap an index that is already decoded."""
        return cls(None, table=table)

    @property
    def column_names(self) -> list[str]:
        return list(self.schema.names)

    def column(self, name: str) -> pa.ChunkedArray:
        """One column, decoded on first use."""
        if self._full is not None:
            return self._full.column(name)
        col = self._cols.get(name)
        if col is None:
            col = self._read([name]).column(name)
            self._cols[name] = col
        return col

    def table(self) -> pa.Table:
        """Every column (decoded once, then kept)."""
        if self._full is None:
            self._full = self._read(None)
            self._cols.clear()
        return self._full

    def _read(self, columns: list[str] | None) -> pa.Table:
        assert self._file is not None
        try:
            t = self._file.read(columns=columns)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise FormatError(f"{self._path}: the index is not a readable Parquet file ({exc}).") from None
        if t.num_rows != self.num_rows:
            raise FormatError(f"{self._path}: the index footer declares {self.num_rows} rows but "
                              f"holds {t.num_rows}.")
        return t
