"""A cache this process cannot write still serves reads; maintenance reports a clear CacheError.

Tests run as root, which ignores permission bits, so the cache folder is made immutable with
``chattr -R +i`` (the kernel then refuses every create, rename and delete, even for root).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

import numpy as np
import pytest

import actstore
from actstore.cache import UnifiedCache
from actstore.cli import main
from actstore.errors import CacheError


def _chattr(flag: str, path) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "-R", flag, str(path)], capture_output=True).returncode == 0


@pytest.fixture()
def frozen(tmp_path):
    """A cache folder that can be made immutable; always made mutable again afterwards."""
    path = tmp_path / "cache"
    yield path
    _chattr("-i", path)


def test_a_read_only_cache_still_reads_and_reports_clearly(served, http_root, frozen, write_ds, caplog, capsys):
    arrays = write_ds(os.path.join(http_root, "ro"), rows=2000, dim=32)
    url = f"{served.url}/ro"
    cached, other = np.arange(0, 1000, 3), np.arange(1000, 2000, 3)
    ds = actstore.open_dataset(url, cache=UnifiedCache(frozen))
    ds.get(cached, layers=[0])
    if not _chattr("+i", frozen):
        pytest.skip("chattr +i is not available on this filesystem")
    with pytest.raises(OSError):
        (frozen / "probe").write_bytes(b"")  # really not writable, even as root
    cache = UnifiedCache(frozen)
    caplog.set_level(logging.WARNING, "actstore.cache")
    ro = actstore.open_dataset(url, cache=cache)
    np.testing.assert_array_equal(ro.get(cached, layers=[0])[:, 0], arrays[0][cached])  # from the cache
    np.testing.assert_array_equal(ro.get(other, layers=[0])[:, 0], arrays[0][other])  # from the origin
    assert any("reading" in r.getMessage() and "without caching" in r.getMessage() for r in caplog.records)
    assert cache.ls() and cache.stats()["segments"] >= 1  # inspection works
    with pytest.raises(CacheError, match=r"^Cannot delete a segment in the cache at .*read-only here[^\n]*$"):
        cache.evict(max_bytes=1)
    with pytest.raises(CacheError, match="read-only here"):
        cache.clear()
    capsys.readouterr()
    assert main(["cache", "--location", str(frozen), "ls"]) == 0
    assert main(["cache", "--location", str(frozen), "stats"]) == 0
    assert main(["cache", "--location", str(frozen), "evict", "--max-bytes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("actstore: error: Cannot delete a segment") and "\n" not in err
