"""A remote dataset overwritten while it is open is detected, never mixed (issue #11).

Every file is pinned to the version first used: S3 reads carry ``If-Match`` (a replaced
object answers 412), HTTP answers are checked against the pinned ETag, and a Hub dataset is
read at the commit its revision named at open. Real moto S3, real loopback HTTP and Hub.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import actstore
from actstore.cache import UnifiedCache
from actstore.errors import DatasetChangedError

ROWS, DIM = 1000, 512
SHARD = "tensors/hidden_layer000_shard001.safetensors"  # rows 500.. of layer 0


def _write(path: str, write_ds, seed: int = 0) -> dict:
    return write_ds(path, rows=ROWS, dim=DIM, shard_bytes=ROWS * DIM * 4 // 2, seed=seed)


def _upload(fs, local: str, url: str) -> None:
    for d, _, names in os.walk(local):
        for n in names:
            full = os.path.join(d, n)
            fs.put_file(full, f"{url}/{os.path.relpath(full, local)}")


def _flip_bytes(data: bytes) -> bytes:
    """Same size, other tensor bytes (the header stays, so only a version check can tell)."""
    body = bytearray(data)
    body[-4096:] = bytes(b ^ 0xFF for b in body[-4096:])
    return bytes(body)


@pytest.fixture(params=["uncached", "cached"])
def cache_arg(request, tmp_path):
    return False if request.param == "uncached" else UnifiedCache(tmp_path / "cache")


def test_s3_object_overwritten_between_two_reads_raises(s3, tmp_path, write_ds, cache_arg):
    import s3fs

    opts, bucket = s3
    fs = s3fs.S3FileSystem(**opts)
    local = str(tmp_path / "ds")
    arrays = _write(local, write_ds)
    _upload(fs, local, f"{bucket}/ds")
    ds = actstore.open_dataset(f"s3://{bucket}/ds", storage_options=opts, cache=cache_arg)
    np.testing.assert_array_equal(ds.get([600, 601], layers=[0])[:, 0], arrays[0][[600, 601]])
    key = f"{bucket}/ds/{SHARD}"
    fs.pipe_file(key, _flip_bytes(fs.cat_file(key)))
    with pytest.raises(DatasetChangedError, match="hidden_layer000_shard001"):
        ds.get([ROWS - 1], layers=[0])  # bytes not read (nor cached) before


def test_s3_dataset_rewritten_before_a_file_is_first_used_raises(s3, tmp_path, write_ds, cache_arg):
    """A file first touched after an overwrite is the new one: the index (pinned at open)
    is found replaced, so the old index's rows are never paired with new bytes."""
    import s3fs

    opts, bucket = s3
    fs = s3fs.S3FileSystem(**opts)
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    arrays = _write(old, write_ds)
    _write(new, write_ds, seed=1)
    _upload(fs, old, f"{bucket}/ds")
    ds = actstore.open_dataset(f"s3://{bucket}/ds", storage_options=opts, cache=cache_arg)
    np.testing.assert_array_equal(ds.get([3], layers=[0])[:, 0], arrays[0][[3]])
    _upload(fs, new, f"{bucket}/ds")
    with pytest.raises(DatasetChangedError, match="index"):
        ds.get([3], layers=[1])  # layer 1 was never read: its pin is taken now


def test_http_file_overwritten_between_two_reads_raises(served, http_root, tmp_path, write_ds, cache_arg):
    name = f"changed-{tmp_path.name}"
    local = os.path.join(http_root, name)
    arrays = _write(local, write_ds)
    ds = actstore.open_dataset(f"{served.url}/{name}", cache=cache_arg)
    np.testing.assert_array_equal(ds.get([600], layers=[0])[:, 0], arrays[0][[600]])
    path = os.path.join(local, SHARD)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:  # same size, new mtime: the server's ETag changes
        f.write(_flip_bytes(data))
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    with pytest.raises(DatasetChangedError, match="hidden_layer000_shard001"):
        ds.get([ROWS - 1], layers=[0])


@pytest.mark.hub
def test_hub_dataset_pushed_again_while_open_keeps_reading_the_opened_commit(hub, tmp_path, write_ds, cache_arg):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.endpoint, token="hf_test_write")
    repo = f"org/changed-{tmp_path.name[-12:]}"
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    arrays = _write(old, write_ds)
    _write(new, write_ds, seed=1)
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    api.upload_folder(folder_path=old, repo_id=repo, repo_type="dataset")
    opts = {"endpoint": hub.endpoint, "token": "hf_test_read"}
    ds = actstore.open_dataset(f"hf://datasets/{repo}", storage_options=opts, cache=cache_arg)
    np.testing.assert_array_equal(ds.get([3], layers=[0])[:, 0], arrays[0][[3]])
    api.upload_folder(folder_path=new, repo_id=repo, repo_type="dataset")
    rows = np.arange(0, ROWS, 7)
    np.testing.assert_array_equal(ds.get(rows, layers=[1])[:, 0], arrays[1][rows])  # the opened commit
