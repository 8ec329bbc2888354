"""Uncached remote reads transfer about the bytes asked for: no fsspec read-ahead (#13).

fsspec's buffered files read 5 MiB ahead of each read by default; a filesystem without
async range reads (the Hub's) then moved a whole shard to return one row.
"""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore.format.header import HEADER_PROBE_BYTES

ROWS, DIM = 1000, 512  # 2 KiB rows, 1 MB shards


def _write(path: str, write_ds) -> dict:
    return write_ds(path, rows=ROWS, dim=DIM, shard_bytes=ROWS * DIM * 4 // 2)


@pytest.mark.hub
def test_uncached_hub_row_read_transfers_about_the_row(hub, tmp_path, write_ds):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.endpoint, token="hf_test_write")
    repo = f"org/readahead-{tmp_path.name[-12:]}"
    local = str(tmp_path / "ds")
    arrays = _write(local, write_ds)
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    api.upload_folder(folder_path=local, repo_id=repo, repo_type="dataset")
    ds = actstore.open_dataset(f"hf://datasets/{repo}", cache=False,
                               storage_options={"endpoint": hub.endpoint, "token": "hf_test_read"})
    hub.reset_counters()
    np.testing.assert_array_equal(ds.get([700], layers=[0])[:, 0], arrays[0][[700]])
    sent = hub.bytes_served(repo, "tensors/")
    # two header probes (shard 0 gives the dtype; the row is in shard 1) and one row
    assert 0 < sent <= 2 * HEADER_PROBE_BYTES + DIM * 4, sent
