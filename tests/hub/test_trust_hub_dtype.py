"""``fetch_metadata`` reports the stored dtype (one shard header, read by range), like
``Dataset.info``, and refuses a header that disagrees with recorded metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import actstore
from actstore.errors import IntegrityError
from actstore.format.writer import DatasetWriter

from .conftest import WRITE

pytest.importorskip("huggingface_hub")
INDEX = "index/train-00000-of-00001.parquet"


def _bf16_claiming_float32(path: Path, *, keep_files: bool) -> None:
    """A BF16 dataset whose metadata claims float32 (what lmprobe 0.10.3 itself writes)."""
    with DatasetWriter(str(path), model="m", layers=[0, 1], dim=8, dtype="bfloat16") as w:
        w.add([f"p{i}" for i in range(30)], hidden={L: np.ones((30, 8), np.float32) for L in (0, 1)})
    table = pq.read_table(path / INDEX)
    meta = dict(table.schema.metadata)
    tensors = json.loads(meta[b"lmprobe:tensors"])
    for view in tensors.values():
        if view.get("type") == "hidden":
            view["dtype"] = "float32"
    meta[b"lmprobe:tensors"] = json.dumps(tensors).encode()
    if not keep_files:  # lmprobe-style: no recorded files, the header is the truth
        meta = {k: v for k, v in meta.items() if k != b"actstore:files"}
    pq.write_table(table.replace_schema_metadata(meta), path / INDEX)


def _push(path: Path, repo_id: str) -> None:
    from huggingface_hub import HfApi

    api = HfApi(token=WRITE)
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    api.upload_folder(folder_path=str(path), repo_id=repo_id, repo_type="dataset")


def test_fetch_metadata_reports_the_headers_dtype_not_the_claim(hub, repo_id, tmp_path) -> None:
    path = tmp_path / "ds"
    _bf16_claiming_float32(path, keep_files=False)
    assert actstore.open_dataset(path).info.dtype == "bfloat16"
    _push(path, repo_id)
    hub.reset_counters()
    info = actstore.fetch_metadata(repo_id, token=WRITE)
    assert info.dtype == "bfloat16" and info.num_prompts == 30
    assert 0 < hub.bytes_served(repo_id, "tensors/") <= 1024  # one header, by range


def test_fetch_metadata_refuses_a_header_that_disagrees_with_recorded_metadata(hub, repo_id, tmp_path):
    path = tmp_path / "ds"
    _bf16_claiming_float32(path, keep_files=True)
    with pytest.raises(IntegrityError, match="BF16 disagrees"):
        actstore.open_dataset(path).info  # noqa: B018 - the reader refuses ...
    _push(path, repo_id)
    with pytest.raises(IntegrityError, match="shard000.*BF16 disagrees with the metadata dtype 'float32'"):
        actstore.fetch_metadata(repo_id, token=WRITE)  # ... and so does fetch_metadata


def test_fetch_metadata_reads_the_footer_from_an_arrow_buffer(hub, repo_id, tmp_path, monkeypatch):
    """The exit-134 root cause (a Python file object such as ``io.BytesIO`` released late in
    pyarrow's threads): the footer must reach pyarrow as a native Arrow file."""
    import pyarrow as pa

    path = tmp_path / "ds"
    _bf16_claiming_float32(path, keep_files=False)
    _push(path, repo_id)
    seen, real = [], pq.read_metadata

    def spy(where, *a, **k):
        seen.append(where)
        return real(where, *a, **k)

    monkeypatch.setattr(pq, "read_metadata", spy)
    assert actstore.fetch_metadata(repo_id, token=WRITE).num_prompts == 30
    assert seen and all(isinstance(w, pa.NativeFile) for w in seen), seen
