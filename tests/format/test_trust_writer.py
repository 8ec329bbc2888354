"""DatasetWriter under faults and concurrency: short and failed writes never commit, one writer
per path, and an open reader never mixes two datasets written to one path."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import actstore
from actstore.errors import ConcurrentWriteError, DatasetChangedError, WriteError
from actstore.format import shardfile
from actstore.format.lock import LOCK_FILE
from actstore.format.writer import DatasetWriter

ROOT = str(Path(__file__).resolve().parents[2])
DIM = 64


def _write(path, seed: int, n: int = 40, **kw) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X0, X1 = (rng.standard_normal((n, DIM)).astype(np.float32) for _ in range(2))
    with DatasetWriter(str(path), model=f"m{seed}", layers=[0, 1], dim=DIM, **kw) as w:
        w.add([f"s{seed}-{i}" for i in range(n)], hidden={0: X0, 1: X1}, labels=[i % 2 for i in range(n)])
    return X0, X1


_LIMITED_WRITE = """
    import resource, signal, sys
    import numpy as np
    from actstore.format.writer import DatasetWriter
    path, limit, overwrite = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write() instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        with DatasetWriter(path, model="new", layers=[0, 1], dim=64, overwrite=overwrite) as w:
            w.add(["x"] * 1000, hidden={0: np.ones((1000, 64)), 1: np.ones((1000, 64))})
    except Exception as exc:
        print(type(exc).__name__, exc)
        sys.exit(3)
    print("committed")
"""


def _run_limited(path, limit: int, overwrite: bool) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(_LIMITED_WRITE), str(path), str(limit),
                          "1" if overwrite else "0"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, (out.returncode, out.stdout, out.stderr)
    return out.stdout


@pytest.mark.parametrize("limit", [255_000, 150_000])  # the shard's last write short / mid-file
def test_file_size_limit_never_commits_a_new_dataset(tmp_path, limit):
    # one layer's shard is 256,000 data bytes plus its header; the index stays far below the limit
    path = tmp_path / "ds"
    out = _run_limited(path, limit, overwrite=False)
    assert out.startswith("WriteError"), out
    assert "Nothing was committed" in out or "nothing was committed" in out
    assert not (path / "index").exists() or not any((path / "index").iterdir())
    with pytest.raises(actstore.DatasetNotFoundError):
        actstore.open_dataset(str(path))


def test_file_size_limit_keeps_the_previous_dataset(tmp_path):
    path = tmp_path / "ds"
    X0, X1 = _write(path, seed=1)
    out = _run_limited(path, 255_000, overwrite=True)
    assert out.startswith("WriteError"), out
    ds = actstore.open_dataset(str(path))
    assert ds.info.model == "m1" and len(ds) == 40
    np.testing.assert_array_equal(ds.layer(0), X0)
    np.testing.assert_array_equal(ds.layer(1), X1)
    assert ds.verify().ok
    assert not list(path.glob(".actstore-tmp-*")) and not (path / LOCK_FILE).exists()


def test_enospc_mid_write_aborts_and_the_writer_cannot_commit(tmp_path, monkeypatch):
    path = tmp_path / "ds"
    X0, _ = _write(path, seed=2)
    calls = {"n": 0}

    class FullDisk(io.FileIO):  # a FileIO whose second data write finds the disk full
        def write(self, b):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(b)

    monkeypatch.setattr(shardfile, "open", lambda p, mode, buffering=-1: FullDisk(p, mode), raising=False)
    w = DatasetWriter(str(path), model="new", layers=[0, 1], dim=DIM, overwrite=True)
    with pytest.raises(WriteError, match="No space left"):
        w.add(["a", "b"], hidden={0: np.zeros((2, DIM)), 1: np.zeros((2, DIM))})
    with pytest.raises(actstore.InvalidArgumentError, match="already committed or aborted"):
        w.commit()  # a caller that swallowed the error cannot commit half a batch
    monkeypatch.undo()
    ds = actstore.open_dataset(str(path))
    assert ds.info.model == "m2"
    np.testing.assert_array_equal(ds.layer(0), X0)


def test_exception_during_overwrite_keeps_the_previous_dataset(tmp_path):
    path = tmp_path / "ds"
    X0, X1 = _write(path, seed=3)
    with pytest.raises(RuntimeError, match="boom"):
        with DatasetWriter(str(path), model="new", layers=[0, 1], dim=DIM, overwrite=True) as w:
            w.add(["a"] * 10, hidden={0: np.zeros((10, DIM)), 1: np.zeros((10, DIM))})
            raise RuntimeError("boom")
    ds = actstore.open_dataset(str(path))
    np.testing.assert_array_equal(ds.get(range(40), layers=[0, 1])[:, 1], X1)
    assert ds.verify().ok


_HOLD = """
    import sys, time
    import numpy as np
    from actstore.format.writer import DatasetWriter
    w = DatasetWriter(sys.argv[1], model="first", layers=[0, 1], dim=64)
    w.add(["a"] * 10, hidden={0: np.full((10, 64), 1.0), 1: np.full((10, 64), 1.0)})
    print("ready", flush=True)
    sys.stdin.readline()
    w.add(["b"] * 10, hidden={0: np.full((10, 64), 2.0), 1: np.full((10, 64), 2.0)})
    w.commit()
    print("committed", flush=True)
"""


def _holder(path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_HOLD), str(path)], env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().strip() == "ready", p.stderr.read()
    return p


def test_two_writers_in_two_processes_one_wins(tmp_path):
    path = tmp_path / "ds"
    first = _holder(path)
    try:
        second = subprocess.run(
            [sys.executable, "-c", textwrap.dedent("""
                import sys, numpy as np
                from actstore.format.writer import DatasetWriter
                try:
                    w = DatasetWriter(sys.argv[1], model="second", layers=[0, 1], dim=64, overwrite=True)
                except Exception as exc:
                    print(type(exc).__name__, exc); sys.exit(3)
                w.add(["z"] * 30, hidden={0: np.zeros((30, 64)), 1: np.zeros((30, 64))})
                w.commit()
            """), str(path)],
            env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=120)
        assert second.returncode == 3, (second.stdout, second.stderr)
        assert second.stdout.startswith("ConcurrentWriteError")
        assert "another writer" in second.stdout
        out, err = first.communicate("go\n", timeout=120)
        assert first.returncode == 0 and "committed" in out, err
    finally:
        first.kill()
        first.wait()
    ds = actstore.open_dataset(str(path))
    assert ds.info.model == "first" and len(ds) == 20
    np.testing.assert_array_equal(ds.layer(1)[:, 0], [1.0] * 10 + [2.0] * 10)
    assert ds.verify().ok
    assert not (path / LOCK_FILE).exists()
    assert sorted(p.name for p in path.iterdir()) == ["index", "tensors"]  # nothing else left


def test_lock_is_per_path_in_one_process_and_freed_by_a_killed_writer(tmp_path):
    path = tmp_path / "ds"
    w = DatasetWriter(str(path), model="m", layers=[0], dim=4)
    with pytest.raises(ConcurrentWriteError, match="another writer"):
        DatasetWriter(str(path), model="m", layers=[0], dim=4)
    w.abort()
    holder = _holder(path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert not (path / LOCK_FILE).exists()
    _write(path, seed=4)  # the kernel dropped the dead writer's lock
    assert actstore.open_dataset(str(path)).info.model == "m4"


def test_open_reader_never_mixes_old_texts_with_new_activations(tmp_path):
    path = tmp_path / "ds"
    X0, X1 = _write(path, seed=5)
    ds = actstore.open_dataset(str(path))
    first = ds.layer(0)  # layer 0's shard opened; layer 1's not yet
    time.sleep(0.01)
    _write(path, seed=6, overwrite=True)  # same shapes, other values and texts
    reads = [(lambda: ds.layer(0), X0), (lambda: ds.layer(1), X1),
             (lambda: ds.get([3, 7], layers=[1])[:, 0], X1[[3, 7]])]
    for read, old in reads:
        try:
            got = read()
        except DatasetChangedError as exc:  # failing loudly is allowed
            assert "Open the dataset again" in str(exc)
            continue
        np.testing.assert_array_equal(got, old)  # else: exactly the old data
    np.testing.assert_array_equal(first, X0)
    assert ds.texts[0] == "s5-0"
    fresh = actstore.open_dataset(str(path))
    assert fresh.texts[0] == "s6-0" and fresh.info.model == "m6"


def test_lock_falls_back_to_a_lock_file_where_folders_cannot_be_locked(tmp_path, monkeypatch):
    import fcntl
    import stat

    from actstore.format import lock

    real = fcntl.flock

    def nfs_like(fd, op):  # NFS: flock is a byte-range lock, refused on a read-only folder fd
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EBADF, "Bad file descriptor")
        return real(fd, op)

    monkeypatch.setattr(lock.fcntl, "flock", nfs_like)
    path = tmp_path / "ds"
    w = DatasetWriter(str(path), model="m", layers=[0], dim=4)
    assert (path / LOCK_FILE).read_text() == str(os.getpid())
    with pytest.raises(ConcurrentWriteError, match=f"pid {os.getpid()}"):
        DatasetWriter(str(path), model="m", layers=[0], dim=4)
    w.add(["a"], hidden={0: np.ones((1, 4))})
    w.commit()
    assert not (path / LOCK_FILE).exists()
    assert actstore.open_dataset(str(path)).layer(0).tolist() == [[1.0] * 4]


def test_open_reader_after_an_overwrite_that_removed_its_shards(tmp_path):
    path = tmp_path / "ds"
    X0, _ = _write(path, seed=7, n=40, shard_bytes=20 * DIM * 4)  # two shards per layer
    ds = actstore.open_dataset(str(path))
    np.testing.assert_array_equal(ds.layer(0), X0)
    _write(path, seed=8, n=10, overwrite=True)  # one shard: the old second shards are deleted
    for read, old in [(lambda: ds.layer(0), X0), (lambda: ds.get([35, 2], layers=[0])[:, 0], X0[[35, 2]])]:
        try:
            got = read()
        except DatasetChangedError:
            continue
        np.testing.assert_array_equal(got, old)
    with pytest.raises(DatasetChangedError, match="Open the dataset again"):
        ds.layer(1)  # its files were never used: the replaced index is noticed first
