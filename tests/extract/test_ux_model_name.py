"""No local path is recorded as the model's name; ``model_name=`` names it (issue 12, scope 3)."""

from __future__ import annotations

import pytest

import actstore
from actstore.errors import InvalidArgumentError
from actstore.hub.card import build_dataset_card


def test_local_folder_records_its_recorded_hub_name_not_the_path(tmp_path, minilm_path):
    ds = actstore.extract(minilm_path, ["hello world"], out=str(tmp_path / "ds"), layers=[0],
                          progress=False)
    assert ds.info.model == "nreimers/MiniLM-L6-H384-uncased"
    import pyarrow.parquet as pq

    raw = pq.read_schema(tmp_path / "ds" / "index" / "train-00000-of-00001.parquet").metadata
    assert not any(minilm_path.encode() in v for v in raw.values())
    card = build_dataset_card(ds.info, "org/acts")
    assert "huggingface.co//" not in card and minilm_path not in card


def test_local_folder_without_a_recorded_name_records_the_folder_name(tmp_path, gpt2):
    ds = actstore.extract(gpt2, ["hello world"], out=str(tmp_path / "ds"), layers=[0],
                          progress=False)
    assert ds.info.model == "tiny-gpt2"
    assert str(tmp_path) not in repr(ds.info.extraction)


def test_model_name_is_recorded(tmp_path, gpt2_path):
    ds = actstore.extract(gpt2_path, ["hello world"], out=str(tmp_path / "ds"), layers=[0],
                          progress=False, model_name="me/tiny-gpt2")
    assert ds.info.model == "me/tiny-gpt2"
    assert ds.info.extraction["run"]["model"] == "me/tiny-gpt2"


def test_a_path_as_model_name_is_refused(tmp_path, gpt2_path):
    with pytest.raises(InvalidArgumentError, match="looks like a local path"):
        actstore.extract(gpt2_path, ["hello"], out=str(tmp_path / "ds"), model_name="/tmp/x",
                         progress=False)


def test_cli_model_name(tmp_path, gpt2_path):
    from actstore.cli import main

    prompts = tmp_path / "p.txt"
    prompts.write_text("hello world\nthe cat sat\n")
    out = tmp_path / "ds"
    assert main(["extract", gpt2_path, str(prompts), "--out", str(out), "--layers", "0",
                 "--model-name", "me/g2", "--no-progress"]) == 0
    assert actstore.open_dataset(out).info.model == "me/g2"


def test_card_never_links_a_local_path():
    from actstore.hub.card import model_link

    assert model_link("/tmp/site-packages/m/model") == "`/tmp/site-packages/m/model`"
    assert model_link("org/m") == "[org/m](https://huggingface.co/org/m)"
