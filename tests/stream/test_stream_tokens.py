"""Token mode on a full-sequence dataset: one sample per token, every token once, values
that match Dataset.tokens, skip_first_token; and a small sparse autoencoder trained one epoch
through DataLoader(num_workers=2)."""

from __future__ import annotations

import numpy as np
import torch
from streamdata import token_counts
from torch.utils.data import DataLoader

import actstore


def test_every_token_once_with_the_stored_values(full):
    ds = actstore.open_dataset(str(full))
    counts = token_counts(40)
    for skip in (False, True):
        s = actstore.stream(ds, layers=[0, 3], tokens=True, batch_size=9, block_rows=5, window=15,
                            skip_first_token=skip, columns=["label"])
        pairs = []
        for b in s:
            r, t = b["row"].numpy(), b["token"].numpy()
            assert np.array_equal(b["layer_3"][:, 0].numpy(), r * 100 + t + 30000)
            assert np.array_equal(b["label"].numpy(), r % 2)
            for i in np.flatnonzero(r == r[0]):  # the reader's own per-token path agrees
                assert np.array_equal(b["layer_0"][i].numpy(), ds.tokens(int(r[0]), 0)[t[i]])
            pairs += list(zip(r.tolist(), t.tolist()))
        want = [(i, j) for i, c in enumerate(counts) for j in range(1 if skip else 0, c)]
        assert sorted(pairs) == want and len(pairs) == len(set(pairs))


def test_tokens_split_over_ranks(full):
    ds = actstore.open_dataset(str(full))
    seen = []
    for r in range(2):
        s = actstore.stream(ds, layers=3, tokens=True, batch_size=8, block_rows=4, window=8,
                            rank=r, world_size=2, drop_last=True)
        seen += [(int(a), int(b)) for x in s for a, b in zip(x["row"], x["token"])]
    assert len(seen) == len(set(seen)) == 2 * ((sum(token_counts(40)) // 2) // 8) * 8


def test_small_sae_trains_one_epoch_with_workers(tmp_path):
    """A plain-torch sparse autoencoder, one epoch of token batches from two workers."""
    from actstore.format.writer import DatasetWriter

    rng = np.random.default_rng(0)
    dim, n = 16, 120
    basis = rng.standard_normal((4, dim)).astype(np.float32)
    seqs = []
    for _ in range(n):  # each token is a sparse mix of 4 directions
        codes = rng.random((6, 4)) * (rng.random((6, 4)) < 0.3)
        seqs.append((codes @ basis).astype(np.float32))
    with DatasetWriter(str(tmp_path / "ds"), model="m", layers=[2], dim=dim, pooling="all",
                       dtype="bfloat16") as w:
        w.add([f"t{i}" for i in range(n)], hidden={2: seqs}, num_tokens=[6] * n)
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    s = actstore.stream(ds, layers=[2], tokens=True, batch_size=64, seed=0, skip_first_token=True)
    torch.manual_seed(0)
    enc, dec = torch.nn.Linear(dim, 32), torch.nn.Linear(32, dim)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=3e-3)
    losses, seen = [], 0
    for epoch in range(3):
        s.set_epoch(epoch)
        for batch in DataLoader(s, batch_size=None, num_workers=2):
            x = batch["layer_2"]
            assert x.dtype == torch.bfloat16  # stored dtype kept
            x = x.float()
            z = torch.relu(enc(x))
            loss = ((dec(z) - x) ** 2).mean() + 1e-3 * z.abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            seen += x.shape[0] if epoch == 0 else 0
    assert seen == n * 5  # one epoch = every token but the first of each row, once
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
