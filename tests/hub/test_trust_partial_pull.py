"""A partial pull done as the README shows: what it lists, and what verify says about it."""

from __future__ import annotations

from pathlib import Path

import pytest

import actstore
from actstore.testing import HubServer

from .conftest import WRITE

pytest.importorskip("huggingface_hub")


def test_partial_pull_lists_its_layers_and_verifies_clearly(hub: HubServer, repo_id: str, local_ds,
                                                            tmp_path: Path) -> None:
    path, _, hidden, _ = local_ds
    actstore.push_dataset(path, repo_id, token=WRITE, private=True, progress=False)
    ds = actstore.pull_dataset(repo_id, layers=[1], token=WRITE, out=tmp_path / "pulled")
    assert ds.info.layers == (1,) and ds.info.absent_layers == (0, 2)
    assert "layers=[1]" in repr(ds)
    report = ds.verify()
    assert report.ok, str(report)
    assert report.not_pulled == ["view 'last_token' layers [0, 2]", "view 'mean' layers [0, 2]"]
    fresh = actstore.open_dataset(tmp_path / "pulled")
    (tmp_path / "pulled" / "tensors" / "hidden_layer001_shard000.safetensors").unlink()
    report = fresh.verify()  # a pulled file gone missing is a problem, not a note
    assert not report.ok and len(report.problems) == 1, report.problems
    assert "hidden_layer001_shard000" in report.problems[0]
