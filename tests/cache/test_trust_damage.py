"""Segment files damaged (bits flipped, truncated) while a reader reads them: never a wrong byte."""

from __future__ import annotations

import os
import random
import threading
import time

import numpy as np
import pytest

import actstore
from actstore.cache import UnifiedCache

ROWS, DIM = 4000, 64


def _damage(seg_dir: str, stop: threading.Event, counts: dict[str, int]) -> None:
    """Flip bytes in place (and back), and now and then truncate a segment, until ``stop``."""
    rng = random.Random(0)
    while not stop.is_set():
        names = [n for n in os.listdir(seg_dir) if n.endswith(".seg")]
        if not names:
            time.sleep(0.001)
            continue
        path = os.path.join(seg_dir, rng.choice(names))
        try:
            size = os.path.getsize(path)
            if size < 2:
                continue
            if rng.random() < 0.02:
                os.truncate(path, rng.randrange(size))
                counts["truncated"] += 1
                continue
            with open(path, "r+b") as f:
                pos = rng.randrange(size)
                f.seek(pos)
                old = f.read(1)
                f.seek(pos)
                f.write(bytes([old[0] ^ 0x5A]))
                f.flush()
                time.sleep(rng.random() * 0.002)  # damaged for a moment ...
                f.seek(pos)
                f.write(old)  # ... then as it was
            counts["flipped"] += 1
        except (FileNotFoundError, ValueError, IndexError):
            continue  # dropped by the reader meanwhile


@pytest.mark.parametrize("verify", ["first", "always"])
def test_no_wrong_byte_while_segments_are_damaged_under_the_reader(served, http_root, tmp_path, write_ds, verify):
    arrays = write_ds(os.path.join(http_root, f"damaged-{verify}"), rows=ROWS, dim=DIM,
                      shard_bytes=ROWS * DIM * 4 // 2)
    url = f"{served.url}/damaged-{verify}"
    pick = np.arange(0, ROWS, 3)
    cache = UnifiedCache(tmp_path / "cache", verify=verify)
    ds = actstore.open_dataset(url, cache=cache)
    ds.get(pick, layers=[0])  # every piece cached (one per row), then read warm
    ds.get(pick, layers=[0])
    stop, counts = threading.Event(), {"flipped": 0, "truncated": 0}
    damager = threading.Thread(target=_damage, args=(str(tmp_path / "cache" / "v1" / "segments"), stop, counts))
    rng = np.random.default_rng(1)
    wrong = reads = 0
    damager.start()
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            rows = rng.permutation(pick)
            got = ds.get(rows, layers=[0])[:, 0]
            reads += rows.size
            wrong += int((got != arrays[0][rows]).any(axis=1).sum())
    finally:
        stop.set()
        damager.join()
    assert counts["flipped"] > 100 and reads > 5_000
    assert wrong == 0, f"{wrong} of {reads} rows came back wrong"
    stats = cache.stats()
    assert stats["dropped_segments"] >= 1 and stats["problems"]  # damage was reported ...
    assert ds.source.counters["bytes_fetched"] > 0  # ... and refetched from the origin


@pytest.mark.parametrize("verify", ["first", "always"])
def test_bit_rot_that_keeps_size_mtime_and_inode_is_caught_on_a_warm_read(served, http_root, tmp_path, write_ds, verify):
    """A disk that returns other bytes (or a write within one timestamp tick) changes no stat
    field, so a warm read must check the bytes themselves."""
    arrays = write_ds(os.path.join(http_root, f"rot-{verify}"), rows=ROWS, dim=DIM, shard_bytes=ROWS * DIM * 4 // 2)
    cache = UnifiedCache(tmp_path / "cache", verify=verify)
    ds = actstore.open_dataset(f"{served.url}/rot-{verify}", cache=cache)
    pick = np.arange(0, ROWS, 5)
    ds.get(pick, layers=[0])
    ds.get(pick, layers=[0])  # checked once: from now on a warm read
    for seg in (tmp_path / "cache" / "v1" / "segments").glob("*.seg"):
        st = os.stat(seg)
        with open(seg, "r+b") as f:
            raw = bytearray(f.read())
            for pos in range(0, len(raw), 997):
                raw[pos] ^= 0x01
            f.seek(0)
            f.write(raw)
        os.utime(seg, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert os.stat(seg).st_mtime_ns == st.st_mtime_ns and os.stat(seg).st_ino == st.st_ino
    np.testing.assert_array_equal(ds.get(pick, layers=[0])[:, 0], arrays[0][pick])
    assert cache.stats()["dropped_segments"] >= 1


def test_bit_rot_in_cached_activations_is_caught_on_a_warm_read(tmp_path):
    cache = UnifiedCache(tmp_path / "acts", verify="first")
    vec = np.arange(64, dtype=np.float32).reshape(1, 64)
    cache.put("m", ["p"], {"last_token": {0: vec}})
    cache.flush()
    np.testing.assert_array_equal(cache.get("m", ["p"], layers=[0])[0, 0], vec[0])  # checked once
    (seg,) = (tmp_path / "acts" / "v1" / "segments").glob("*.seg")
    st = os.stat(seg)
    with open(seg, "r+b") as f:
        f.seek(40)
        b = f.read(1)
        f.seek(40)
        f.write(bytes([b[0] ^ 0x80]))
    os.utime(seg, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(actstore.errors.CacheError, match="1 of 1 prompts have no cached"):
        cache.get("m", ["p"], layers=[0])  # dropped as damaged: a miss, never other values
    assert cache.stats()["dropped_segments"] == 1


def test_warm_whole_layer_reads_are_cut_at_pieces_and_checked(served, http_root, tmp_path, write_ds):
    """A whole-layer range spans many cached pieces: it is read piece by piece straight into
    the array (no bounce through bytes) and each piece is still checked."""
    arrays = write_ds(os.path.join(http_root, "rot-layer"), rows=ROWS, dim=DIM, shard_bytes=ROWS * DIM * 4 // 2)
    url = f"{served.url}/rot-layer"
    actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache")).layer(0)  # cold: fills the cache
    cache = UnifiedCache(tmp_path / "cache")
    ds = actstore.open_dataset(url, cache=cache)
    source = ds._s.source
    split = source._split_at_pieces
    cuts = []
    source._split_at_pieces = lambda path, r, v: cuts.append(len(split(path, r, v)[0])) or split(path, r, v)
    np.testing.assert_array_equal(ds.layer(0), arrays[0])
    assert max(cuts) > 1  # the layer's ranges were cut into cached pieces
    for seg in (tmp_path / "cache" / "v1" / "segments").glob("*.seg"):
        with open(seg, "r+b") as f:
            raw = bytearray(f.read())
            for pos in range(0, len(raw), 997):
                raw[pos] ^= 0x01
            f.seek(0)
            f.write(raw)
    np.testing.assert_array_equal(ds.layer(0), arrays[0])
    assert cache.stats()["dropped_segments"] >= 1


def test_large_warm_reads_shared_by_threads_still_check_every_piece(served, http_root, tmp_path, write_ds):
    """A warm read large enough to be shared by threads (each reads and checks its share of the
    pieces): one flipped byte in the last piece — the last thread's share — is still caught."""
    from actstore.format.rows import PARALLEL_BYTES

    rows, dim = 9000, 1024  # one 36.9 MB shard: shared by two threads
    assert rows * dim * 4 >= 2 * PARALLEL_BYTES
    arrays = write_ds(os.path.join(http_root, "big-warm"), rows=rows, dim=dim, layers=(0,),
                      shard_bytes=rows * dim * 4 + 4096)
    url = f"{served.url}/big-warm"
    actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache")).layer(0)  # cold fill
    cache = UnifiedCache(tmp_path / "cache")
    ds = actstore.open_dataset(url, cache=cache)
    threads = []
    source = ds._s.source
    run = source._read_run
    source._read_run = lambda *a: threads.append(threading.get_ident()) or run(*a)
    np.testing.assert_array_equal(ds.layer(0), arrays[0])
    assert len(set(threads)) > 1  # the read really was shared
    seg = max((tmp_path / "cache" / "v1" / "segments").glob("*.seg"), key=os.path.getsize)
    with open(seg, "r+b") as f:
        f.seek(os.path.getsize(seg) - 100)  # inside the segment's last piece
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x01]))
    np.testing.assert_array_equal(ds.layer(0), arrays[0])
    assert cache.stats()["dropped_segments"] >= 1
