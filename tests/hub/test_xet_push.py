"""#16.3 / #16.4: push trusts the writer's sha256 (no second hashing pass), checks the Hub's
limits before sending anything, batches many shards with the index and card last, and
``hf://`` reads make few requests. Every test runs with Xet on and off (see conftest)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import actstore
from actstore.errors import HubError, IntegrityError, InvalidArgumentError
from actstore.hub_client import HubLimits, check_hub_limits
from actstore.testing import HubServer

from .conftest import WRITE, write_dataset

INDEX = "index/train-00000-of-00001.parquet"


def _tamper(path: Path, rel: str, *, keep_mtime: bool) -> None:
    """Flip the last byte of ``rel`` (same size); optionally restore its mtime."""
    full = path / rel
    st = os.stat(full)
    data = bytearray(full.read_bytes())
    data[-1] ^= 0xFF
    full.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(full, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        later = os.stat(path / INDEX).st_mtime_ns + 10**9
        os.utime(full, ns=(later, later))


def _pushes(hub: HubServer) -> list[str]:
    return [p for m, p, _ in hub.requests if m == "POST" and ("/preupload/" in p or "/commit/" in p)]


def test_a_file_changed_after_the_index_is_hashed_and_refused(hub: HubServer, repo_id: str,
                                                              local_ds) -> None:
    path, *_ = local_ds
    rel = next(p for p in actstore.open_dataset(path).info.files if p.endswith(".safetensors"))
    _tamper(path, rel, keep_mtime=False)
    hub.reset_counters()
    with pytest.raises(IntegrityError, match=r"modified after the dataset index.*nothing was pushed"):
        actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    assert hub.requests == []  # refused before any request


def test_recorded_sha256_of_an_unchanged_file_is_not_computed_again(hub: HubServer, repo_id: str,
                                                                    tmp_path: Path) -> None:
    """The client is handed the writer's sha256 and does not hash the file itself: a file
    altered behind the writer's back (size and mtime kept) goes up under its recorded sha256,
    which the Hub side then sees (LFS: the server's own check refuses the object; Xet: the CAS
    records the given sha256 and the pull's check refuses the file)."""
    path = tmp_path / "ds"
    write_dataset(path, seed=int.from_bytes(os.urandom(4), "little"))  # bytes no other test pushed
    files = actstore.open_dataset(path).info.files
    rel = next(p for p in files if p.endswith(".safetensors"))
    _tamper(path, rel, keep_mtime=True)
    if not hub.xet:
        with pytest.raises(HubError, match="HTTP 400"):
            actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
        return
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    assert hub.state.cas.lookup(files[rel]["sha256"]) is not None  # the recorded one, not rehashed
    with pytest.raises(IntegrityError, match=rf"{rel}.*metadata records"):
        actstore.pull_dataset(repo_id, token=WRITE, out=tmp_path / "p", progress=False)


def test_hub_limits_are_checked_before_anything_is_sent(hub: HubServer, repo_id: str,
                                                        local_ds) -> None:
    path, *_ = local_ds
    hub.reset_counters()
    with pytest.raises(InvalidArgumentError, match=r"'tensors' would hold \d+ files.*limit of 5 "
                                                   r"files per folder.*bigger shard_bytes"):
        actstore.push_dataset(path, repo_id, token=WRITE, progress=False,
                              limits=HubLimits(files_per_folder=5))
    with pytest.raises(InvalidArgumentError, match=r"limit of 10 files per repo.*shard_bytes"):
        actstore.push_dataset(path, repo_id, token=WRITE, progress=False,
                              limits=HubLimits(files_per_repo=10))
    with pytest.raises(InvalidArgumentError, match=r"per file.*smaller shard_bytes"):
        actstore.push_dataset(path, repo_id, token=WRITE, progress=False,
                              limits=HubLimits(file_bytes=500))
    assert hub.requests == []  # not even the repo was created


def test_check_hub_limits_defaults() -> None:
    check_hub_limits({f"tensors/s{i}.safetensors": 1 for i in range(10_000)}, repo_id="o/r")
    with pytest.raises(InvalidArgumentError, match="10000 files per folder"):
        check_hub_limits({f"tensors/s{i}.safetensors": 1 for i in range(10_001)}, repo_id="o/r")
    with pytest.raises(InvalidArgumentError, match="20 GB per file"):
        check_hub_limits({"tensors/big.safetensors": 20 * 10**9 + 1}, repo_id="o/r")


def test_many_shards_go_in_batches_with_index_and_card_last(hub: HubServer, repo_id: str,
                                                            tmp_path: Path) -> None:
    write_dataset(tmp_path / "ds", n=60, shard_bytes=512)
    n_files = len(actstore.open_dataset(tmp_path / "ds").info.files)
    actstore.push_dataset(tmp_path / "ds", repo_id, token=WRITE, batch_bytes=1 << 30,
                          progress=False)  # batches of batch_files (200) files at most
    repo = hub.store.load("dataset", repo_id)
    commits, sha = [], repo["branches"]["main"]
    while sha:
        commits.append(repo["commits"][sha])
        sha = repo["commits"][sha]["parent"]
    commits = commits[::-1][1:]  # drop the repo's initial commit
    assert n_files > 40 and len(commits) >= 1
    last = commits[-1]["files"]
    assert INDEX in last and "README.md" in last
    assert all(INDEX not in c["files"] and "README.md" not in c["files"] for c in commits[:-1])


def test_hf_get_makes_a_handful_of_requests(hub: HubServer, repo_id: str, tmp_path: Path) -> None:
    """``get()`` of 1 % of the rows over hf:// makes a bounded number of requests (the Hub
    rate-limits resolve calls): the shard's header, then one merged read of the rows (the Hub
    policy of ``format/ranges.py``; more in ``test_range_requests.py``)."""
    _, hidden, _ = write_dataset(tmp_path / "ds", n=400, dim=32, shard_bytes=1 << 20)
    actstore.push_dataset(tmp_path / "ds", repo_id, token=WRITE, progress=False)
    ds = actstore.open_dataset(f"hf://datasets/{repo_id}",
                               storage_options={"token": WRITE, "endpoint": hub.endpoint},
                               cache=False)
    rows = np.arange(0, 400, 100)  # 1 %
    hub.reset_counters()
    np.testing.assert_array_equal(ds.get(rows, layers=[1])[:, 0], hidden[1][rows])
    ranged = [p for m, p, s in hub.requests if m == "GET" and "/resolve/" in p]
    assert len(ranged) == 2  # the shard's header, then one read for the rows
    assert len(hub.requests) <= 5
