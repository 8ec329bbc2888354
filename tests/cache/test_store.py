"""The segment store: concurrency across processes, integrity, LRU eviction, maintenance."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from actstore.cache import UnifiedCache
from actstore.errors import InvalidArgumentError

sys.path.insert(0, str(Path(__file__).parent))
from warm_worker import vector  # noqa: E402

WORKER = str(Path(__file__).parent / "warm_worker.py")


def _segment_files(root: Path, ext: str) -> list[Path]:
    return sorted((root / "v1" / "segments").glob(f"*.{ext}"))


def _run_workers(location: str, tmp_path: Path, opts: dict | None = None) -> None:
    go = tmp_path / "go"
    extra = [json.dumps(opts)] if opts else []
    # 4 x 300 prompts, overlapping by half: prompts 0..749 in all
    procs = [subprocess.Popen([sys.executable, WORKER, location, str(150 * k), "300", str(go), *extra])
             for k in range(4)]
    time.sleep(1.5)  # let every worker import and wait at the gate
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]


def _check_all(cache: UnifiedCache) -> None:
    prompts = [f"prompt {i}" for i in range(750)]
    assert cache.missing("m", prompts, layers=[0, 1]) == []
    X = cache.get("m", prompts, layers=[0, 1])
    expected = np.concatenate([vector(i) for i in range(750)])
    np.testing.assert_array_equal(X[:, 0], expected)
    np.testing.assert_array_equal(X[:, 1], -expected)
    assert cache.stats()["problems"] == []


@pytest.mark.slow
def test_four_processes_warming_one_local_cache_lose_and_corrupt_nothing(tmp_path):
    _run_workers(str(tmp_path / "c"), tmp_path)
    cache = UnifiedCache(tmp_path / "c")
    _check_all(cache)
    # no file per prompt: a few dozen segments for 1,500 entries
    assert len(_segment_files(tmp_path / "c", "seg")) <= 4 * 13
    assert not list((tmp_path / "c").rglob("*.tmp-*"))


@pytest.mark.slow
def test_four_processes_warming_one_s3_cache(s3, tmp_path):
    opts, bucket = s3
    _run_workers(f"s3://{bucket}/cache", tmp_path, opts)
    _check_all(UnifiedCache(f"s3://{bucket}/cache", storage_options=opts))


def test_entries_written_by_one_instance_are_read_by_another(tmp_path):
    a = UnifiedCache(tmp_path)
    a.put("m", ["x", "y"], {"last_token": {3: np.eye(2, 5, dtype=np.float32)}})
    b = UnifiedCache(tmp_path)
    assert b.missing("m", ["x", "y"], layers=[3]) == [0, 1]  # not flushed yet
    a.flush()
    assert b.missing("m", ["x", "y"], layers=[3]) == []
    np.testing.assert_array_equal(b.get("m", ["y"], layers=[3])[0, 0], np.eye(2, 5)[1])


def _cache_with_entries(tmp_path: Path, n: int = 20) -> UnifiedCache:
    cache = UnifiedCache(tmp_path)
    prompts = [f"p{i}" for i in range(n)]
    cache.put("m", prompts, {"last_token": {0: np.arange(n * 8, dtype=np.float32).reshape(n, 8)}})
    cache.flush()
    return cache


@pytest.mark.parametrize("damage", ["bitflip", "truncate", "index"])
def test_damaged_entries_are_detected_dropped_reported_and_refilled(tmp_path, damage, caplog):
    _cache_with_entries(tmp_path)
    (seg,) = _segment_files(tmp_path, "seg")
    (idx,) = _segment_files(tmp_path, "idx")
    if damage == "bitflip":
        raw = bytearray(seg.read_bytes())
        raw[100] ^= 0x10
        seg.write_bytes(bytes(raw))
    elif damage == "truncate":
        seg.write_bytes(seg.read_bytes()[:-7])
    else:
        idx.write_bytes(idx.read_bytes()[:-20])
    fresh = UnifiedCache(tmp_path)
    prompts = [f"p{i}" for i in range(20)]
    with caplog.at_level(logging.WARNING, logger="actstore.cache"):
        if damage == "index":
            assert fresh.missing("m", prompts, layers=[0]) == list(range(20))
        else:
            with pytest.raises(Exception, match="20 of 20 prompts have no cached"):
                fresh.get("m", prompts, layers=[0])
    # reported (log + stats), and the damaged segment is gone from disk
    assert "dropped" in caplog.text
    assert fresh.stats()["dropped_segments"] == 1 and fresh.stats()["problems"]
    assert _segment_files(tmp_path, "seg") == [] and _segment_files(tmp_path, "idx") == []
    # the caller recomputes: missing() lists everything again, and a re-put is served
    assert fresh.missing("m", prompts, layers=[0]) == list(range(20))
    fresh.put("m", prompts, {"last_token": {0: np.ones((20, 8), np.float32)}})
    fresh.flush()
    np.testing.assert_array_equal(UnifiedCache(tmp_path).get("m", prompts, layers=[0]), 1.0)


def test_lru_eviction_drops_least_recently_used_segments(tmp_path):
    cache = UnifiedCache(tmp_path)
    for name in ("a", "b", "c"):  # one segment each, 4 KiB of payload
        cache.put("m", [name], {"last_token": {0: np.zeros((1, 1024), np.float32)}})
        cache.flush()
        time.sleep(0.02)
    cache.get("m", ["a"], layers=[0])  # a is now the most recently used
    evicted = cache.evict(max_bytes=2 * 4096)
    assert len(evicted) == 1
    fresh = UnifiedCache(tmp_path)
    assert fresh.missing("m", ["a", "b", "c"], layers=[0]) == [1]
    assert fresh.stats()["bytes"] <= 2 * 4096


def test_max_bytes_bounds_the_cache_after_every_flush(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTSTORE_CACHE_MAX_BYTES", "10K")
    cache = UnifiedCache(tmp_path)
    assert cache.store.max_bytes == 10 * 1024
    for i in range(6):
        cache.put("m", [f"q{i}"], {"last_token": {0: np.zeros((1, 1024), np.float32)}})
        cache.flush()
        assert cache.stats()["bytes"] <= 10 * 1024
    assert cache.missing("m", [f"q{i}" for i in range(6)], layers=[0]) == [0, 1, 2, 3]


def test_stats_ls_clear_and_evict_needs_a_bound(tmp_path, monkeypatch):
    cache = _cache_with_entries(tmp_path)
    st = cache.stats()
    assert st["entries"] == 20 and st["activation_entries"] == 20 and st["segments"] == 1
    assert st["bytes"] == 20 * 8 * 4
    (row,) = cache.ls()
    assert row["entries"] == 20 and row["bytes"] == st["bytes"]
    monkeypatch.delenv("ACTSTORE_CACHE_MAX_BYTES", raising=False)
    with pytest.raises(InvalidArgumentError, match="evict\\(\\) needs a bound"):
        cache.evict()
    cache.clear()
    assert cache.stats()["entries"] == 0 and _segment_files(tmp_path, "seg") == []


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_compression_round_trips_exactly(tmp_path, dtype, compression):
    torch = pytest.importorskip("torch")
    x = torch.randn(4, 256).to(getattr(torch, dtype))
    cache = UnifiedCache(tmp_path, compression=compression)
    cache.put("m", list("abcd"), {"mean": {2: x}})
    cache.flush()
    got = UnifiedCache(tmp_path).get("m", list("abcd"), layers=[2], view="mean")[:, 0]
    np.testing.assert_array_equal(got, x.float().numpy().astype(got.dtype))
    codecs = {e.codec for es in cache.store._index.values() for e in es}
    assert codecs == {"zstd-shuffle" if compression == "zstd" else "raw"}


def test_cli_cache_commands(tmp_path, capsys, monkeypatch):
    from actstore.cli import main

    monkeypatch.setenv("ACTSTORE_CACHE_DIR", str(tmp_path))
    _cache_with_entries(tmp_path)
    assert main(["cache", "stats"]) == 0
    assert "entries" in capsys.readouterr().out
    assert main(["cache", "ls"]) == 0
    assert "20" in capsys.readouterr().out
    assert main(["cache", "compact"]) == 0
    assert "merged 0 small segment(s)" in capsys.readouterr().out
    assert main(["cache", "evict", "--max-bytes", "0"]) == 0
    assert UnifiedCache(tmp_path).stats()["entries"] == 0
    assert main(["cache", "evict", "--max-bytes", "lots"]) == 2
    assert "Cannot read 'lots'" in capsys.readouterr().err
    assert main(["cache", "clear"]) == 0
    assert os.path.isdir(tmp_path)


def test_entries_put_but_not_flushed_are_published_at_exit(tmp_path):
    code = ("import numpy as np, sys; from actstore.cache import UnifiedCache; "
            "UnifiedCache(sys.argv[1]).put('m', ['z'], {'last_token': {0: np.ones((1, 3))}})")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    assert UnifiedCache(tmp_path).missing("m", ["z"], layers=[0]) == []


def test_compact_merges_small_segments_and_keeps_every_entry(tmp_path):
    cache = UnifiedCache(tmp_path)
    for i in range(10):
        cache.put("m", [f"c{i}"], {"last_token": {0: np.full((1, 8), i, np.float32)}})
        cache.flush()
    reader = UnifiedCache(tmp_path)  # holds the old layout in memory while we compact
    assert reader.missing("m", [f"c{i}" for i in range(10)], layers=[0]) == []
    assert cache.compact() == 10
    assert len(_segment_files(tmp_path, "seg")) == 1
    X = reader.get("m", [f"c{i}" for i in range(10)], layers=[0])  # finds the new segment
    np.testing.assert_array_equal(X[:, 0, 0], np.arange(10))
    assert reader.stats()["problems"] == []


def test_reads_by_another_process_count_for_lru(tmp_path):
    cache = UnifiedCache(tmp_path)
    for name in ("a", "b"):
        cache.put("m", [name], {"last_token": {0: np.zeros((1, 1024), np.float32)}})
        cache.flush()
        time.sleep(0.02)
    code = ("import sys; from actstore.cache import UnifiedCache; "
            "UnifiedCache(sys.argv[1]).get('m', ['a'], layers=[0])")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    UnifiedCache(tmp_path).evict(max_bytes=4096)
    assert UnifiedCache(tmp_path).missing("m", ["a", "b"], layers=[0]) == [1]
