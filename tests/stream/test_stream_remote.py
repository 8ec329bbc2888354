"""Streaming from S3 (moto's server, through real s3fs): the same batches as a local copy,
few large range requests (about one per block piece and layer), and through a UnifiedCache."""

from __future__ import annotations

import os

import numpy as np
import pytest
import s3fs
import torch

import actstore
from actstore.cache import UnifiedCache

KW = dict(layers=[0, 3], batch_size=16, block_rows=20, window=60, seed=7)


def upload(opts: dict, local: str, remote: str) -> None:
    fs = s3fs.S3FileSystem(**opts)
    for dirpath, _, files in os.walk(local):
        for f in files:
            full = os.path.join(dirpath, f)
            fs.put_file(full, f"{remote}/{os.path.relpath(full, local)}")


def test_s3_stream_matches_local_with_few_requests(s3, pooled):
    opts, bucket = s3
    upload(opts, str(pooled), f"{bucket}/ds")
    ds = actstore.open_dataset(f"s3://{bucket}/ds", storage_options=opts, cache=False)
    ranges: list[tuple[str, int, int]] = []
    src = ds.source
    orig = src.read_ranges

    def counting(path, rs):
        ranges.extend((path, a, b) for a, b in rs)
        return orig(path, rs)

    src.read_ranges = counting  # count every range request the stream makes
    local = list(actstore.stream(actstore.open_dataset(str(pooled)), **KW))
    s = actstore.stream(ds, **KW)
    ranges.clear()
    remote = list(s)
    assert len(remote) == len(local)
    for a, b in zip(remote, local):
        assert torch.equal(a["row"], b["row"]) and torch.equal(a["layer_3"], b["layer_3"])
    tensor = [r for r in ranges if r[0].startswith("tensors/") and r[1] > 0]  # not header probes
    assert sum(b - a for _, a, b in tensor) == 300 * 2 * 8 * 4  # every sample's bytes once
    # 15 blocks x 2 layers, plus cuts at shard boundaries (64 rows a shard): not 600 row reads
    assert len(tensor) <= 2 * (15 + 300 // 64 + 1) + 2 * 5


def test_s3_stream_through_a_unified_cache_and_resume_across_copies(s3, pooled, tmp_path):
    opts, bucket = s3
    upload(opts, str(pooled), f"{bucket}/ds")
    cache = UnifiedCache(tmp_path / "cache")
    ds = actstore.open_dataset(f"s3://{bucket}/ds", storage_options=opts, cache=cache)
    first = [b["row"].numpy() for b in actstore.stream(ds, **KW)]
    again = [b["row"].numpy() for b in actstore.stream(ds, **KW)]  # served from the cache
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    # a state saved on the remote dataset resumes on a local copy of it (same fingerprint)
    s = actstore.stream(ds, **KW)
    state = s.state_dict(batch=5)
    t = actstore.stream(actstore.open_dataset(str(pooled)), **KW)
    t.load_state_dict(state)
    rest = [b["row"].numpy() for b in t]
    assert all(np.array_equal(x, y) for x, y in zip(rest, first[5:])) and len(rest) == len(first) - 5


@pytest.mark.parametrize("cached", [True, False])
def test_s3_stream_with_dataloader_workers(s3, pooled, tmp_path, cached):
    """Forked workers read S3 through a filesystem of their own (fsspec's async ones are not
    fork-safe), with and without a cache."""
    from torch.utils.data import DataLoader

    opts, bucket = s3
    upload(opts, str(pooled), f"{bucket}/ds")
    ds = actstore.open_dataset(f"s3://{bucket}/ds", storage_options=opts,
                               cache=UnifiedCache(tmp_path / "cache") if cached else False)
    next(iter(actstore.stream(ds, **KW)))  # the parent has used its filesystem before forking
    s = actstore.stream(ds, **KW)
    ref = [b["row"] for b in actstore.stream(actstore.open_dataset(str(pooled)), **KW)]
    got = list(DataLoader(s, batch_size=None, num_workers=2))
    assert len(got) == len(ref) and all(torch.equal(a, b["row"]) for a, b in zip(ref, got))
    for b in got:
        assert torch.equal(b["layer_3"][:, 0].long(), b["row"] + 3000)
