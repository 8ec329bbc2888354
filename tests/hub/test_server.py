"""The loopback Hub server, driven by the real huggingface_hub client (no mocks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actstore.testing import HubServer

from .conftest import ALICE, READ, WRITE

hf = pytest.importorskip("huggingface_hub")
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download, snapshot_download  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


def _folder(tmp_path: Path) -> Path:
    d = tmp_path / "up"
    (d / "index").mkdir(parents=True)
    (d / "tensors").mkdir()
    (d / "README.md").write_text("---\nlicense: mit\n---\n# hi\n")
    (d / "index" / "a.parquet").write_bytes(b"PAR1" + os.urandom(3000) + b"PAR1")
    (d / "tensors" / "big.safetensors").write_bytes(os.urandom(12 * 1024 * 1024))
    return d


def test_upload_folder_multipart_and_download_roundtrip(api: HfApi, hub: HubServer,
                                                          repo_id: str, tmp_path: Path) -> None:
    api.create_repo(repo_id, repo_type="dataset", private=True)
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)  # 409 carries the url
    d = _folder(tmp_path)
    info = api.upload_folder(folder_path=d, repo_id=repo_id, repo_type="dataset")
    assert len(info.oid) == 40
    files = sorted(api.list_repo_files(repo_id, repo_type="dataset"))
    assert files == [".gitattributes", "README.md", "index/a.parquet", "tensors/big.safetensors"]
    got = hf_hub_download(repo_id, "tensors/big.safetensors", repo_type="dataset",
                          token=WRITE, revision=info.oid)
    assert Path(got).read_bytes() == (d / "tensors" / "big.safetensors").read_bytes()
    # with Xet the download goes through hf_xet (the resolve answer names the Xet file)
    assert hub.bytes_served(repo_id, "tensors/") == (0 if hub.xet else 12 * 1024 * 1024)
    # a rerun uploads nothing and makes no commit
    before = api.dataset_info(repo_id).sha
    uploads, stored = hub.upload_count, hub.xet_bytes_stored
    api.upload_folder(folder_path=d, repo_id=repo_id, repo_type="dataset")
    # with Xet the client re-chunks the files to find out (deduplicated: no new data stored)
    assert hub.xet_bytes_stored == stored and (hub.xet or hub.upload_count == uploads)
    assert api.dataset_info(repo_id).sha == before


def test_snapshot_allow_patterns_fetches_only_those(api: HfApi, hub: HubServer, repo_id: str,
                                                    tmp_path: Path) -> None:
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_folder(folder_path=_folder(tmp_path), repo_id=repo_id, repo_type="dataset")
    local = snapshot_download(repo_id, repo_type="dataset", allow_patterns=["index/*", "*.md"],
                              local_dir=tmp_path / "snap")
    got = sorted(str(p.relative_to(local)) for p in Path(local).rglob("*") if p.is_file()
                 and ".cache" not in p.parts)
    assert got == ["README.md", "index/a.parquet"]
    assert hub.bytes_served(repo_id, "tensors/") == 0


def test_filesystem_range_read_sends_only_the_range(api: HfApi, hub: HubServer, repo_id: str,
                                                    tmp_path: Path) -> None:
    api.create_repo(repo_id, repo_type="dataset")
    d = _folder(tmp_path)
    api.upload_folder(folder_path=d, repo_id=repo_id, repo_type="dataset")
    fs = HfFileSystem(endpoint=hub.endpoint, token=WRITE)
    with fs.open(f"datasets/{repo_id}/tensors/big.safetensors", "rb", cache_type="none") as f:
        f.seek(10 * 1024 * 1024)
        chunk = f.read(4096)
    data = (d / "tensors" / "big.safetensors").read_bytes()
    assert chunk == data[10 * 1024 * 1024: 10 * 1024 * 1024 + 4096]
    assert hub.bytes_served(repo_id) == 4096
    # a range running past the end is clamped
    tail = fs.cat_file(f"datasets/{repo_id}/tensors/big.safetensors", start=len(data) - 10,
                       end=len(data) + 100)
    assert tail == data[-10:]


def test_tree_pagination_and_directories(api: HfApi, hub: HubServer, repo_id: str,
                                         tmp_path: Path) -> None:
    api.create_repo(repo_id, repo_type="dataset")
    d = tmp_path / "many"
    (d / "deep" / "er").mkdir(parents=True)
    for i in range(5):
        (d / "deep" / "er" / f"f{i}.txt").write_text(str(i))
    api.upload_folder(folder_path=d, repo_id=repo_id, repo_type="dataset")
    hub.page_size = 2
    entries = list(api.list_repo_tree(repo_id, repo_type="dataset", recursive=True))
    paths = [e.path for e in entries]
    assert "deep" in paths and "deep/er" in paths and len(paths) == 1 + 2 + 5
    sub = [e.path for e in api.list_repo_tree(repo_id, "deep/er", repo_type="dataset")]
    assert sub == [f"deep/er/f{i}.txt" for i in range(5)]
    assert any("cursor=" in p for _, p, _ in hub.requests)
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo_id, "nope", repo_type="dataset"))
    info = api.get_paths_info(repo_id, ["deep/er/f1.txt", "deep", "missing"], repo_type="dataset")
    assert sorted(i.path for i in info) == ["deep", "deep/er/f1.txt"]


def test_auth_failures_commit_nothing(api: HfApi, hub: HubServer, repo_id: str,
                                      tmp_path: Path) -> None:
    api.create_repo(repo_id, repo_type="dataset", private=True)
    sha = api.dataset_info(repo_id).sha
    f = tmp_path / "x.txt"
    f.write_text("x")
    for token, status in ((False, 401), ("hf_bogus", 401), (READ, 403), (ALICE, 403)):
        with pytest.raises(HfHubHTTPError) as exc:
            HfApi(endpoint=hub.endpoint, token=token).upload_file(
                path_or_fileobj=f, path_in_repo="x.txt", repo_id=repo_id, repo_type="dataset")
        assert exc.value.response.status_code == status
    assert api.dataset_info(repo_id).sha == sha
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.endpoint, token=False).dataset_info(repo_id)  # private
    HfApi(endpoint=hub.endpoint, token=READ).dataset_info(repo_id)
    alice = HfApi(endpoint=hub.endpoint, token=ALICE)
    alice.create_repo("alice/mine", repo_type="dataset", exist_ok=True)
    with pytest.raises(HfHubHTTPError):
        alice.create_repo("someone/else", repo_type="dataset")


def test_revisions_headers_and_missing(api: HfApi, hub: HubServer, repo_id: str,
                                       tmp_path: Path) -> None:
    api.create_repo(repo_id, repo_type="dataset")
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="a.txt", repo_id=repo_id,
                            repo_type="dataset").oid
    api.upload_file(path_or_fileobj=b"v2", path_in_repo="a.txt", repo_id=repo_id,
                    repo_type="dataset")
    old = hf_hub_download(repo_id, "a.txt", repo_type="dataset", revision=first,
                          local_dir=tmp_path / "old")
    assert Path(old).read_bytes() == b"v1"
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(repo_id, revision="0" * 40)
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("org/does-not-exist")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.txt", repo_type="dataset", local_dir=tmp_path / "m")
    with pytest.raises(HfHubHTTPError) as exc:  # stale parent commit
        api.upload_file(path_or_fileobj=b"v3", path_in_repo="a.txt", repo_id=repo_id,
                        repo_type="dataset", parent_commit=first)
    assert exc.value.response.status_code == 412


def test_raw_http_headers_and_ranges(api: HfApi, hub: HubServer, repo_id: str) -> None:
    import httpx2 as httpx

    api.create_repo(repo_id, repo_type="dataset")
    data = bytes(range(256)) * 100
    api.upload_file(path_or_fileobj=data, path_in_repo="d.bin", repo_id=repo_id,
                    repo_type="dataset")
    url = f"{hub.endpoint}/datasets/{repo_id}/resolve/main/d.bin"
    head = httpx.head(url)
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["X-Linked-Size"] == str(len(data)) and len(head.headers["X-Repo-Commit"]) == 40
    r = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert httpx.get(url, headers={"Range": "bytes=-5"}).content == data[-5:]
    bad = httpx.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert bad.status_code == 416 and bad.headers["Content-Range"] == f"bytes */{len(data)}"
    assert httpx.get(f"{hub.endpoint}/api/nope").headers["X-Error-Code"] == "NotFound"


def test_fault_injection_failed_upload_then_dropped_download(api: HfApi, hub: HubServer,
                                                             repo_id: str, tmp_path: Path) -> None:
    api.create_repo(repo_id, repo_type="dataset")
    d = _folder(tmp_path)
    sha = api.dataset_info(repo_id).sha
    hub.fail_uploads(1, times=100)
    # the client wraps an LFS failure; hf_xet reports its failed write-token request
    with pytest.raises((RuntimeError, ConnectionError), match="Error while uploading|xet-write-token"):
        api.upload_folder(folder_path=d, repo_id=repo_id, repo_type="dataset")
    assert api.dataset_info(repo_id).sha == sha
    hub.clear_faults()
    api.upload_folder(folder_path=d, repo_id=repo_id, repo_type="dataset")
    hub.drop_connection("/resolve/", nth=1)
    got = hf_hub_download(repo_id, "tensors/big.safetensors", repo_type="dataset",
                          local_dir=tmp_path / "dl")
    assert Path(got).read_bytes() == (d / "tensors" / "big.safetensors").read_bytes()


def test_datasets_load_dataset_reads_parquet_repo(api: HfApi, hub: HubServer, repo_id: str,
                                                  tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    datasets = pytest.importorskip("datasets")
    api.create_repo(repo_id, repo_type="dataset")
    d = tmp_path / "pq"
    (d / "index").mkdir(parents=True)
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [0, 1, 0]}),
                   d / "index" / "train-00000-of-00001.parquet")
    (d / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
        "    path: index/*.parquet\n---\n# t\n")
    api.upload_folder(folder_path=d, repo_id=repo_id, repo_type="dataset")
    ds = datasets.load_dataset(repo_id, split="train", token=WRITE,
                               cache_dir=str(tmp_path / "dcache"))
    assert ds["text"] == ["a", "b", "c"] and ds["label"] == [0, 1, 0]
