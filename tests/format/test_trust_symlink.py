"""Links inside a local dataset that point outside its root are refused; links within it
are followed (issue #11: a link must not make the reader read outside the dataset)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import actstore
from actstore.errors import UnsafePathError
from actstore.format.writer import DatasetWriter

SHARD = "tensors/hidden_layer000_shard000.safetensors"


def _write(path) -> np.ndarray:
    x = np.arange(40 * 8, dtype=np.float32).reshape(40, 8)
    with DatasetWriter(str(path), model="m", layers=[0, 1], dim=8) as w:
        w.add([f"t{i}" for i in range(40)], hidden={0: x, 1: -x}, labels=[i % 2 for i in range(40)])
    return x


def test_a_shard_linked_to_a_file_outside_the_root_is_refused(tmp_path):
    x = _write(tmp_path / "ds")
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(tmp_path / "ds" / SHARD, outside)  # the very same bytes, outside the dataset
    os.symlink(outside, tmp_path / "ds" / SHARD)
    ds = actstore.open_dataset(tmp_path / "ds")
    with pytest.raises(UnsafePathError, match="hidden_layer000_shard000.*outside the dataset root"):
        ds.layer(0)
    with pytest.raises(UnsafePathError, match="outside the dataset root"):
        ds.get([1, 2], layers=[0])
    np.testing.assert_array_equal(ds.layer(1), -x)  # the other files still read


def test_a_relative_link_climbing_out_of_the_root_is_refused(tmp_path):
    _write(tmp_path / "ds")
    shutil.move(tmp_path / "ds" / SHARD, tmp_path / "x.safetensors")
    os.symlink("../../x.safetensors", tmp_path / "ds" / SHARD)
    with pytest.raises(UnsafePathError, match="outside the dataset root"):
        actstore.open_dataset(tmp_path / "ds").layer(0)


def test_links_within_the_root_and_a_linked_root_are_followed(tmp_path):
    x = _write(tmp_path / "ds")
    os.makedirs(tmp_path / "ds" / "store")
    shutil.move(tmp_path / "ds" / SHARD, tmp_path / "ds" / "store" / "s0.safetensors")
    os.symlink("../store/s0.safetensors", tmp_path / "ds" / SHARD)
    os.symlink(tmp_path / "ds", tmp_path / "link-to-ds")
    for root in (tmp_path / "ds", tmp_path / "link-to-ds"):
        ds = actstore.open_dataset(root)
        np.testing.assert_array_equal(ds.layer(0), x)
        np.testing.assert_array_equal(ds.get([3, 1], layers=[0])[:, 0], x[[3, 1]])


def test_a_hub_cache_snapshot_links_into_its_blobs_only(tmp_path):
    """``snapshot_download`` lays a dataset out as links into the repo's ``blobs`` folder:
    those are followed; a link from the snapshot to anywhere else is still refused."""
    x = _write(tmp_path / "built")
    repo = tmp_path / "hub" / "datasets--org--name"
    snap = repo / "snapshots" / ("ab" * 20)
    os.makedirs(repo / "blobs")
    for d, _, names in os.walk(tmp_path / "built"):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), tmp_path / "built")
            blob = repo / "blobs" / rel.replace("/", "_")
            shutil.copy(os.path.join(d, n), blob)
            os.makedirs((snap / rel).parent, exist_ok=True)
            os.symlink(os.path.relpath(blob, (snap / rel).parent), snap / rel)
    np.testing.assert_array_equal(actstore.open_dataset(snap).layer(0), x)
    os.remove(snap / SHARD)
    shutil.copy(tmp_path / "built" / SHARD, repo / "elsewhere.safetensors")
    os.symlink(repo / "elsewhere.safetensors", snap / SHARD)
    with pytest.raises(UnsafePathError, match="outside the dataset root"):
        actstore.open_dataset(snap).layer(0)
