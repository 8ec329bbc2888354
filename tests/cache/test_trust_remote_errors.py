"""Remote reads that used to crash with non-actstore errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

import actstore
from actstore.cache import UnifiedCache
from actstore.errors import ActstoreError


def test_a_range_covering_several_cached_pieces_reads_back_joined(served, http_root, tmp_path, write_ds):
    write_ds(os.path.join(http_root, "pieces"), rows=200, dim=16, shard_bytes=1 << 30)
    ds = actstore.open_dataset(f"{served.url}/pieces", cache=UnifiedCache(tmp_path / "c"))
    src, path = ds.source, sorted(ds.source.files)[0]
    with open(os.path.join(http_root, "pieces", path), "rb") as f:
        want = f.read()
    src.read_ranges(path, [(100, 200)])
    src.read_ranges(path, [(300, 400)])
    (got,) = src.read_ranges(path, [(50, 450)])  # cached, fetched, cached, fetched, ...
    assert got == want[50:450]
    (again,) = src.read_ranges(path, [(100, 400)])  # three cached pieces, no gap
    assert isinstance(again, bytes) and again == want[100:400]


@pytest.mark.hub
def test_verify_of_an_hf_url_after_reads_reports_ok(hub, tmp_path, write_ds, monkeypatch, capsys):
    from huggingface_hub import HfApi

    from actstore.cli import main

    api = HfApi(endpoint=hub.endpoint, token="hf_test_write")
    write_ds(str(tmp_path / "ds"), rows=3000, dim=64, shard_bytes=3000 * 64 * 4 // 3)
    api.create_repo("org/verify-me", repo_type="dataset", exist_ok=True)
    api.upload_folder(folder_path=str(tmp_path / "ds"), repo_id="org/verify-me", repo_type="dataset")
    monkeypatch.setenv("HF_TOKEN", "hf_test_read")
    monkeypatch.setenv("ACTSTORE_CACHE_DIR", str(tmp_path / "cache"))
    ds = actstore.open_dataset("hf://datasets/org/verify-me")
    ds.get(np.arange(0, 3000, 7), layers=[0])  # scattered pieces of each shard are cached
    assert main(["verify", "hf://datasets/org/verify-me"]) == 0
    assert "OK" in capsys.readouterr().out


@pytest.mark.hub
def test_pulling_a_dataset_whose_repo_lacks_a_file_names_the_file(hub, tmp_path, write_ds):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.endpoint, token="hf_test_write")
    write_ds(str(tmp_path / "ds"), rows=100, dim=8)
    api.create_repo("org/incomplete", repo_type="dataset", exist_ok=True)
    api.upload_folder(folder_path=str(tmp_path / "ds"), repo_id="org/incomplete", repo_type="dataset")
    shard = sorted(f for f in api.list_repo_files("org/incomplete", repo_type="dataset")
                   if f.startswith("tensors/"))[0]
    api.delete_file(shard, repo_id="org/incomplete", repo_type="dataset")
    with pytest.raises(ActstoreError, match=rf"{shard} is named by the dataset's metadata but "
                                            r"org/incomplete@\w+ holds no such file"):
        actstore.pull_dataset("org/incomplete", out=tmp_path / "pulled", endpoint=hub.endpoint)
