"""``actstore extract`` / ``actstore merge`` on the command line (in-process and as a module)."""

from __future__ import annotations

import json

import numpy as np

import actstore
from actstore.cli import main
from actstore.cli._extract import parse_layers


def test_parse_layers():
    assert parse_layers("4,8,-1") == ["4", "8", "-1"]
    assert parse_layers("all") == "all"
    assert parse_layers("embeddings,0") == ["embeddings", "0"]


def test_extract_then_merge_two_workers(gpt2_path, tmp_path, capsys):
    src = tmp_path / "p.jsonl"
    rows = [{"text": f"the cat sat {'on the mat ' * (i % 3)}", "label": i % 2, "id": i} for i in range(5)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = str(tmp_path / "ds")
    common = [gpt2_path, str(src), "--out", out, "--layers", "0,-1", "--pooling", "last_token,mean",
              "--label-column", "label", "--dtype", "bfloat16", "--batch-size", "2",
              "--shard-size", "2", "--device", "cpu", "--no-progress", "--world-size", "2"]
    assert main(["extract", *common, "--rank", "0"]) == 0
    assert "run `actstore merge" in capsys.readouterr().out
    assert main(["merge", out]) == 2                                   # rank 1 not done yet
    assert "shards [1] of 3 are not finished" in capsys.readouterr().err
    assert main(["extract", *common, "--rank", "1"]) == 0
    assert main(["merge", out]) == 0
    ds = actstore.open_dataset(out)
    assert ds.info.layers == (0, 3) and ds.info.dtype == "bfloat16"
    assert ds.labels.tolist() == [0, 1, 0, 1, 0] and ds.column("id").tolist() == list(range(5))
    assert np.isfinite(ds.layer(3, view="mean")).all()


def test_cli_errors_are_one_line(gpt2_path, tmp_path, capsys):
    src = tmp_path / "p.txt"
    src.write_text("hello\n")
    code = main(["extract", gpt2_path, str(src), "--out", str(tmp_path / "o"), "--layers", "9",
                 "--device", "cpu", "--no-progress"])
    assert code == 2
    assert capsys.readouterr().err.startswith("actstore: error: Layer 9 is out of range")
    code = main(["extract", gpt2_path, str(src), "--out", str(tmp_path / "o"), "--generate", "[1]",
                 "--device", "cpu", "--no-progress"])
    assert code == 2 and "--generate must be a JSON object" in capsys.readouterr().err
