"""Cache poisoning: a stranger's dataset that claims the victim's sha256s or ETag must never
make the victim read the stranger's bytes or index; remote verify checks the remote."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

import actstore
from actstore.cache import UnifiedCache
from actstore.cli import main
from actstore.format.reader import INDEX_PATH

ROWS, DIM = 1000, 32


def _write(path: str, write_ds, *, seed: int = 0, value: float | None = None, flip_labels: bool = False):
    arrays = write_ds(path, rows=ROWS, dim=DIM, shard_bytes=ROWS * DIM * 4 // 2, seed=seed)
    if value is None and not flip_labels:
        return arrays
    from actstore.format.writer import DatasetWriter

    fill = {L: (np.full_like(a, value) if value is not None else a) for L, a in arrays.items()}
    with DatasetWriter(path, model="test/model", layers=list(fill), dim=DIM, dtype="float32",
                       pooling="last_token", shard_bytes=ROWS * DIM * 4 // 2, overwrite=True) as w:
        for s in range(0, ROWS, 500):
            lab = [(1 - i % 2) if flip_labels else i % 2 for i in range(s, s + 500)]
            w.add([f"prompt {i}" for i in range(s, s + 500)],
                  hidden={L: a[s : s + 500] for L, a in fill.items()}, labels=lab)
    return fill


def _claim_files_of(evil: str, victim: str) -> None:
    """Rewrite ``evil``'s index so its actstore:files claims the victim's sizes and sha256s."""
    vmeta = pq.read_schema(os.path.join(victim, INDEX_PATH)).metadata
    table = pq.read_table(os.path.join(evil, INDEX_PATH))
    meta = dict(table.schema.metadata)
    meta[b"actstore:files"] = vmeta[b"actstore:files"]
    pq.write_table(table.replace_schema_metadata(meta), os.path.join(evil, INDEX_PATH))


def test_a_stranger_claiming_the_victims_sha256s_never_feeds_the_victim_its_bytes(
        served, http_root, tmp_path, write_ds):
    victim, evil = os.path.join(http_root, "org-a"), os.path.join(http_root, "evil-b")
    good = _write(victim, write_ds)
    _write(evil, write_ds, value=666.0)
    _claim_files_of(evil, victim)
    assert json.loads(pq.read_schema(os.path.join(evil, INDEX_PATH)).metadata[b"actstore:files"]) == \
        json.loads(pq.read_schema(os.path.join(victim, INDEX_PATH)).metadata[b"actstore:files"])
    cache = UnifiedCache(tmp_path / "shared-cache")
    rows = np.arange(0, ROWS, 7)
    bad = actstore.open_dataset(f"{served.url}/evil-b", cache=cache)
    assert (bad.get(rows, layers=[0]) == 666.0).all()  # the stranger reads its own bytes ...
    for path in bad.source.files:  # ... and whole files, whose sha256 is computed (and wrong)
        bad.source.read_ranges(path, [(0, bad.source.size(path))])
    cache.flush()
    mine = actstore.open_dataset(f"{served.url}/org-a", cache=UnifiedCache(tmp_path / "shared-cache"))
    np.testing.assert_array_equal(mine.get(rows, layers=[0])[:, 0], good[0][rows])
    np.testing.assert_array_equal(mine.layer(1), good[1])


def test_a_stranger_sending_the_victims_etag_never_replaces_the_victims_index(
        served, http_root, tmp_path, write_ds):
    victim, evil = os.path.join(http_root, "org-c"), os.path.join(http_root, "evil-d")
    _write(victim, write_ds)
    _write(evil, write_ds, flip_labels=True)
    vi, ei = os.path.join(victim, INDEX_PATH), os.path.join(evil, INDEX_PATH)
    assert os.path.getsize(vi) == os.path.getsize(ei)  # same size ...
    st = os.stat(vi)
    os.utime(ei, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and mtime: the server's ETag is the same
    cache = UnifiedCache(tmp_path / "shared-cache")
    bad = actstore.open_dataset(f"{served.url}/evil-d", cache=cache)
    mine = actstore.open_dataset(f"{served.url}/org-c", cache=UnifiedCache(tmp_path / "shared-cache"))
    assert bad.source.index_id == mine.source.index_id  # the claim is identical
    assert list(mine.labels[:4]) == [0, 1, 0, 1] and list(bad.labels[:4]) == [1, 0, 1, 0]


def test_whole_files_proven_on_admission_are_shared_by_content(served, http_root, tmp_path, write_ds):
    import shutil

    one, two = os.path.join(http_root, "copy-1"), os.path.join(http_root, "copy-2")
    good = _write(one, write_ds)
    shutil.copytree(one, two)
    cache = UnifiedCache(tmp_path / "c")
    first = actstore.open_dataset(f"{served.url}/copy-1", cache=cache)
    for path in first.source.files:
        first.source.read_ranges(path, [(0, first.source.size(path))])
    served.reset()
    second = actstore.open_dataset(f"{served.url}/copy-2", cache=UnifiedCache(tmp_path / "c"))
    np.testing.assert_array_equal(second.layer(0), good[0])
    assert served.bytes_sent(prefix="copy-2/tensors") == 0  # proven bytes, shared by content


def _corrupt_remote_shard(root: str) -> str:
    shard = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "tensors")) for f in fs)[0]
    raw = bytearray(open(shard, "rb").read())
    raw[-5] ^= 0x10  # same size, one flipped bit in the data
    with open(shard, "wb") as f:
        f.write(raw)
    return os.path.relpath(shard, root)


def test_remote_verify_of_a_corrupted_copy_checks_the_remote_not_the_cache(
        served, http_root, tmp_path, write_ds, monkeypatch, capsys):
    root = os.path.join(http_root, "to-break")
    _write(root, write_ds)
    url = f"{served.url}/to-break"
    monkeypatch.setenv("ACTSTORE_CACHE_DIR", str(tmp_path / "cache"))
    ds = actstore.open_dataset(url)
    assert ds.verify().ok
    ds.get(np.arange(ROWS), layers=[0, 1])  # every byte of the good copy is cached
    assert main(["verify", url]) == 0
    rel = _corrupt_remote_shard(root)
    capsys.readouterr()
    report = actstore.open_dataset(url).verify()
    assert not report.ok and any(rel in p and "sha256" in p for p in report.problems), report
    assert main(["verify", url]) == 1
    assert "FAILED" in capsys.readouterr().out


@pytest.mark.hub
def test_hf_stranger_claiming_the_victims_sha256s_is_never_served_to_the_victim(hub, tmp_path, write_ds):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.endpoint, token="hf_test_write")
    victim, evil = str(tmp_path / "a"), str(tmp_path / "b")
    good = _write(victim, write_ds)
    _write(evil, write_ds, value=666.0)
    _claim_files_of(evil, victim)
    for repo, folder in (("org/poison-a", victim), ("evil/poison-b", evil)):
        api.create_repo(repo, repo_type="dataset", exist_ok=True)
        api.upload_folder(folder_path=folder, repo_id=repo, repo_type="dataset")
    opts = {"endpoint": hub.endpoint, "token": "hf_test_read"}
    rows = np.arange(0, ROWS, 9)
    cache = UnifiedCache(tmp_path / "cache")
    bad = actstore.open_dataset("hf://datasets/evil/poison-b", storage_options=opts, cache=cache)
    assert (bad.get(rows, layers=[0]) == 666.0).all()
    mine = actstore.open_dataset("hf://datasets/org/poison-a", storage_options=opts,
                                 cache=UnifiedCache(tmp_path / "cache"))
    np.testing.assert_array_equal(mine.get(rows, layers=[0])[:, 0], good[0][rows])
    assert mine.verify().ok  # remote verify of hf:// (read_ranges over several pieces) works
