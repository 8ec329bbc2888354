"""The token gathers' fast paths read exactly what the general path reads: scattered ids
(1-D whole-row copies from the mapping), dense ids (run planning), one row's run (one copy),
locally and through a remote byte source, for every float dtype."""

from __future__ import annotations

import os

import fsspec
import numpy as np
import pytest

import actstore
from actstore.format import rows as rowsmod
from actstore.format.writer import DatasetWriter


@pytest.fixture(scope="module", params=["float32", "bfloat16", "float16"])
def pair(request, tmp_path_factory):
    dt = request.param
    root = tmp_path_factory.mktemp(f"gather_{dt}") / "ds"
    rng = np.random.default_rng(3)
    seqs = [rng.standard_normal((int(rng.integers(1, 40)), 4)).astype(np.float32) for _ in range(150)]
    with DatasetWriter(str(root), model="m", layers=[0, 1], dim=4, dtype=dt, pooling="all",
                       shard_bytes=4 * 4 * 400, lmprobe_compat=False) as w:
        w.add([f"p{i}" for i in range(150)], hidden={0: seqs, 1: [s[::-1].copy() for s in seqs]})
    fs = fsspec.filesystem("memory")
    for d, _, files in os.walk(root):
        for f in files:
            rel = os.path.relpath(os.path.join(d, f), root)
            if not rel.startswith("."):
                fs.pipe(f"/gather_{dt}/{rel}", open(os.path.join(d, f), "rb").read())
    local, remote = actstore.open_dataset(str(root)), actstore.open_dataset(f"memory://gather_{dt}")
    flat = np.concatenate([local.tokens(r, 1) for r in range(len(local))])
    return local, remote, flat


@pytest.mark.parametrize("kind", ["scattered", "dense", "duplicates"])
def test_gathers_agree_locally_and_remotely(pair, kind, monkeypatch):
    local, remote, flat = pair
    n = local.num_tokens_total
    rng = np.random.default_rng(8)
    ids = {"scattered": rng.integers(0, n, 500), "dense": rng.permutation(n),
           "duplicates": np.repeat(rng.integers(0, n, 50), 3)}[kind]
    got = local.get_tokens(ids, layers=[0, 1])
    np.testing.assert_array_equal(got[:, 1], flat[ids])
    assert got.tobytes() == remote.get_tokens(ids, layers=[0, 1]).tobytes()
    monkeypatch.setattr(rowsmod, "SMALL_RUN_BYTES", 1)  # no fast path: the general planning
    assert got.tobytes() == local.get_tokens(ids, layers=[0, 1]).tobytes()


def test_a_rows_tokens_are_one_copy_and_agree(pair):
    local, remote, flat = pair
    for r in range(0, len(local), 11):
        a, b = local.token_range(r)
        x = local.tokens(r, 1)
        np.testing.assert_array_equal(x, flat[a:b])
        assert x.tobytes() == remote.tokens(r, 1).tobytes()
        assert local.tokens(r, 1, dtype="float64").dtype == np.float64
