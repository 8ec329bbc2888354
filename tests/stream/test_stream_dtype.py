"""Dtypes: the stored dtype by default (bfloat16 stays bfloat16, bit for bit as Dataset.torch
reads it), conversions on request, and numpy batches when asked (or torch is missing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import actstore


def test_bf16_stays_bf16_bit_for_bit(pooled_bf16):
    ds = actstore.open_dataset(str(pooled_bf16))
    ref = ds.torch(3)
    assert ref.dtype == torch.bfloat16
    for b in actstore.stream(ds, layers=[3], batch_size=17, block_rows=4, window=12):
        x = b["layer_3"]
        assert x.dtype == torch.bfloat16
        assert torch.equal(x.view(torch.int16), ref[b["row"]].view(torch.int16))


@pytest.mark.parametrize("dtype, want", [("float32", torch.float32), (torch.float16, torch.float16),
                                         ("bfloat16", torch.bfloat16)])
def test_conversions(pooled_bf16, pooled, dtype, want):
    for path in (pooled_bf16, pooled):
        ds = actstore.open_dataset(str(path))
        ref = ds.layer(0).astype(np.float32)
        b = next(iter(actstore.stream(ds, layers=0, batch_size=40, dtype=dtype)))
        assert b["layer_0"].dtype == want
        np.testing.assert_allclose(b["layer_0"].float().numpy(), ref[b["row"].numpy()], rtol=1e-2)


def test_numpy_batches(pooled_bf16, pooled):
    import ml_dtypes

    b = next(iter(actstore.stream(actstore.open_dataset(str(pooled_bf16)), layers=0, numpy=True,
                                  columns=["text", "score"])))
    assert isinstance(b["layer_0"], np.ndarray) and b["layer_0"].dtype == ml_dtypes.bfloat16
    assert b["text"].tolist() == [f"t{i}" for i in b["row"]]
    assert np.array_equal(b["score"], b["row"] / 2)
    c = next(iter(actstore.stream(actstore.open_dataset(str(pooled)), layers=3, numpy=True)))
    assert c["layer_3"].dtype == np.float32 and np.array_equal(c["layer_3"][:, 0], c["row"] + 3000)


def test_is_an_iterable_dataset_with_len(pooled):
    from torch.utils.data import IterableDataset

    s = actstore.stream(actstore.open_dataset(str(pooled)), layers=0, batch_size=64)
    assert isinstance(s, IterableDataset) and len(s) == 5
    assert actstore.loader.stream is not None and isinstance(s, actstore.loader.Stream)


def test_without_torch_it_is_a_plain_iterable_of_numpy_batches(pooled):
    """With torch unimportable the stream is a plain iterable yielding numpy arrays."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, actstore\n"
        f"s = actstore.stream(actstore.open_dataset({str(pooled)!r}), layers=[0, 3], batch_size=64)\n"
        "assert type(s).__mro__[1] is object, type(s).__mro__\n"
        "rows = []\n"
        "for b in s:\n"
        "    assert isinstance(b['layer_3'], np.ndarray) and np.array_equal(b['layer_3'][:, 0], b['row'] + 3000)\n"
        "    rows.append(b['row'])\n"
        "assert sorted(np.concatenate(rows).tolist()) == list(range(300)) and len(s) == 5\n"
        "print('ok')\n"
    )
    root = Path(__file__).parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(root)}, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
