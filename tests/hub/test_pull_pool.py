"""``pull_dataset`` downloads on one pool with no serial phase and no redundant request (#16).

The index does not wait for the repo listing, the shards are queued the moment the index names
them, a classic-LFS file is one GET (no HEAD: the listing already gave its size and sha256),
and every check of the serial version still holds: the sha256 of every byte, the size the
index records, and the sha256 the Hub lists for a file the index cannot describe (itself).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

import actstore
from actstore.errors import IntegrityError
from actstore.hub import INDEX_PATH
from actstore.testing import HubServer

from .conftest import WRITE

LAYER1 = "tensors/hidden_layer001_"


def _resolves(hub: HubServer, repo_id: str) -> list[tuple[str, str]]:
    """``(method, repo path)`` of every ``resolve`` request for ``repo_id``, in order."""
    out = []
    for method, target, _ in hub.requests:
        if f"/{repo_id}/resolve/" in target:
            out.append((method, target.split("/resolve/", 1)[1].split("/", 1)[1]))
    return out


def test_pull_sends_no_more_requests_than_snapshot_download(hub: HubServer, repo_id: str, local_ds,
                                                            tmp_path: Path) -> None:
    from huggingface_hub import snapshot_download

    path, _, hidden, _ = local_ds
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    ds = actstore.pull_dataset(repo_id, layers=[1], views=["last_token"], token=WRITE,
                               out=tmp_path / "warm", progress=False)  # imports, token lookups
    hub.reset_counters()
    snapshot_download(repo_id, repo_type="dataset", allow_patterns=[f"{LAYER1}*", "index/*", "README.md"],
                      token=WRITE, endpoint=hub.endpoint, local_dir=tmp_path / "snap")
    baseline = len(hub.requests)
    hub.reset_counters()
    ds = actstore.pull_dataset(repo_id, layers=[1], views=["last_token"], token=WRITE,
                               out=tmp_path / "p", progress=False)
    np.testing.assert_array_equal(ds.layer(1), hidden[1])
    sent = _resolves(hub, repo_id)
    shards = [p for p in ds.info.files if p.startswith(LAYER1)]
    gets = sorted(p for m, p in sent if m == "GET")
    heads = sorted(p for m, p in sent if m == "HEAD")
    if hub.xet:  # a shard: from the CAS through hf_xet, its Xet hash from the listing
        assert gets == sorted([INDEX_PATH, "README.md"]) and heads == []
    else:  # LFS: each file one GET, no HEAD (the listing gave sizes and sha256s)
        assert gets == sorted([INDEX_PATH, "README.md", *shards]) and heads == []
    assert len(hub.requests) <= baseline, (hub.requests, baseline)


def test_the_index_does_not_wait_for_the_repo_listing(hub: HubServer, repo_id: str, local_ds,
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing is held back until the server has answered the index: a pull whose index
    download waited for the listing (the serial version) never gets there."""
    from huggingface_hub import HfApi

    path, _, hidden, _ = local_ds
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    hub.reset_counters()
    seen: list[bool] = []
    original = HfApi.list_repo_tree

    def held_listing(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
                ("GET", INDEX_PATH) not in _resolves(hub, repo_id)):
            time.sleep(0.01)
        seen.append(("GET", INDEX_PATH) in _resolves(hub, repo_id))
        yield from original(self, *args, **kwargs)

    monkeypatch.setattr(HfApi, "list_repo_tree", held_listing)
    ds = actstore.pull_dataset(repo_id, layers=[1], token=WRITE, out=tmp_path / "p", progress=False)
    np.testing.assert_array_equal(ds.layer(1), hidden[1])
    assert seen == [True]  # one listing, and the index was on its way before it
    assert threading.active_count() < 50  # the pool's threads are gone


def test_a_shard_of_another_size_is_refused_before_download(hub: HubServer, repo_id: str, local_ds,
                                                            tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    path = local_ds[0]
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    target = f"{LAYER1}shard000.safetensors"
    HfApi(token=WRITE).upload_file(path_or_fileobj=(path / target).read_bytes() + b"\0",
                                   path_in_repo=target, repo_id=repo_id, repo_type="dataset")
    hub.reset_counters()
    out = tmp_path / "p"
    with pytest.raises(IntegrityError, match=rf"{target} is \d+ bytes in .*metadata records \d+"):
        actstore.pull_dataset(repo_id, layers=[1], token=WRITE, out=out, progress=False)
    assert not (out / target).exists()
    assert ("GET", target) not in _resolves(hub, repo_id)
    assert hub.bytes_served(repo_id, target) == 0


def test_a_second_pull_into_the_same_folder_downloads_no_shard(hub: HubServer, repo_id: str,
                                                               local_ds, tmp_path: Path) -> None:
    path, _, hidden, _ = local_ds
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    actstore.pull_dataset(repo_id, layers=[1], token=WRITE, out=tmp_path / "p", progress=False)
    hub.reset_counters()
    ds = actstore.pull_dataset(repo_id, layers=[1], token=WRITE, out=tmp_path / "p", progress=False)
    np.testing.assert_array_equal(ds.layer(1), hidden[1])
    assert not [p for _, p in _resolves(hub, repo_id) if p.startswith("tensors/")]
    assert hub.bytes_served(repo_id, "tensors/") == 0
