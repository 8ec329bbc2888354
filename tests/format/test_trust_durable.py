"""Durable commits: every file is fsync'ed before the rename that publishes it and every
folder that gained a name after it (a power loss cannot be simulated, so ``os.fsync`` is
watched); a probe save interrupted mid-write leaves the old probe intact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import actstore
from actstore import Probe
from actstore.format.writer import DatasetWriter


class _Journal:
    """Records ``("fsync", path)`` and ``("rename", src, dst)`` in the order they happen."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, ...]] = []
        fsync, replace, rename = os.fsync, os.replace, os.rename

        def spy_fsync(fd: int) -> None:
            self.events.append(("fsync", os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))))
            fsync(fd)

        def spy(kind: str, real):
            def move(src, dst, *a, **k):
                real(src, dst, *a, **k)
                self.events.append((kind, os.path.realpath(src), os.path.realpath(dst)))
            return move

        monkeypatch.setattr(os, "fsync", spy_fsync)
        monkeypatch.setattr(os, "replace", spy("rename", replace))
        monkeypatch.setattr(os, "rename", spy("rename", rename))

    def fsynced(self, path: str, after: int = -1, before: int | None = None) -> bool:
        stop = len(self.events) if before is None else before
        return any(e == ("fsync", os.path.realpath(path)) for e in self.events[after + 1 : stop])

    def moved_to(self, dst: str) -> int:
        return max(i for i, e in enumerate(self.events) if e[0] == "rename" and e[2] == os.path.realpath(dst))


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]


@pytest.mark.parametrize("overwrite", [False, True])
def test_every_file_is_fsynced_before_its_rename_and_every_folder_after(tmp_path, monkeypatch, overwrite):
    root = tmp_path / "new" / "ds"
    X = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)

    def write() -> None:
        with DatasetWriter(str(root), model="m", layers=[0, 1], dim=16, shard_bytes=16 * 4 * 20,
                           overwrite=overwrite, logits_k=2) as w:
            w.add([f"p{i}" for i in range(50)], hidden={0: X, 1: X},
                  logits_topk=(np.ones((50, 2), np.float32), np.zeros((50, 2), np.int32)))

    if overwrite:
        write()
    journal = _Journal(monkeypatch)
    write()
    files = _files(root)
    assert len(files) >= 7  # index, 3 shards x 2 layers, logits
    last = -1
    for f in files:
        i = journal.moved_to(str(f))
        src = journal.events[i][1]
        assert journal.fsynced(src, before=i), f"{f} renamed into place without an fsync of its data"
        assert journal.fsynced(str(f.parent), after=i), f"{f.parent} not fsynced after {f.name} arrived"
        last = max(last, i)
    assert journal.fsynced(str(root), after=last)  # the root, after the index (the commit point)
    if not overwrite:
        assert journal.fsynced(str(root.parent), after=last)  # the new dataset folder's own name
    np.testing.assert_array_equal(actstore.open_dataset(str(root)).layer(1), X)


def _probe(seed: int):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((60, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) if seed == 0 else (X[:, 1] > 0).astype(int)
    return Probe(random_state=0).fit(X, y), X


@pytest.mark.parametrize("exists", [False, True])
def test_a_probe_save_is_fsynced_before_and_after_its_rename(tmp_path, monkeypatch, exists):
    probe, _ = _probe(0)
    path = tmp_path / "probes" / "p"
    if exists:
        probe.save(str(path))
    journal = _Journal(monkeypatch)
    probe.save(str(path))
    for name in ("probe.json", "probe.safetensors"):
        f = path / name
        moves = [i for i, e in enumerate(journal.events) if e[0] == "rename"
                 and (e[2] == os.path.realpath(f) or e[2] == os.path.realpath(path))]
        assert moves, f"{f} was written in place, not renamed into place"
        src = journal.events[moves[-1]][1]
        staged = src if src.endswith(name) else os.path.join(src, name)
        assert journal.fsynced(staged, before=moves[-1]), f"{name} renamed without an fsync"
        assert journal.fsynced(str(path if exists else path.parent), after=moves[-1])
    assert sorted(os.listdir(path.parent)) == ["p"]  # no staging folder left


def test_a_probe_save_interrupted_mid_write_leaves_the_old_probe_intact(tmp_path, monkeypatch):
    old, X = _probe(0)
    new, _ = _probe(1)
    path = tmp_path / "p"
    old.save(str(path))
    before = {n: (path / n).read_bytes() for n in os.listdir(path)}
    real_dump = json.dump

    def dies_half_way(obj, f, **kw):
        text = json.dumps(obj, **kw)
        f.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", dies_half_way)
    with pytest.raises(OSError, match="No space"):
        new.save(str(path))
    monkeypatch.setattr(json, "dump", real_dump)
    assert {n: (path / n).read_bytes() for n in os.listdir(path)} == before
    assert [n for n in os.listdir(tmp_path) if n != "p"] == []  # the staging folder is gone
    np.testing.assert_array_equal(actstore.Probe.load(str(path)).predict(X), old.predict(X))
