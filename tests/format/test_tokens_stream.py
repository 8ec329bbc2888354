"""The stream loader's token mode reads through the compact token layout (spec section 5b):
every token once, the stored values, skip_first_token, selections; no per-token array held."""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore.format.writer import DatasetWriter
from actstore.loader.samples import TokenSpace

COUNTS = [1 + (i * 7) % 6 for i in range(30)]


@pytest.fixture(scope="module")
def compact(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokstream") / "ds"
    seqs = {L: [np.stack([np.full(3, r * 100 + t + 1000 * L, np.float32) for t in range(c)])
                for r, c in enumerate(COUNTS)] for L in (0, 3)}
    with DatasetWriter(str(root), model="m", layers=[0, 3], dim=3, pooling="all",
                       shard_bytes=11 * 3 * 4, lmprobe_compat=False) as w:
        for a, b in ((0, 13), (13, len(COUNTS))):
            w.add([f"p{i}" for i in range(a, b)], hidden={L: s[a:b] for L, s in seqs.items()},
                  labels=[i % 2 for i in range(a, b)])
    return root


@pytest.mark.parametrize("skip", [False, True])
def test_every_token_once_with_its_stored_value(compact, skip):
    ds = actstore.open_dataset(str(compact))
    assert "token_shard_ids" not in ds.index.column_names
    s = actstore.stream(ds, layers=[0, 3], tokens=True, batch_size=7, block_rows=4, window=9,
                        skip_first_token=skip, columns=["label"])
    pairs = []
    for b in s:
        r, t = b["row"].numpy(), b["token"].numpy()
        np.testing.assert_array_equal(b["layer_3"][:, 0].numpy(), r * 100 + t + 3000)
        np.testing.assert_array_equal(b["layer_0"][:, 2].numpy(), r * 100 + t)
        np.testing.assert_array_equal(b["label"].numpy(), r % 2)
        pairs += list(zip(r.tolist(), t.tolist()))
    want = [(i, j) for i, c in enumerate(COUNTS) for j in range(1 if skip else 0, c)]
    assert sorted(pairs) == want


def test_a_selection_streams_its_rows_tokens(compact):
    ds = actstore.open_dataset(str(compact)).select([5, 2, 20])
    got = {}
    for b in actstore.stream(ds, layers=3, tokens=True, batch_size=4):
        for r, t, x in zip(b["row"].tolist(), b["token"].tolist(), b["layer_3"][:, 0].tolist()):
            got[(r, t)] = x
    rows = [5, 2, 20]
    assert got == {(i, t): rows[i] * 100 + t + 3000 for i in range(3) for t in range(COUNTS[rows[i]])}


def test_the_token_space_holds_no_per_token_array(compact):
    space = TokenSpace(actstore.open_dataset(str(compact)))
    assert space.layout.flat_shard is None and space.n == sum(COUNTS)
    held = [a.size for a in (space.count, space.cum, space.start, space.layout.cum, space.layout.counts)]
    assert max(held) <= len(COUNTS) + 1
