"""Local reads avoid the kernel-copy alignment that is ~3x slow on AMD Zen CPUs.

``rep movsb`` (the kernel's copy from the page cache) slows down when the destination sits
1-31 bytes after the source modulo 4 KiB. A read whose buffer lands there goes through a
scratch buffer at the source's page phase instead; every phase must read back the same rows.
"""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore.format import rows
from actstore.format.writer import DatasetWriter

N, DIM = 64, 1024  # 4 KiB rows of float32: one row per page, so a row keeps its phase


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("align") / "ds")
    X = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    with DatasetWriter(path, model="m", layers=[0], dim=DIM) as w:
        w.add([f"p{i}" for i in range(N)], hidden={0: X})
    return path, X


def _out_at(phase: int) -> np.ndarray:
    """A C-contiguous (N, DIM) float32 array whose address is ``phase`` mod 4096."""
    slack = np.empty(N * DIM * 4 + 2 * rows.PAGE, dtype=np.uint8)
    skip = (phase - slack.ctypes.data) % rows.PAGE
    return slack[skip : skip + N * DIM * 4].view(np.float32).reshape(N, DIM)


def test_only_destinations_1_to_31_bytes_past_the_source_count_as_aliased():
    got = [d for d in range(-100, 5000) if rows._aliased(10_000 + d, 10_000)]
    assert got == [d for d in range(-100, 5000) if 1 <= d % 4096 <= 31]


@pytest.mark.parametrize("delta", [0, 1, 8, 16, 31, 32, 2048, 4095])
def test_every_buffer_phase_reads_back_the_rows_and_no_kernel_copy_aliases(dataset, delta, monkeypatch):
    path, X = dataset
    ds = actstore.open_dataset(path)
    start = ds._entry(ds._view(None), 0, 0).start  # where the rows begin in the shard file
    seen: list[int] = []
    real = rows.pread_exact

    def spy(fd, p, offset, buffer):
        seen.append((np.frombuffer(buffer, np.uint8).ctypes.data - offset) % rows.PAGE)
        return real(fd, p, offset, buffer)

    monkeypatch.setattr(rows, "pread_exact", spy)
    monkeypatch.setattr(rows, "SMALL_RUN_BYTES", 0)  # every run takes the streamed path
    out = _out_at((start + delta) % rows.PAGE)
    assert rows._aliased(out.ctypes.data, start) == (1 <= delta <= 31)
    assert ds.layer(0, out=out) is out
    np.testing.assert_array_equal(out, X)
    assert seen and not any(1 <= d <= 31 for d in seen), seen
