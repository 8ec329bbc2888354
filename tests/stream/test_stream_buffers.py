"""The fast local path: shuffled windows read straight into their shuffled places, reused
buffers, and batches the caller keeps never written over."""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore.format.writer import DatasetWriter
from actstore.loader import loader as loader_module

DIM = 1024  # 4 KiB float32 rows: local shuffled windows take the scatter path
LAYERS = (0, 3)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    n = 300
    path = str(tmp_path_factory.mktemp("wide") / "ds")
    with DatasetWriter(path, model="m", layers=list(LAYERS), dim=DIM, shard_bytes=DIM * 4 * 37) as w:
        w.add([f"t{i}" for i in range(n)], labels=[i % 3 for i in range(n)],
              hidden={L: np.repeat((np.arange(n) + 1000 * L)[:, None], DIM, axis=1).astype(np.float32)
                      for L in LAYERS})
    return path


def _check_values(batches, numpy: bool) -> None:
    for b in batches:
        rows = b["row"] if numpy else b["row"].numpy()
        for L in LAYERS:
            x = b[f"layer_{L}"] if numpy else b[f"layer_{L}"].numpy()
            assert np.array_equal(x, np.repeat((rows + 1000 * L)[:, None], DIM, axis=1).astype(np.float32))


@pytest.mark.parametrize("numpy", [False, True])
def test_scatter_reads_give_the_gathered_stream(wide, monkeypatch, numpy):
    ds = actstore.open_dataset(wide)
    kw = dict(layers=list(LAYERS), batch_size=14, seed=5, block_rows=9, window=36, numpy=numpy,
              rank=1, world_size=4, columns=["label"])
    fast = actstore.stream(ds, **kw)
    assert fast._scatter
    got = list(fast)  # every batch kept: none may be written over by a later one
    _check_values(got, numpy)
    monkeypatch.setattr(loader_module, "SCATTER_ROW_BYTES", 1 << 40)
    slow = actstore.stream(ds, **kw)
    assert not slow._scatter
    want = list(slow)
    _check_values(want, numpy)
    assert len(got) == len(want) == len(fast)
    for a, b in zip(got, want):
        assert set(a) == set(b)
        for key in a:
            assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key


@pytest.mark.parametrize("scatter", [True, False])
def test_buffers_are_reused_once_the_caller_drops_its_batches(wide, monkeypatch, scatter):
    if not scatter:
        monkeypatch.setattr(loader_module, "SCATTER_ROW_BYTES", 1 << 40)
    ds = actstore.open_dataset(wide)
    s = actstore.stream(ds, layers=[0], batch_size=10, seed=1, block_rows=10, window=20, numpy=True)
    owners, n = set(), 0
    for b in s:  # each batch dropped when the next arrives
        x = b["layer_0"]
        owners.add(x.base.ctypes.data if x.base is not None else x.ctypes.data)
        n += 1
    assert n == 30
    assert len(owners) <= 6, len(owners)  # a handful of buffers, not one per window or batch
    kept = list(actstore.stream(ds, layers=[0], batch_size=10, seed=1, block_rows=10, window=20, numpy=True))
    bases = {b["layer_0"].base.ctypes.data for b in kept}
    assert len(bases) == (15 if scatter else 30)  # kept batches pinned their buffers: fresh ones were made
    rows = np.concatenate([b["row"] for b in kept])
    assert sorted(rows.tolist()) == list(range(300))
    for b in kept:
        assert np.array_equal(b["layer_0"][:, 0], b["row"].astype(np.float32))


def test_token_mode_scatter_reads_give_the_gathered_stream(tmp_path, monkeypatch):
    counts = [1 + (i * 7) % 5 for i in range(40)]
    seqs = {L: [np.repeat((i * 100 + np.arange(c) + 10000 * L)[:, None], DIM, axis=1).astype(np.float32)
                for i, c in enumerate(counts)] for L in LAYERS}
    path = str(tmp_path / "full")
    with DatasetWriter(path, model="m", layers=list(LAYERS), dim=DIM, pooling="all",
                       shard_bytes=DIM * 4 * 23) as w:
        w.add([f"t{i}" for i in range(40)], hidden=seqs, num_tokens=counts)
    ds = actstore.open_dataset(path)
    kw = dict(layers=list(LAYERS), tokens=True, skip_first_token=True, batch_size=11, seed=2,
              block_rows=5, window=15, numpy=True)
    fast = actstore.stream(ds, **kw)
    assert fast._scatter
    got = list(fast)
    monkeypatch.setattr(loader_module, "SCATTER_ROW_BYTES", 1 << 40)
    want = list(actstore.stream(ds, **kw))
    assert len(got) == len(want) > 3
    for a, b in zip(got, want):
        for key in a:
            assert np.array_equal(a[key], b[key]), key
        for L in LAYERS:  # each token's values name its row and position
            assert np.array_equal(a[f"layer_{L}"][:, 0], a["row"] * 100 + a["token"] + 10000 * L)


@pytest.mark.parametrize("shuffle", [True, False])
def test_each_dataloader_worker_reads_only_its_own_rows(wide, tmp_path, monkeypatch, shuffle):
    """Two forked workers: each reads exactly the samples of its own batches (not the whole
    windows they share), and the loader yields the single-process order with the stored values."""
    import os

    import torch
    from torch.utils.data import DataLoader

    log = tmp_path / "reads.txt"

    def counting(real):
        def wrapped(ds, layer, shards, offsets, *args, **kw):
            if layer == LAYERS[0]:
                fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                os.write(fd, f"{os.getpid()} {np.size(offsets)}\n".encode())
                os.close(fd)
            return real(ds, layer, shards, offsets, *args, **kw)
        return wrapped

    monkeypatch.setattr(loader_module, "scatter_locations", counting(loader_module.scatter_locations))
    monkeypatch.setattr(loader_module, "read_locations", counting(loader_module.read_locations))
    ds = actstore.open_dataset(wide)
    # windows of 40 samples hold 4 batches of 10: without the split each worker would read all 40
    kw = dict(layers=list(LAYERS), batch_size=10, seed=3, block_rows=8, window=40, shuffle=shuffle)
    ref = list(actstore.stream(ds, **kw))
    assert actstore.stream(ds, **kw)._scatter == shuffle
    log.unlink()
    s = actstore.stream(ds, **kw)
    got = list(DataLoader(s, batch_size=None, num_workers=2, multiprocessing_context="fork"))
    assert len(got) == len(ref) == 30
    for a, b in zip(ref, got):
        assert torch.equal(a["row"], b["row"]) and torch.equal(a["layer_3"], b["layer_3"])
    _check_values(got, numpy=False)
    per_pid: dict[str, int] = {}
    for pid, n in (line.split() for line in log.read_text().splitlines()):
        per_pid[pid] = per_pid.get(pid, 0) + int(n)
    assert os.getpid() not in {int(p) for p in per_pid}
    # worker w yields batches w, w + 2, ...: 15 batches of 10 rows each, and reads just those
    assert sorted(per_pid.values()) == [150, 150], per_pid


@pytest.mark.parametrize("scatter", [True, False])
def test_buffers_are_kept_across_epochs(wide, monkeypatch, scatter):
    """A stream's second epoch reads into the first epoch's buffers (no fresh allocations,
    hence no page faults), and its values are right."""
    import weakref

    if not scatter:
        monkeypatch.setattr(loader_module, "SCATTER_ROW_BYTES", 1 << 40)
    ds = actstore.open_dataset(wide)
    s = actstore.stream(ds, layers=list(LAYERS), batch_size=10, seed=1, block_rows=10, window=30, numpy=True)
    rows = []
    for b in s:
        rows.append(b["row"])
    pools = s._pools()
    before = [weakref.ref(o) for pool in pools for o in pool._owners]
    assert before
    s.set_epoch(1)
    seen = []
    for b in s:
        _check_values([b], numpy=True)
        seen.append(b["row"])
    assert s._pools() == pools
    after = [o for pool in pools for o in pool._owners]
    assert len(after) == len(before) and all(r() is o for r, o in zip(before, after))
    assert sorted(np.concatenate(seen).tolist()) == list(range(300))
    assert not np.array_equal(np.concatenate(seen), np.concatenate(rows))  # another epoch's order
