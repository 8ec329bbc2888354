"""Streaming statistics are mergeable: split the pass by rows across processes and combine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import actstore
from actstore.format.writer import DatasetWriter
from actstore.probe import accumulate_statistics, load_statistics
from actstore.probe.streaming_stats import block_moments, empty

CLFS = ("ridge", "lda", "mass_mean")


def _dataset(path: str, n: int = 420, dim: int = 10, classes: int = 2, seed: int = 0) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    X = rng.normal(size=(n, 2, dim)) + 50.0
    X[:, :, 0] += y[:, None]
    X[:, 1, 3] += 0.7 * X[:, 1, 4]
    with DatasetWriter(path, model="synthetic", layers=[0, 1], dim=dim, shard_bytes=dim * 4 * 100) as w:
        w.add([f"p{i}" for i in range(n)], hidden={L: X[:, L].astype(np.float32) for L in (0, 1)},
              labels=y.tolist())
    return path, X[:, :, :].astype(np.float32)


def _same(a, b, X) -> None:
    # other blocks, other rounding: LDA's shrinkage uses float32 products of each block
    for key, probe in a.probes.items():
        s, t = probe.decision_function(X[:, key[0]]), b.probes[key].decision_function(X[:, key[0]])
        np.testing.assert_allclose(s, t, rtol=0, atol=(1e-7 if key[1] == "lda" else 1e-9) * np.abs(t).max())


def _exact(X: np.ndarray, ref: np.ndarray):
    from actstore.probe.streaming_stats import Moments

    C, U = X - X.mean(0), X - ref
    return Moments(len(X), X.mean(0), C.T @ C, ref, (U * U).T @ U, (U * U).T @ (U * U))


def test_fourth_moments_move_to_another_shift_exactly():
    from actstore.probe.streaming_stats import shift_fourth

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4)) * [1, 2, 3, 4] + 7.0
    m = _exact(X, X[:50].mean(0))
    ref = X[200:].mean(0) + 0.3
    A21, A22 = shift_fourth(m, ref)
    want = _exact(X, ref)
    np.testing.assert_allclose(A21, want.A21, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(A22, want.A22, rtol=1e-10)
    # a merge of groups accumulated about different shifts equals one group
    whole = empty(4, True)
    whole.merge(_exact(X[:120], X[:10].mean(0)))
    whole.merge(_exact(X[120:], X[150:].mean(0)))
    one = _exact(X, whole.ref)
    for got, want_ in ((whole.M, one.M), (whole.A21, one.A21), (whole.A22, one.A22)):
        np.testing.assert_allclose(got, want_, rtol=1e-10, atol=1e-8 * np.abs(want_).max())
    # block_moments: the scatter in float64, the fourth moments from float32 products
    blk = block_moments(X, X[:10].mean(0))
    ref_ = _exact(X, X[:10].mean(0))
    np.testing.assert_allclose(blk.M, ref_.M, rtol=1e-12)
    np.testing.assert_allclose(blk.A22, ref_.A22, rtol=1e-5)


@pytest.mark.parametrize("cv", [None, 3])
def test_row_shares_merge_to_the_single_pass_fit(tmp_path, cv):
    path, X = _dataset(str(tmp_path / "ds"), classes=3 if cv else 2)
    ds = actstore.open_dataset(path)
    clfs = ("ridge", "lda") if cv else CLFS
    whole = actstore.fit_streaming(ds, layers="all", classifiers=clfs, cv=cv, block_rows=64)
    parts = [accumulate_statistics(ds, layers="all", classifiers=clfs, cv=cv, block_rows=64, rank=r, world_size=3)
             for r in range(3)]
    assert sum(int(p.covered.sum()) for p in parts) == len(ds)
    merged = (parts[2] + parts[0]) + parts[1]  # any order
    _same(merged.finish(), whole, X)
    if cv:
        for key, probes in whole.fold_probes.items():
            got = merged.finish().fold_probes[key]
            for p, q in zip(got, probes):
                np.testing.assert_allclose(p.pipeline_.W, q.pipeline_.W, rtol=1e-6, atol=1e-10)
    # arbitrary row sets too
    odd = accumulate_statistics(ds, layers=[1], classifiers=clfs, cv=cv, rows=np.arange(1, len(ds), 2))
    even = accumulate_statistics(ds, layers=[1], classifiers=clfs, cv=cv, rows=slice(0, None, 2))
    one = actstore.fit_streaming(ds, layers=[1], classifiers=clfs, cv=cv)
    _same(odd.merge(even).finish(), one, X)


_WORKER = textwrap.dedent("""
    import sys
    import actstore
    from actstore.probe import accumulate_statistics
    ds = actstore.open_dataset(sys.argv[1])
    rank, world = int(sys.argv[2]), int(sys.argv[3])
    accumulate_statistics(ds, layers="all", classifiers=("ridge", "lda", "mass_mean", "logistic_regression"),
                          block_rows=50, rank=rank, world_size=world).save(sys.argv[4])
""")


def test_two_processes_save_and_merge(tmp_path):
    path, X = _dataset(str(tmp_path / "ds"))
    clfs = (*CLFS, "logistic_regression")
    outs = [str(tmp_path / f"stats{r}.npz") for r in range(2)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, path, str(r), "2", outs[r]], env=env,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    ds = actstore.open_dataset(path)
    a, b = (load_statistics(o, ds) for o in outs)
    assert not (a.covered & b.covered).any() and (a.covered | b.covered).all()
    with pytest.raises(actstore.InvalidArgumentError, match="cover 210 of 420 rows"):
        a.finish()
    merged = a.merge(b).finish()
    single = actstore.fit_streaming(ds, layers="all", classifiers=clfs, block_rows=50)
    for key, probe in single.probes.items():
        tol = {"logistic_regression": 1e-6, "lda": 1e-7}.get(key[1], 1e-9)
        t = probe.decision_function(X[:, key[0]])
        np.testing.assert_allclose(merged[key].decision_function(X[:, key[0]]), t, rtol=0,
                                   atol=tol * np.abs(t).max())


def test_mismatched_or_overlapping_statistics_refuse_to_merge(tmp_path):
    path, _ = _dataset(str(tmp_path / "ds"))
    ds = actstore.open_dataset(path)
    a = accumulate_statistics(ds, layers=[0], rows=range(0, 200))
    with pytest.raises(actstore.InvalidArgumentError, match="shared rows"):
        a.merge(accumulate_statistics(ds, layers=[0], rows=range(150, 420)))
    with pytest.raises(actstore.InvalidArgumentError, match="differ in"):
        a.merge(accumulate_statistics(ds, layers=[1], rows=range(200, 420)))
    flipped = 1 - np.asarray(ds.labels)
    with pytest.raises(actstore.InvalidArgumentError, match="labels"):
        a.merge(accumulate_statistics(ds, flipped, layers=[0], rows=range(200, 420)))
    a.save(tmp_path / "a.npz")
    with pytest.raises(actstore.InvalidArgumentError, match="other data or settings"):
        load_statistics(tmp_path / "a.npz", ds, flipped)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(actstore.InvalidArgumentError, match="not a statistics file"):
        load_statistics(tmp_path / "junk.npz", ds)
    # a partial fit only when asked for
    part = a.finish(allow_partial=True)
    X0 = ds.get(np.arange(420), layers=[0])
    mem = actstore.Probe(classifier="ridge", layers=[0]).fit(X0[:200], np.asarray(ds.labels)[:200], layers=[0])
    want = mem.decision_function(X0[:, 0])
    np.testing.assert_allclose(part[0, "ridge"].decision_function(X0[:, 0]), want, atol=1e-6 * np.abs(want).max())  # in-memory: float32
    with pytest.raises(actstore.InvalidArgumentError, match="rows= or rank="):
        accumulate_statistics(ds, rows=[1], rank=0, world_size=2)
    with pytest.raises(actstore.InvalidArgumentError, match="0 <= rank < world_size"):
        accumulate_statistics(ds, rank=2, world_size=2)
    with pytest.raises(actstore.InvalidArgumentError, match="twice"):
        accumulate_statistics(ds, rows=[1, 1])


_GLOO = textwrap.dedent("""
    import sys
    import numpy as np
    import torch.distributed as dist
    import actstore
    from actstore.probe import accumulate_statistics
    dist.init_process_group("gloo")
    ds = actstore.open_dataset(sys.argv[1])
    stats = accumulate_statistics(ds, layers="all", block_rows=50, rank=dist.get_rank(),
                                  world_size=dist.get_world_size())
    fit = stats.all_reduce().finish()
    np.savez(sys.argv[2] + str(dist.get_rank()) + ".npz",
             **{f"{L}-{c}": p.pipeline_.W for (L, c), p in fit.probes.items()})
    dist.destroy_process_group()
""")


def test_torch_distributed_all_reduce_two_ranks(tmp_path):
    pytest.importorskip("torch.distributed")
    path, _ = _dataset(str(tmp_path / "ds"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
            "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _GLOO, path, str(tmp_path / "w")],
                              env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    single = actstore.fit_streaming(actstore.open_dataset(path), layers="all", block_rows=50)
    for r in range(2):
        with np.load(tmp_path / f"w{r}.npz") as z:
            for (L, c), probe in single.probes.items():
                np.testing.assert_allclose(z[f"{L}-{c}"], probe.pipeline_.W, rtol=1e-6, atol=1e-12)
