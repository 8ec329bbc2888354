"""The order guarantees: every sample once per epoch across ranks and workers, equal batch
counts per rank, the same sequence for any num_workers / threads / prefetch, a pure function
of (seed, epoch, plan), and how well it mixes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import actstore
from actstore.loader import Plan


def rows_of(batches) -> list[np.ndarray]:
    return [np.asarray(b["row"]) for b in batches]


def open_(path):
    return actstore.open_dataset(str(path))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_row_once_across_ranks(pooled, world):
    ds = open_(pooled)  # 300 rows: every world size here divides it
    seen, lens = [], set()
    for r in range(world):
        s = actstore.stream(ds, layers=0, batch_size=16, block_rows=7, window=21, rank=r, world_size=world)
        got = rows_of(s)
        lens.add((len(s), len(got)))
        for b in s:  # values say which row a sample came from
            assert torch.equal(b["layer_0"][:, 0].long(), b["row"])
        seen.append(np.concatenate(got))
    assert len(lens) == 1 and next(iter(lens))[0] == next(iter(lens))[1]
    allrows = np.concatenate(seen)
    assert np.array_equal(np.sort(allrows), np.arange(300))


@pytest.mark.parametrize("drop_last", [False, True])
def test_uneven_split_equal_batch_counts(pooled, drop_last):
    ds = open_(pooled).select(np.arange(299))  # 299 rows over 4 ranks
    per = []
    for r in range(4):
        s = actstore.stream(ds, layers=0, batch_size=16, block_rows=5, window=20, rank=r, world_size=4,
                            drop_last=drop_last)
        got = rows_of(s)
        assert len(got) == len(s)
        if drop_last:
            assert all(g.size == 16 for g in got)
        per.append(got)
    assert len({len(p) for p in per}) == 1  # DDP never waits on a rank that ran out
    allrows = np.concatenate([np.concatenate(p) for p in per])
    uniq, counts = np.unique(allrows, return_counts=True)
    if drop_last:
        assert counts.max() == 1 and allrows.size == 4 * (299 // 4 // 16) * 16
    else:  # padded: every row at least once, at most world-1 rows twice
        assert np.array_equal(uniq, np.arange(299)) and allrows.size - 299 <= 3 and counts.max() <= 2


def test_ranks_are_disjoint_contiguous_block_runs(pooled):
    """shuffle=False: rank r reads one contiguous stretch of the dataset."""
    ds = open_(pooled)
    for r in range(3):
        s = actstore.stream(ds, layers=0, batch_size=32, shuffle=False, rank=r, world_size=3)
        assert np.array_equal(np.concatenate(rows_of(s)), np.arange(100 * r, 100 * (r + 1)))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_order_independent_of_num_workers(pooled, workers):
    ds = open_(pooled)
    kw = dict(layers=[0, 3], batch_size=10, block_rows=6, window=18, seed=5, columns=["label"])
    ref = [(b["row"].clone(), b["layer_3"].clone()) for b in actstore.stream(ds, **kw, threads=1, prefetch=0)]
    s = actstore.stream(ds, **kw, threads=3, prefetch=2)
    s.set_epoch(0)
    got = list(DataLoader(s, batch_size=None, num_workers=workers))
    assert len(got) == len(ref) == len(s) == 30
    for (r, x), b in zip(ref, got):
        assert torch.equal(r, b["row"]) and torch.equal(x, b["layer_3"])
        assert torch.equal(b["label"], torch.as_tensor(ds.column("label")[r.numpy()]))


def test_order_is_a_pure_function_of_seed_and_epoch(pooled):
    ds = open_(pooled)
    kw = dict(layers=0, batch_size=25, block_rows=10, window=30)
    a = np.concatenate(rows_of(actstore.stream(ds, **kw, seed=1)))
    b = np.concatenate(rows_of(actstore.stream(open_(pooled), **kw, seed=1)))
    c = np.concatenate(rows_of(actstore.stream(ds, **kw, seed=2)))
    s = actstore.stream(ds, **kw, seed=1)
    s.set_epoch(1)
    d = np.concatenate(rows_of(s))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    assert np.array_equal(np.sort(d), np.arange(300))
    # blocks stay contiguous inside a window: every sample's block is one of the window's blocks
    p = Plan(300, 10, 30, 25, True, 1, 1, 0, False)
    blocks = p.blocks(0)
    win0 = {i // 10 for lo, hi in p.window_pieces(blocks, 0) for i in range(lo, hi)}
    assert {int(i) // 10 for i in a[:30]} == win0 and len(win0) == 3


def lag1_autocorr(labels: np.ndarray) -> float:
    x = labels - labels.mean()
    return float((x[:-1] * x[1:]).sum() / (x * x).sum())


def test_mixing_quality_label_autocorrelation(tmp_path):
    """On a dataset sorted by label (4 classes), consecutive samples' labels correlate about
    block/window: far below storage order (~1), near a full permutation (~0)."""
    from streamdata import write_pooled

    ds = open_(write_pooled(tmp_path / "ds", 4000, shard_bytes=1 << 20))
    labels = ds.column("label").astype(np.float64)
    s = actstore.stream(ds, layers=0, batch_size=500, block_rows=25, window=400, seed=0)
    order = np.concatenate(rows_of(s))
    ours = lag1_autocorr(labels[order])
    full = lag1_autocorr(labels[np.random.default_rng(0).permutation(4000)])
    stored = lag1_autocorr(labels)
    assert stored > 0.99
    assert abs(full) < 0.05
    assert ours < 0.15  # 16 blocks per window: about 1/16
    # a window of one block mixes only inside the block: the correlation stays high
    one = np.concatenate(rows_of(actstore.stream(ds, layers=0, batch_size=500, block_rows=400, window=400)))
    assert lag1_autocorr(labels[one]) > 0.9


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_kept_after_the_epoch_keep_their_values(pooled, shuffle):
    """Window buffers are recycled: a batch must never alias one that is read again."""
    ds = open_(pooled)
    kept = list(actstore.stream(ds, layers=[0, 3], batch_size=7, block_rows=5, window=10, shuffle=shuffle))
    assert sum(b["row"].numel() for b in kept) == 300
    for b in kept:
        assert torch.equal(b["layer_0"][:, 0].long(), b["row"])
        assert torch.equal(b["layer_3"][:, 0].long(), b["row"] + 3000)


def test_spawned_workers_give_the_same_order(pooled):
    """Workers started by spawn (forkserver is Python 3.14's default) get a pickled stream."""
    ds = open_(pooled)
    s = actstore.stream(ds, layers=0, batch_size=50, block_rows=10, window=30)
    ref = [b["row"] for b in s]  # reading first leaves mappings behind: they must not travel
    got = list(DataLoader(s, batch_size=None, num_workers=1, multiprocessing_context="spawn"))
    assert len(got) == len(ref) and all(torch.equal(a, b["row"]) for a, b in zip(ref, got))
