"""#16.5: the dataset card carries a per-layer summary and the label balance, and
``datasets.load_dataset(repo)`` keeps working on it (both Hub modes, see conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

import actstore

from .conftest import WRITE


def test_card_shows_layers_rows_views_dtype_bytes_and_label_balance(hub, repo_id: str, local_ds,
                                                                    tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from huggingface_hub import hf_hub_download

    path, texts, _, _ = local_ds
    info = actstore.open_dataset(path).info
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    card = Path(hf_hub_download(repo_id, "README.md", repo_type="dataset", token=WRITE,
                                local_dir=tmp_path / "card")).read_text()
    assert "### Per layer" in card and "| layer | rows | views | dtype | bytes |" in card
    for layer in info.layers:
        size = sum(f["size"] for p, f in info.files.items() if f"hidden_layer{layer:03d}_" in p)
        assert f"| {layer} | {len(texts):,} | `last_token`, `mean` | float32 | {size:,} (" in card
    # write_dataset labels rows i % 2: 20 of each
    assert "### Label balance" in card and "| `0` | 20 | 50.0% |" in card and "| `1` | 20 | 50.0% |" in card
    ds = datasets.load_dataset(repo_id, split="train", token=WRITE,
                               cache_dir=str(tmp_path / "dcache"))
    assert ds["text"] == texts
