"""Resume: load_state_dict(state_dict()) at any batch boundary continues with exactly the
batches an uninterrupted run yields, in-process and in a fresh process with DataLoader workers
(plain DataLoader and torchdata's StatefulDataLoader); foreign states are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import actstore
from actstore.errors import ConfigMismatchError, InvalidArgumentError

HERE = Path(__file__).parent
KW = dict(layers=[0, 3], batch_size=12, block_rows=8, window=24, seed=3)




def rows_of(s) -> np.ndarray:
    return np.concatenate([b["row"].numpy() for b in s])


def test_resume_at_every_batch_in_process(pooled):
    ds = actstore.open_dataset(str(pooled))
    s = actstore.stream(ds, **KW)
    s.set_epoch(2)
    full = [b["row"].numpy() for b in s]
    for k in range(len(full) + 1):
        a = actstore.stream(ds, **KW)
        a.set_epoch(2)
        it = iter(a)
        for _ in range(k):
            next(it)
        state = json.loads(json.dumps(a.state_dict()))  # small and JSON-ready
        assert state["batch"] == k and state["epoch"] == 2
        b = actstore.stream(ds, **KW)
        b.load_state_dict(state)
        b.set_epoch(2)  # the state's epoch keeps the resume point
        rest = [x["row"].numpy() for x in b]
        assert len(rest) == len(full) - k
        for x, y in zip(rest, full[k:]):
            assert np.array_equal(x, y)
    # another epoch starts from its beginning
    c = actstore.stream(ds, **KW)
    c.load_state_dict(state)
    c.set_epoch(3)
    assert len(list(c)) == len(full)


def test_resume_state_of_a_finished_epoch_moves_on(pooled):
    ds = actstore.open_dataset(str(pooled))
    s = actstore.stream(ds, **KW)
    list(s)
    state = s.state_dict()
    assert state["batch"] == len(s)
    t = actstore.stream(ds, **KW)
    t.load_state_dict(state)
    assert list(t) == []  # epoch 0 was done: nothing replayed
    t.set_epoch(1)
    assert len(list(t)) == len(s)


def run_worker(tmp_path: Path, name: str, spec: dict) -> np.ndarray:
    spec = {**spec, "out": str(tmp_path / f"{name}.npy")}
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), *sys.path])}
    subprocess.run([sys.executable, str(HERE / "resume_worker.py"), str(p)], check=True, env=env,
                   timeout=300)
    return np.load(spec["out"])


def uninterrupted(path, epoch: int) -> np.ndarray:
    s = actstore.stream(actstore.open_dataset(str(path)), **KW)
    s.set_epoch(epoch)
    batches = list(s)
    return np.stack([np.concatenate([b["row"].numpy() for b in batches]),
                     np.concatenate([b["layer_3"].float().sum(dim=1).numpy() for b in batches])])


@pytest.mark.parametrize("loader", ["plain", "stateful"])
def test_resume_in_a_fresh_process_with_workers(pooled, tmp_path, loader):
    if loader == "stateful":  # a test dependency (pyproject's `test` extra): never skipped
        import torchdata.stateful_dataloader  # noqa: F401
    full = uninterrupted(pooled, 1)
    base = {"dataset": str(pooled), "stream": KW, "loader": loader, "num_workers": 2, "epoch": 1,
            "key": "layer_3"}
    state = str(tmp_path / ("state.pt" if loader == "stateful" else "state.json"))
    first = run_worker(tmp_path, "first", {**base, "take": 7, "save": state})
    rest = run_worker(tmp_path, "rest", {**base, "load": state})
    assert first.shape[1] == 7 * 12
    got = np.concatenate([first, rest], axis=1)
    assert np.array_equal(got, full)  # bit-identical rows and values after the restart


def test_foreign_states_are_refused(pooled, tmp_path):
    from streamdata import write_pooled

    ds = actstore.open_dataset(str(pooled))
    s = actstore.stream(ds, **KW)
    state = s.state_dict()
    other = actstore.open_dataset(str(write_pooled(tmp_path / "other", 300, shard_bytes=4096)))
    with pytest.raises(ConfigMismatchError, match="another dataset"):
        actstore.stream(other, **KW).load_state_dict(state)
    with pytest.raises(ConfigMismatchError, match="another dataset"):
        actstore.stream(ds.select(np.arange(299)), **KW).load_state_dict(state)
    with pytest.raises(ConfigMismatchError, match="world_size=1; this stream has world_size=2"):
        actstore.stream(ds, **KW, rank=0, world_size=2).load_state_dict(state)
    with pytest.raises(ConfigMismatchError, match="seed=3 \\(here 4\\)"):
        actstore.stream(ds, **{**KW, "seed": 4}).load_state_dict(state)
    with pytest.raises(InvalidArgumentError, match="Not a state dict of an actstore stream"):
        s.load_state_dict({"epoch": 0, "batch": 3})
    with pytest.raises(InvalidArgumentError, match="Not a state dict"):
        s.load_state_dict([1, 2])
    with pytest.raises(InvalidArgumentError, match="'worker' must be \\[id, num_workers\\]"):
        s.load_state_dict({**state, "worker": "x"})
    w = actstore.stream(ds, **KW)
    w.load_state_dict({**state, "worker": [0, 3]})  # a DataLoader worker's own state
    with pytest.raises(ConfigMismatchError, match="saved by DataLoader worker 0 of 3; this is worker 0 of 1"):
        iter(w)
    # another rank of the same world size may load it: ranks move in lockstep
    r1 = actstore.stream(ds, **KW, rank=1, world_size=2)
    r1.load_state_dict(actstore.stream(ds, **KW, rank=0, world_size=2).state_dict(batch=2))
    assert len(list(r1)) == len(r1) - 2


def test_resume_reads_only_the_windows_of_its_first_batch(pooled, monkeypatch):
    """Resuming never replays the epoch: before its first batch a resumed stream reads the
    window(s) that batch draws from and the ``prefetch`` windows after them, as a fresh start."""
    from actstore.loader import loader as loader_module

    read: list[int] = []
    real = loader_module.Stream._read_piece

    def counting(self, a, b, *args):
        read.append(b - a)
        return real(self, a, b, *args)

    monkeypatch.setattr(loader_module.Stream, "_read_piece", counting)
    ds = actstore.open_dataset(str(pooled))
    s = actstore.stream(ds, **KW)  # 300 rows: windows of 24 samples, batches of 12
    state = s.state_dict(batch=len(s) - 3)
    r = actstore.stream(ds, **KW)
    r.load_state_dict(state)
    it = iter(r)
    first = next(it)
    it.close()
    n_read = sum(read)
    expected = rows_of(actstore.stream(ds, **KW))[(len(s) - 3) * 12 : (len(s) - 2) * 12]
    assert np.array_equal(first["row"].numpy(), expected)
    assert n_read <= 2 * KW["window"], read  # its window and one prefetched, not the epoch
