"""#16.5: the dataset card carries a per-layer summary, the label balance and a sweep plot, and
``datasets.load_dataset(repo)`` keeps working on it (both Hub modes, see conftest)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

import actstore
from actstore.errors import InvalidArgumentError

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


_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def test_sweep_plot_is_pushed_and_shown_in_the_card(hub, repo_id: str, local_ds, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from huggingface_hub import hf_hub_download

    path, texts, _, _ = local_ds
    plot = tmp_path / "sweep.png"
    plot.write_bytes(_PNG)
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False, sweep_plot=plot)
    card = Path(hf_hub_download(repo_id, "README.md", repo_type="dataset", token=WRITE,
                                local_dir=tmp_path / "card")).read_text()
    assert "## Probe sweep" in card and "](images/sweep.png)" in card
    got = hf_hub_download(repo_id, "images/sweep.png", repo_type="dataset", token=WRITE,
                          local_dir=tmp_path / "img")
    assert Path(got).read_bytes() == _PNG
    ds = datasets.load_dataset(repo_id, split="train", token=WRITE,
                               cache_dir=str(tmp_path / "dcache"))
    assert ds["text"] == texts  # the image does not confuse the datasets config


def test_a_sweep_plot_that_is_no_image_is_refused(hub, repo_id: str, local_ds, tmp_path: Path) -> None:
    path, *_ = local_ds
    bad = tmp_path / "sweep.png"
    bad.write_text("not a png")
    hub.reset_counters()
    with pytest.raises(InvalidArgumentError, match="not a PNG, JPEG or SVG"):
        actstore.push_dataset(path, repo_id, token=WRITE, progress=False, sweep_plot=bad)
    assert hub.requests == []


def test_cli_push_takes_a_sweep_plot(hub, repo_id: str, local_ds, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from actstore.cli import main

    monkeypatch.setenv("HF_TOKEN", WRITE)
    path, *_ = local_ds
    (tmp_path / "s.png").write_bytes(_PNG)
    assert main(["push", str(path), repo_id, "--sweep-plot", str(tmp_path / "s.png")]) == 0
    files = hub.store.files(hub.store.load("dataset", repo_id),
                            hub.store.load("dataset", repo_id)["branches"]["main"])
    assert "images/sweep.png" in files
