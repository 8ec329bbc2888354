"""Remote datasets read by byte ranges through the cache: HTTP, S3 (moto), offline mode."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import actstore
from actstore.cache import UnifiedCache
from actstore.errors import DatasetNotFoundError, OfflineError
from actstore.format.header import HEADER_PROBE_BYTES

ROWS, DIM = 4000, 384


@pytest.fixture()
def remote_ds(served, http_root, tmp_path, write_ds):
    """A fresh dataset served over HTTP (2 shards per layer), and its arrays."""
    name = f"ds-{tmp_path.name}"
    arrays = write_ds(os.path.join(http_root, name), rows=ROWS, dim=DIM,
                           shard_bytes=ROWS * DIM * 4 // 2)
    return f"{served.url}/{name}", name, arrays


def test_partial_read_transfers_about_the_payload_and_rereads_are_local(remote_ds, served, tmp_path):
    url, name, arrays = remote_ds
    cache = UnifiedCache(tmp_path / "cache")
    ds = actstore.open_dataset(url, cache=cache)
    assert served.bytes_sent(f"{name}/tensors") == 0  # opening reads the index only
    rows = np.random.default_rng(0).choice(ROWS, ROWS // 10, replace=False)
    served.reset()
    X = ds.get(rows, layers=[1])
    np.testing.assert_array_equal(X[:, 0], arrays[1][rows])
    payload = rows.size * DIM * 4
    gets = [r for r in served.log if r["method"] == "GET"]  # HEADs: each file's version pin
    shards = {r["path"] for r in gets}
    assert len(shards) == 2
    sent = served.bytes_sent(f"{name}/tensors")
    assert sent <= 1.2 * payload + len(shards) * HEADER_PROBE_BYTES, (sent, payload)
    assert all(r["status"] == 206 for r in gets)
    # second read: no request at all, from this dataset object or a new one on the same cache
    served.reset()
    np.testing.assert_array_equal(ds.get(rows, layers=[1]), X)
    ds2 = actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache"))
    np.testing.assert_array_equal(ds2.get(rows[::-1], layers=[1])[::-1], X)
    assert served.log == [r for r in served.log if r["method"] == "HEAD"]  # only the index check
    assert served.bytes_sent() == 0


def test_overlapping_reads_fetch_only_the_new_bytes(remote_ds, served, tmp_path):
    url, name, arrays = remote_ds
    ds = actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache"))
    ds.get(np.arange(100, 200), layers=[0])
    served.reset()
    X = ds.get(np.arange(150, 260), layers=[0])
    np.testing.assert_array_equal(X[:, 0], arrays[0][150:260])
    assert served.bytes_sent() == 60 * DIM * 4  # rows 200..259 only


def test_server_ignoring_range_never_yields_wrong_data(remote_ds, served, tmp_path, caplog):
    url, name, arrays = remote_ds
    ds = actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache"))
    served.ignore_range = True
    served.reset()
    rows = np.array([5, 2500, 3999, 17])
    with caplog.at_level(logging.WARNING, logger="actstore.cache"):
        X = ds.get(rows, layers=[0])
    np.testing.assert_array_equal(X[:, 0], arrays[0][rows])
    assert "ignores HTTP Range" in caplog.text
    gets = [r for r in served.log if r["method"] == "GET"]
    assert {r["status"] for r in gets} == {200}
    assert len(gets) == 2  # one whole download per shard file, not one per range
    # the whole files it sent are cached: later reads need no network
    served.reset()
    np.testing.assert_array_equal(ds.get(np.arange(1000, 1010), layers=[0])[:, 0], arrays[0][1000:1010])
    assert served.log == []


def test_a_rewritten_dataset_is_never_served_stale_bytes(served, http_root, tmp_path, write_ds):
    name = f"rw-{tmp_path.name}"
    cache = UnifiedCache(tmp_path / "cache")
    path = os.path.join(http_root, name)
    old = write_ds(path, rows=200, dim=32, seed=1)
    url = f"{served.url}/{name}"
    np.testing.assert_array_equal(actstore.open_dataset(url, cache=cache).layer(0), old[0])
    new = write_ds(path, rows=200, dim=32, seed=2)  # same URL, same sizes, new bytes
    np.testing.assert_array_equal(actstore.open_dataset(url, cache=cache).layer(0), new[0])


def test_corrupt_cached_ranges_are_refetched(remote_ds, served, tmp_path):
    url, name, arrays = remote_ds
    cache_dir = tmp_path / "cache"
    ds = actstore.open_dataset(url, cache=UnifiedCache(cache_dir))
    rows = np.arange(0, 4000, 97)
    ds.get(rows, layers=[0])
    for seg in (cache_dir / "v1" / "segments").glob("*.seg"):  # flip a bit in every segment
        raw = bytearray(seg.read_bytes())
        raw[len(raw) // 2] ^= 1
        seg.write_bytes(bytes(raw))
    fresh = UnifiedCache(cache_dir)
    served.reset()
    X = actstore.open_dataset(url, cache=fresh).get(rows, layers=[0])
    np.testing.assert_array_equal(X[:, 0], arrays[0][rows])
    assert fresh.stats()["dropped_segments"] >= 1 and served.bytes_sent() > 0


def test_offline_serves_cached_bytes_and_names_what_is_missing(remote_ds, served, tmp_path, monkeypatch):
    url, name, arrays = remote_ds
    cache = UnifiedCache(tmp_path / "cache")
    actstore.open_dataset(url, cache=cache).get(np.arange(10), layers=[0])
    served.reset()
    for var in ("ACTSTORE_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
        ds = actstore.open_dataset(url, cache=UnifiedCache(tmp_path / "cache"))
        np.testing.assert_array_equal(ds.get(np.arange(10), layers=[0])[:, 0], arrays[0][:10])
        with pytest.raises(OfflineError, match=r"hidden_layer001_shard000\.safetensors.*not in the cache"):
            ds.get([0], layers=[1])
        with pytest.raises(OfflineError, match="never opened online"):
            actstore.open_dataset(f"{served.url}/other", cache=UnifiedCache(tmp_path / "cache"))
        monkeypatch.delenv(var)
    assert served.log == []


def test_missing_remote_dataset_is_reported(served, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="No dataset index at"):
        actstore.open_dataset(f"{served.url}/nothing-here", cache=UnifiedCache(tmp_path / "c"))


def test_s3_dataset_read_through_moto_and_cached(s3, tmp_path, write_ds):
    import s3fs

    opts, bucket = s3
    local = tmp_path / "ds"
    arrays = write_ds(str(local), rows=1000, dim=64)
    fs = s3fs.S3FileSystem(**opts)
    fs.put(str(local), f"{bucket}/ds", recursive=True)
    cache = UnifiedCache(tmp_path / "cache")
    ds = actstore.open_dataset(f"s3://{bucket}/ds", storage_options=opts, cache=cache)
    rows = np.arange(3, 1000, 10)
    np.testing.assert_array_equal(ds.get(rows, layers=[0, 1]),
                                  np.stack([arrays[0][rows], arrays[1][rows]], axis=1))
    fetched = ds.source.counters["requests"]
    assert fetched > 0
    ds.get(rows, layers=[0, 1])
    assert ds.source.counters["requests"] == fetched  # served from the cache
    assert ds.source.counters["bytes_fetched"] <= 1.2 * rows.size * 2 * 64 * 4 + 2 * HEADER_PROBE_BYTES


def test_cache_itself_on_s3(s3):
    opts, bucket = s3
    cache = UnifiedCache(f"s3://{bucket}/team-cache", storage_options=opts)
    cache.put("m", ["a", "b"], {"last_token": {0: np.ones((2, 3), np.float32)}})
    cache.flush()
    other = UnifiedCache(f"s3://{bucket}/team-cache", storage_options=opts)
    assert other.missing("m", ["a", "b", "c"], layers=[0]) == [2]
    assert other.stats()["entries"] == 2


def test_local_paths_bypass_the_cache(tmp_path, write_ds):
    write_ds(str(tmp_path / "ds"), rows=10, dim=8)
    ds = actstore.open_dataset(tmp_path / "ds", cache=UnifiedCache(tmp_path / "c"))
    assert type(ds.source).__name__ == "LocalSource"
    assert not Path(tmp_path / "c").exists()
    shutil.rmtree(tmp_path / "ds")


@pytest.mark.parametrize("verify", ["first", "always"])
def test_corruption_after_a_warm_read_in_the_same_process_is_caught(remote_ds, served, tmp_path, verify):
    url, name, arrays = remote_ds
    cache = UnifiedCache(tmp_path / "cache", verify=verify)
    ds = actstore.open_dataset(url, cache=cache)
    rows = np.arange(0, 4000, 50)
    ds.get(rows, layers=[0])
    ds.get(rows, layers=[0])  # warm: served by the fast path after the first check
    for seg in (tmp_path / "cache" / "v1" / "segments").glob("*.seg"):
        raw = bytearray(seg.read_bytes())
        raw[-10] ^= 0x40
        seg.write_bytes(bytes(raw))
    np.testing.assert_array_equal(ds.get(rows, layers=[0])[:, 0], arrays[0][rows])
    assert cache.stats()["dropped_segments"] >= 1


def test_verify_setting_is_checked(tmp_path):
    from actstore.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="verify must be 'first' or 'always'; got 'never'"):
        UnifiedCache(tmp_path, verify="never")


@pytest.fixture(scope="module")
def hub_repo(tmp_path_factory, write_ds):
    """A dataset pushed to a loopback Hub (its own port), via the real huggingface_hub client."""
    from huggingface_hub import HfApi

    from actstore.testing import HubServer

    root = tmp_path_factory.mktemp("hf")
    with HubServer(root / "hub", port=0, tokens={"hf_w": "write"}) as hub:
        api = HfApi(endpoint=hub.endpoint, token="hf_w")
        api.create_repo("org/acts", repo_type="dataset")
        arrays = write_ds(str(root / "ds"), rows=2000, dim=64)
        api.upload_folder(folder_path=str(root / "ds"), repo_id="org/acts", repo_type="dataset")
        sha = api.dataset_info("org/acts").sha
        yield hub, {"endpoint": hub.endpoint, "token": "hf_w"}, sha, arrays


@pytest.mark.hub
def test_hf_dataset_pinned_to_a_commit_reads_ranges_then_from_cache(hub_repo, tmp_path, monkeypatch):
    hub, opts, sha, arrays = hub_repo
    hub.reset_counters()
    ds = actstore.open_dataset("hf://datasets/org/acts", storage_options=opts, revision=sha,
                               cache=UnifiedCache(tmp_path / "c"))
    assert ds.source.index_id.startswith("sha256:")  # the index is keyed by its LFS sha256
    rows = np.arange(0, 2000, 20)
    np.testing.assert_array_equal(ds.get(rows, layers=[1])[:, 0], arrays[1][rows])
    tensors = hub.bytes_served(prefix="tensors")
    # the Hub rate-limits requests: rows 20 apart are one ranged read (format/ranges.py HUB_GAP),
    # so at most the shard's rows are sent, in the header probe and one request
    assert 0 < tensors <= 2000 * 64 * 4 + HEADER_PROBE_BYTES
    assert sum(m == "GET" and "/tensors/" in p for m, p, _ in hub.requests) <= 2
    hub.reset_counters()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = actstore.open_dataset("hf://datasets/org/acts", storage_options=opts, revision=sha,
                                  cache=UnifiedCache(tmp_path / "c"))
    np.testing.assert_array_equal(again.get(rows, layers=[1])[:, 0], arrays[1][rows])
    assert hub.bytes_served() == 0


def test_revision_applies_to_hf_urls_only():
    from actstore.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="revision= applies to hf:// URLs only"):
        actstore.open_dataset("s3://bucket/ds", revision="main")
    with pytest.raises(InvalidArgumentError, match="already pins revision 'v1'"):
        actstore.open_dataset("hf://datasets/org/x@v1", revision="v2")
