"""Bad arguments to stream() raise clear errors that name the value and the fix."""

from __future__ import annotations

import pytest

import actstore
from actstore.errors import InvalidArgumentError, LayerNotFoundError


@pytest.fixture()
def ds(pooled):
    return actstore.open_dataset(str(pooled))


@pytest.mark.parametrize("kw, match", [
    ({"batch_size": 0}, "batch_size must be a positive integer; got 0"),
    ({"batch_size": -4}, "batch_size must be a positive integer; got -4"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer; got 2.5"),
    ({"block_rows": 64, "window": 32}, r"window \(32 samples\) must be at least one block \(block_rows=64\)"),
    ({"block_rows": 0}, "block_rows must be a positive integer"),
    ({"rank": 2, "world_size": 2}, r"rank must be in \[0, world_size\); got rank=2 with world_size=2"),
    ({"rank": 1}, "Pass both rank= and world_size="),
    ({"world_size": 0, "rank": 0}, "world_size must be a positive integer"),
    ({"columns": ["label", "nope"]}, r"no column\(s\) \['nope'\]"),
    ({"dtype": "int8"}, "must be one of \\['float32', 'float16', 'bfloat16'\\]"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"prefetch": -1}, "prefetch must be a non-negative integer"),
    ({"tokens": True}, "tokens=True needs the full-sequence primary view"),
    ({"skip_first_token": True}, "skip_first_token=True needs tokens=True"),
])
def test_bad_arguments(ds, kw, match):
    with pytest.raises(InvalidArgumentError, match=match):
        actstore.stream(ds, layers=0, **kw)


def test_missing_layer_and_view(ds):
    with pytest.raises(LayerNotFoundError, match="7"):
        actstore.stream(ds, layers=[0, 7])
    with pytest.raises(LayerNotFoundError, match="no view 'mean'"):
        actstore.stream(ds, layers=0, view="mean")


def test_rank_from_environment(ds, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    s = actstore.stream(ds, layers=0)
    assert (s.plan.rank, s.plan.world) == (1, 3)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(InvalidArgumentError, match="rank=3 with world_size=3"):
        actstore.stream(ds, layers=0)
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(InvalidArgumentError, match="RANK='x'"):
        actstore.stream(ds, layers=0)


def test_not_a_dataset():
    with pytest.raises(InvalidArgumentError, match="needs an actstore Dataset"):
        actstore.stream("path/to/ds")


def test_device_inside_workers_is_refused(ds):
    import torch
    from torch.utils.data import DataLoader

    s = actstore.stream(ds, layers=0, device="cuda:0")
    with pytest.raises(Exception, match="cannot be used inside DataLoader workers"):
        list(DataLoader(s, batch_size=None, num_workers=1))
    assert next(iter(actstore.stream(ds, layers=0, device="cpu")))["row"].device == torch.device("cpu")
