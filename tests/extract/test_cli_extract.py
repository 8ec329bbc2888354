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


def _has_token_lists(out):
    import os

    import pyarrow.parquet as pq

    from actstore.format.spec import INDEX_PATH

    return "token_shard_ids" in pq.read_schema(os.path.join(out, INDEX_PATH)).names


def test_cli_lmprobe_compat_writes_what_lmprobe_reads(gpt2_path, tmp_path, monkeypatch, capsys):
    import os

    import pytest

    pytest.importorskip("lmprobe")
    import huggingface_hub

    from actstore.format import spec

    # the size rule would write compact only: the flag is what puts the lists in
    monkeypatch.setattr(spec, "COMPAT_MAX_TOKENS", 0)
    src = tmp_path / "p.txt"
    src.write_text("the cat sat\na dog ran in the park\nhello\nis paris the capital of france\n")
    base = [gpt2_path, str(src), "--layers", "0,2", "--pooling", "all", "--shard-size", "2",
            "--device", "cpu", "--no-progress"]
    compact, compat = str(tmp_path / "compact"), str(tmp_path / "compat")
    assert main(["extract", *base, "--out", compact]) == 0
    assert not _has_token_lists(compact)
    assert main(["extract", *base, "--out", compat, "--lmprobe-compat"]) == 0
    assert _has_token_lists(compat)
    ds = actstore.open_dataset(compat)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo_id, filename, **kw: os.path.join(compat, filename))
    from lmprobe import load_activations

    acts = load_activations("org/cli-compat", layers=[0, 2], show_progress=False)
    for L in (0, 2):  # lmprobe reads each row's last token, the same bytes actstore stored
        assert np.array_equal(np.asarray(acts[L]), np.stack([ds.tokens(r, L)[-1] for r in range(len(ds))]))
    # two workers: `actstore merge --lmprobe-compat` writes the lists too
    two = str(tmp_path / "two")
    for rank in ("1", "0"):
        assert main(["extract", *base, "--out", two, "--lmprobe-compat", "--world-size", "2",
                     "--rank", rank]) == 0
    assert main(["merge", two, "--lmprobe-compat"]) == 0
    assert _has_token_lists(two)
    merged = actstore.open_dataset(two)
    for r in range(len(ds)):
        np.testing.assert_array_equal(merged.tokens(r, 2), ds.tokens(r, 2))
    # --no-lmprobe-compat: compact only, whatever the size rule says
    monkeypatch.setattr(spec, "COMPAT_MAX_TOKENS", 1 << 20)
    none = str(tmp_path / "none")
    assert main(["extract", *base, "--out", none, "--no-lmprobe-compat"]) == 0
    assert not _has_token_lists(none)
    capsys.readouterr()
