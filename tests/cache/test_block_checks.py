"""Block checksums: a warm scattered ``get`` checks rows fetched together one hash per block,
and a damaged block still costs only its damaged pieces, never a wrong byte."""

from __future__ import annotations

import json
import os

import numpy as np

import actstore
from actstore.cache import UnifiedCache
from actstore.cache import remote as remote_mod
from actstore.cache.segments import BLOCK_ENTRIES, block_digests, decode_index, digest, encode_index

ROWS, DIM = 2000, 64


def _rows_segment(tmp_path):
    """The segment holding the cold get's rows: the one with the most entries (the open's
    reads are a few larger pieces)."""
    idx = max((tmp_path / "cache" / "v1" / "segments").glob("*.idx"), key=os.path.getsize)
    return idx.with_suffix(".seg")


def _counting(monkeypatch) -> list[int]:
    """Count every hash computed by the warm path (the functions split_digest hands out)."""
    calls = [0]
    split = remote_mod.split_digest

    def counted(expected: str):
        fn, hexv, n = split(expected)

        def fn_counted(data):
            calls[0] += 1
            return fn(data)

        return fn_counted, hexv, n

    monkeypatch.setattr(remote_mod, "split_digest", counted)
    return calls


def _cold_then_warm(served, http_root, tmp_path, write_ds, name: str, pick: np.ndarray):
    arrays = write_ds(os.path.join(http_root, name), rows=ROWS, dim=DIM, layers=(0,))
    url = f"{served.url}/{name}"
    actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache")).get(pick, layers=[0])  # cold
    cache = UnifiedCache(tmp_path / "cache")
    return arrays[0], cache, actstore.open_dataset(url, cache=cache)


def test_segments_record_block_checksums_of_back_to_back_entries():
    from actstore.cache.segments import Entry

    data = bytes(range(256)) * 40
    entries = [Entry(f"k{i}", "s", i * 100, 100, digest(data[i * 100 : i * 100 + 100])) for i in range(100)]
    entries.append(Entry("far", "s", 10_100, 10, digest(data[10_100:10_110])))  # not back to back
    blocks = block_digests(data, entries)
    assert [(o, n) for o, n, _ in blocks] == [(0, BLOCK_ENTRIES * 100), (BLOCK_ENTRIES * 100, (100 - BLOCK_ENTRIES) * 100)]
    assert all(d == digest(data[o : o + n]) for o, n, d in blocks)
    info, _ = decode_index(encode_index("s", len(data), entries, blocks), "s")
    assert info.blocks == blocks
    # a block list that fails its own checksum is ignored (entries still prove every byte)
    doc = json.loads(encode_index("s", len(data), entries, blocks))
    doc["blocks"] = doc["blocks"].replace("6400", "6300")
    info, got = decode_index(json.dumps(doc).encode(), "s")
    assert info.blocks == [] and len(got) == len(entries)
    # blocks outside the segment or overlapping are ignored as well
    for bad in ([[0, 99999, "x"]], [[0, 200, "x"], [100, 200, "x"]]):
        doc["blocks"] = json.dumps(bad)
        doc["blocks_digest"] = digest(doc["blocks"].encode())
        assert decode_index(json.dumps(doc).encode(), "s")[0].blocks == []


def _direct_pieces(ds) -> list[int]:
    """Count the pieces the warm direct path reads (the first rows share a piece with the
    header read, so they take the general path, which checks with check_digest)."""
    seen = [0]
    source = ds.source
    run = source._read_run_spans
    source._read_run_spans = lambda *a: seen.__setitem__(0, seen[0] + len(a[2])) or run(*a)
    return seen


def test_warm_get_of_rows_fetched_together_is_checked_per_block(served, http_root, tmp_path, write_ds, monkeypatch):
    pick = np.arange(0, ROWS, 7)  # 286 scattered rows: one cached piece each
    want, cache, ds = _cold_then_warm(served, http_root, tmp_path, write_ds, "blocks", pick)
    calls, pieces = _counting(monkeypatch), _direct_pieces(ds)
    np.testing.assert_array_equal(ds.get(pick, layers=[0])[:, 0], want[pick])
    assert ds.source.counters["bytes_fetched"] == 0  # all from the cache
    assert pieces[0] > 200
    assert 0 < calls[0] <= -(-pieces[0] // BLOCK_ENTRIES) + 2  # a handful of hashes, not one per row
    # a subset that breaks blocks up: every piece outside a whole block is checked on its own
    calls[0] = pieces[0] = 0
    sub = pick[::2]
    np.testing.assert_array_equal(ds.get(sub, layers=[0])[:, 0], want[sub])
    assert pieces[0] > 100 and calls[0] == pieces[0]


def test_one_flipped_byte_in_a_block_refetches_only_that_piece(served, http_root, tmp_path, write_ds):
    pick = np.arange(0, ROWS, 7)
    want, cache, ds = _cold_then_warm(served, http_root, tmp_path, write_ds, "blocks-rot", pick)
    seg = _rows_segment(tmp_path)
    with open(seg, "r+b") as f:  # one byte of the 10th piece
        f.seek(10 * DIM * 4 + 5)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x01]))
    np.testing.assert_array_equal(ds.get(pick, layers=[0])[:, 0], want[pick])
    assert ds.source.counters["damaged_pieces"] == 1
    assert ds.source.counters["bytes_fetched"] == DIM * 4  # that row alone came from the origin
    assert cache.stats()["dropped_segments"] == 1


def test_truncated_segment_under_blocks_never_returns_a_wrong_byte(served, http_root, tmp_path, write_ds):
    pick = np.arange(0, ROWS, 7)
    want, cache, ds = _cold_then_warm(served, http_root, tmp_path, write_ds, "blocks-cut", pick)
    seg = _rows_segment(tmp_path)
    os.truncate(seg, os.path.getsize(seg) // 2)
    np.testing.assert_array_equal(ds.get(pick, layers=[0])[:, 0], want[pick])
    assert ds.source.counters["damaged_pieces"] > 0 and ds.source.counters["bytes_fetched"] > 0


def test_segments_written_without_blocks_still_read_warm(served, http_root, tmp_path, write_ds, monkeypatch):
    """Caches written before blocks existed (no block list in the index) read entry by entry."""
    monkeypatch.setattr("actstore.cache.store.block_digests", lambda data, entries: [])
    pick = np.arange(0, ROWS, 7)
    want, cache, ds = _cold_then_warm(served, http_root, tmp_path, write_ds, "blocks-none", pick)
    idx = _rows_segment(tmp_path).with_suffix(".idx")
    assert "blocks" not in json.loads(idx.read_bytes())
    calls, pieces = _counting(monkeypatch), _direct_pieces(ds)
    np.testing.assert_array_equal(ds.get(pick, layers=[0])[:, 0], want[pick])
    assert pieces[0] > 200 and calls[0] == pieces[0] and ds.source.counters["bytes_fetched"] == 0
