"""One atomic-write helper (``format/durable.py``) for every single-file replace in actstore:
readers see the old file or the new one, a failed write leaves the old one and no temporary
file, and the file is flushed before it is renamed into place."""

from __future__ import annotations

import os

import pytest

from actstore.format import durable
from actstore.format.durable import atomic_file, atomic_path, atomic_write


def _calls(monkeypatch) -> list[str]:
    order: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(durable, "fsync_file", lambda p: order.append(f"fsync {os.path.basename(p)[:1]}"))
    monkeypatch.setattr(durable, "fsync_dir", lambda p: order.append("fsync dir"))
    monkeypatch.setattr(durable.os, "replace", lambda a, b: (order.append("replace"), real_replace(a, b))[1])
    return order


def test_atomic_write_replaces_durably_in_order(tmp_path, monkeypatch):
    order = _calls(monkeypatch)
    path = tmp_path / "f.json"
    path.write_text("old")
    atomic_write(path, "new")
    assert path.read_text() == "new"
    assert order == ["fsync .", "replace", "fsync dir"]  # the temporary file (".f.json.tmp-...") first
    assert os.listdir(tmp_path) == ["f.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(path) as f:
        f.write(b"half")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        open(tmp, "wb").close()
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == ["f.bin"]


def test_not_durable_skips_the_flushes(tmp_path, monkeypatch):
    order = _calls(monkeypatch)
    atomic_write(tmp_path / "x", b"1", durable=False)
    assert order == ["replace"]


def test_probe_results_are_replaced_through_the_helper(tmp_path, monkeypatch):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from actstore.probe.results import append_results

    path = str(tmp_path / "r.parquet")
    append_results(path, [{"layer": 0, "auroc": 0.5}])
    order = _calls(monkeypatch)
    real = pd.DataFrame.to_parquet

    def failing(self, target, **kw):
        real(self, target, **kw)
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", failing)
    with pytest.raises(OSError):
        append_results(path, [{"layer": 1, "auroc": 0.7}])
    assert os.listdir(tmp_path) == ["r.parquet"]  # no temporary left behind
    assert len(pd.read_parquet(path)) == 1
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    append_results(path, [{"layer": 1, "auroc": 0.7}])
    assert order == ["fsync .", "replace", "fsync dir"]
    assert len(pd.read_parquet(path)) == 2


def test_cache_segments_are_written_through_the_helper(tmp_path, monkeypatch):
    import fsspec

    from actstore.cache.segments import atomic_put

    order = _calls(monkeypatch)
    path = str(tmp_path / "seg" / "a.seg")
    atomic_put(fsspec.filesystem("file"), path, b"abc")
    assert open(path, "rb").read() == b"abc"
    assert order == ["replace"]  # a cache: every piece is checked on read, no flush


def test_atomic_folder_commits_new_and_replaces_in_order(tmp_path):
    from actstore.format.durable import atomic_folder

    target = tmp_path / "p"
    with atomic_folder(target, order=("a", "b")) as staging:
        (tmp_path / staging / "a").write_text("1")
        (tmp_path / staging / "b").write_text("1")
    assert (target / "a").read_text() == "1" and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    import pytest

    with pytest.raises(RuntimeError):
        with atomic_folder(target, order=("a", "b")) as staging:
            (tmp_path / staging / "a").write_text("2")
            raise RuntimeError("disk full")
    assert (target / "a").read_text() == "1"          # nothing replaced on a failure
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # staging removed
    with atomic_folder(target, order=("a", "b")) as staging:
        (tmp_path / staging / "a").write_text("3")
        (tmp_path / staging / "b").write_text("3")
    assert (target / "a").read_text() == (target / "b").read_text() == "3"
