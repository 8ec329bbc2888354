"""Parquet bytes handed to pyarrow so that no Python object outlives the call in its threads.

Why this module exists (the exit-134 crash): ``pq.read_table(io.BytesIO(data))`` wraps the
Python file in a C++ ``PyReadableFile``. pyarrow decodes columns on its CPU thread pool, and
the last reference to the Parquet reader — hence to that Python file — is often dropped by a
pool *worker* in a future's continuation, after ``read_table`` has already returned. Dropping
it needs the GIL. When that worker asks for the GIL while the interpreter is finalizing,
CPython ends the thread with ``pthread_exit``; the forced unwind runs through a C++
``noexcept`` destructor and the C++ runtime calls ``std::terminate``: "terminate called
without an active exception", exit 134, after all the work succeeded (seen in a core: worker
in ``~PyReadableFile`` → ``PyGILState_Ensure`` → ``PyThread_exit_thread`` while the main
thread is in ``Py_FinalizeEx``). ``use_threads=False`` hides it by releasing the reader on
the calling thread, at the cost of single-threaded decoding.

The fix keeps the threads and removes the Python object: the bytes are copied once into a
buffer Arrow allocated itself and read through a native ``BufferReader``, so whatever a
worker releases late is plain C++ that needs no GIL.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["arrow_buffer", "read_parquet_bytes"]


def arrow_buffer(data: bytes | bytearray | memoryview) -> pa.Buffer:
    """A copy of ``data`` in memory owned by Arrow (no reference to a Python object)."""
    view = memoryview(data).cast("B")
    buf = pa.allocate_buffer(view.nbytes)
    memoryview(buf).cast("B")[:] = view
    return buf


def read_parquet_bytes(data: bytes | bytearray | memoryview) -> pa.Table:
    """``pq.read_table`` of a whole Parquet file held in memory, safe at interpreter exit.

    Examples
    --------
    >>> import io
    >>> sink = io.BytesIO()
    >>> pq.write_table(pa.table({"a": [1, 2]}), sink)
    >>> read_parquet_bytes(sink.getvalue()).num_rows
    2
    """
    return pq.read_table(pa.BufferReader(arrow_buffer(data)))
