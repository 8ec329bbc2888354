"""Pushing the same extraction again is not "a different dataset" (issue 12, finding 8), and
push/pull take ``progress=`` (issue 12, scope 6)."""

from __future__ import annotations

import os
import time

import pytest

import actstore
from actstore.errors import DatasetExistsError
from actstore.hub import INDEX_PATH
from actstore.hub_client import sha256_file

from .conftest import WRITE, write_dataset

pytestmark = pytest.mark.hub


def test_identical_reextraction_pushes_without_overwrite(hub, repo_id, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(a)
    time.sleep(0.01)
    write_dataset(b)  # the same rows and shards; only created_at differs
    assert sha256_file(os.path.join(a, INDEX_PATH)) != sha256_file(os.path.join(b, INDEX_PATH))
    actstore.push_dataset(a, repo_id, token=WRITE, progress=False)
    actstore.push_dataset(b, repo_id, token=WRITE, progress=False)
    ds = actstore.pull_dataset(repo_id, token=WRITE, out=tmp_path / "p", progress=False)
    assert sha256_file(os.path.join(tmp_path / "p", INDEX_PATH)) == \
        sha256_file(os.path.join(b, INDEX_PATH))
    assert len(ds) == 40
    # the same tensors under other labels are still another dataset
    from actstore.format.writer import DatasetWriter

    texts, hidden, mean = write_dataset(tmp_path / "again")
    c = tmp_path / "c"
    with DatasetWriter(str(c), model="org/tiny-model", layers=[0, 1, 2], dim=16,
                       pooling=["last_token", "mean"], shard_bytes=1024, revision="a" * 40) as w:
        w.add(texts, hidden=hidden, views={"mean": mean},
              labels=[1 - i % 2 for i in range(len(texts))])
    with pytest.raises(DatasetExistsError, match="different dataset"):
        actstore.push_dataset(c, repo_id, token=WRITE, progress=False)


def test_pull_progress_false_shows_no_bars(hub, repo_id, local_ds, tmp_path, capfd):
    path = local_ds[0]
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    capfd.readouterr()
    actstore.pull_dataset(repo_id, token=WRITE, out=tmp_path / "p", progress=False)
    captured = capfd.readouterr()
    assert "it/s" not in captured.err and "%|" not in captured.err
