"""Shard files written as a stream, hashed while they are written.

A shard file holds one tensor of ``rows × dim`` values. Its header is written first with
the planned row count; rows are appended as they arrive (memory stays bounded by what the
caller passes in). When the final count differs from the plan (the last shard of a dataset
whose size was not known), the header is rewritten in place — it was padded to a fixed
width for that — and the file is hashed again from disk.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..errors import WriteError
from .dtypes import little_endian
from .header import build_header

__all__ = ["StreamingTensorFile", "hash_file", "write_tensor_file"]

_MAX_ROWS = 10**15  # widest row count a reserved header must fit


def hash_file(path: str, chunk: int = 8 << 20) -> str:
    """sha256 of a local file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(chunk)
        view = memoryview(buf)
        while n := f.readinto(view):
            h.update(view[:n])
    return h.hexdigest()


class StreamingTensorFile:
    """One single-tensor safetensors file, written row block by row block.

    Parameters
    ----------
    path : str
        Local path to write (a staging name; the caller publishes it).
    key, dtype : str
        Tensor key and safetensors dtype code.
    dim : int
        Row width.
    planned_rows : int or None
        Expected row count. When it is right, the file is hashed in one pass as it is
        written; otherwise it is hashed again from disk at close.
    hasher : ThreadPoolExecutor
        A single-worker pool that hashes concurrently with the writes (hashlib and file
        writes both release the GIL, so the two overlap on two cores).
    durable : bool
        Flush the data to the disk (``fsync``) as soon as the planned rows are written, while
        the hash of the last blocks still runs, so that neither waits for the other; the
        durable commit's own ``fsync`` then finds nothing left to write. Pass it for files
        that are committed locally.
    """

    def __init__(
        self,
        path: str,
        *,
        key: str,
        dtype: str,
        dim: int,
        planned_rows: int | None,
        hasher: ThreadPoolExecutor,
        durable: bool = False,
    ) -> None:
        self.path = path
        self._durable = durable
        self._synced = False
        self.key, self.dtype, self.dim = key, dtype, dim
        self.planned = planned_rows
        self.rows = 0
        self._reserve = len(build_header([(key, dtype, (_MAX_ROWS, dim))])) - 8
        self._pool = hasher
        self._sha = hashlib.sha256()
        self._pending: list[Future[None]] = []
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - closed in close()/discard()
        header = self._header(planned_rows or 0)
        self._data_bytes = 0
        self._header_bytes = len(header)
        _write_all(self._file, header, path)
        if planned_rows is not None:
            self._sha.update(header)

    def _header(self, rows: int) -> bytes:
        return build_header([(self.key, self.dtype, (rows, self.dim))], reserve=self._reserve)

    def append(self, block: np.ndarray) -> None:
        """Append a C-contiguous ``(rows, dim)`` block in the storage dtype (written
        little-endian whatever the host or the block's byte order)."""
        view = memoryview(little_endian(block)).cast("B")
        if self.planned is not None:
            self._pending.append(self._pool.submit(self._sha.update, view))
        _write_all(self._file, view, self.path)
        self._data_bytes += view.nbytes
        self.rows += block.shape[0]
        if self._durable and self.rows == self.planned:  # complete: flush while hashing
            os.fsync(self._file.fileno())
            self._synced = True

    def wait(self) -> None:
        """Block until every appended block has been hashed (the caller may then reuse it)."""
        for fut in self._pending:
            fut.result()
        self._pending.clear()

    def close(self, *, sync: bool = False) -> tuple[int, str]:
        """Finish the file; returns ``(size in bytes, sha256 hex)``.

        ``sync`` flushes the file's data to the disk here, while the hashing thread finishes
        (the two overlap), so that the durable commit's own ``fsync`` later finds nothing left
        to write. Pass it for files that are committed locally.
        """
        if sync and self.planned == self.rows and not self._synced:
            os.fsync(self._file.fileno())  # the hash of the last blocks runs meanwhile
        self.wait()
        if self.planned != self.rows:
            self._file.seek(0)
            _write_all(self._file, self._header(self.rows), self.path)
            if sync:
                os.fsync(self._file.fileno())
        size = self._file.seek(0, os.SEEK_END)
        self._file.close()
        if size != self._header_bytes + self._data_bytes:
            raise WriteError(
                f"{self.path}: holds {size} bytes after writing {self._header_bytes} header and "
                f"{self._data_bytes} data bytes; the write came out short."
            )
        if self.planned != self.rows:
            return size, hash_file(self.path)
        return size, self._sha.hexdigest()

    def discard(self) -> None:
        """Close and delete the file (used when a write is aborted)."""
        self.wait()
        self._file.close()
        if os.path.exists(self.path):
            os.remove(self.path)


def _write_all(f: io.RawIOBase, data: bytes | memoryview, path: str) -> None:
    """Write every byte: an unbuffered ``write`` may write fewer (a file-size limit or a
    full disk reached part-way) and says so only in its return value; the retry then raises
    the real ``OSError`` (EFBIG, ENOSPC), which is raised as :class:`WriteError`."""
    view = memoryview(data).cast("B")
    done = 0
    try:
        while done < view.nbytes:
            n = f.write(view[done:])
            if not n:
                raise OSError(f"write() wrote nothing at byte {done} of {view.nbytes}")
            done += n
    except OSError as exc:
        raise WriteError(
            f"{path}: writing failed after {done} of {view.nbytes} bytes ({exc}); disk full "
            "or a file-size limit? Nothing was committed."
        ) from exc


def write_tensor_file(path: str, tensors: list[tuple[str, str, np.ndarray]]) -> tuple[int, str]:
    """Write a small multi-tensor safetensors file in one go (values little-endian, as
    safetensors stores them); returns ``(size, sha256)``."""
    header = build_header([(key, code, arr.shape) for key, code, arr in tensors])
    h = hashlib.sha256(header)
    with open(path, "wb") as f:
        f.write(header)
        for _, _, arr in tensors:
            data = memoryview(little_endian(arr)).cast("B")
            h.update(data)
            f.write(data)
    return len(header) + sum(arr.nbytes for _, _, arr in tensors), h.hexdigest()
