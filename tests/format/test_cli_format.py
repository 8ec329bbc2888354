"""``actstore info`` and ``actstore verify`` on the command line."""

from __future__ import annotations

import json

import numpy as np

from actstore.cli import main
from actstore.format.writer import DatasetWriter


def _make(path):
    with DatasetWriter(str(path), model="org/m", layers=[0, 1], dim=4, dtype="float16") as w:
        w.add(["a", "b"], hidden={0: np.ones((2, 4)), 1: np.zeros((2, 4))}, labels=[0, 1])


def test_info_table_and_json(tmp_path, capsys):
    _make(tmp_path / "ds")
    assert main(["info", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "org/m" in out and "float16" in out and "0, 1" in out
    assert main(["info", str(tmp_path / "ds"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_prompts"] == 2 and info["layers"] == [0, 1]


def test_verify_exit_codes(tmp_path, capsys):
    _make(tmp_path / "ds")
    assert main(["verify", str(tmp_path / "ds")]) == 0
    shard = tmp_path / "ds/tensors/hidden_layer001_shard000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-2])
    assert main(["verify", str(tmp_path / "ds")]) == 1
    assert "hidden_layer001_shard000" in capsys.readouterr().out


def test_missing_dataset_is_one_line_error(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("actstore: error: ") and "nope" in err
