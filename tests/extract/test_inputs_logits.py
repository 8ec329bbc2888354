"""Prompt files, templates, top-k logits, perplexity and the progress bar."""

from __future__ import annotations

import copy
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import actstore
from actstore.errors import InvalidArgumentError
from actstore.extraction.inputs import read_prompts

ROWS = [
    {"text": "the cat sat", "label": 1, "source": "a"},
    {"text": "hello world", "label": 0, "source": "b"},
    {"text": "why is the sky blue", "label": 1, "source": "c"},
]


def _write(path, kind):
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif kind == "csv":
        path.write_text("text,label,source\n" + "".join(f"{r['text']},{r['label']},{r['source']}\n" for r in ROWS))
    elif kind == "parquet":
        pq.write_table(pa.Table.from_pylist(ROWS), path)


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_table_files_keep_labels_and_metadata(tmp_path, gpt2, kind):
    path = tmp_path / f"prompts.{kind}"
    _write(path, kind)
    ds = actstore.extract(gpt2, str(path), out=str(tmp_path / "ds"), layers=[0],
                          label_column="label", progress=False)
    assert ds.texts == [r["text"] for r in ROWS]
    assert ds.labels.tolist() == [1, 0, 1]
    assert ds.column("source").tolist() == ["a", "b", "c"]


def test_txt_file_one_prompt_per_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("first prompt\n\nsecond prompt\n")
    assert read_prompts(str(path)).texts == ["first prompt", "second prompt"]


def test_missing_columns_and_unknown_files(tmp_path):
    path = tmp_path / "p.jsonl"
    _write(path, "jsonl")
    with pytest.raises(InvalidArgumentError, match=r"has no column 'prompt'; its columns are \['label', 'source', 'text'\]"):
        read_prompts(str(path), text_column="prompt")
    with pytest.raises(InvalidArgumentError, match="no label column 'y'"):
        read_prompts(str(path), label_column="y")
    other = tmp_path / "p.xlsx"
    other.write_text("x")
    with pytest.raises(InvalidArgumentError, match=r"expected a .txt, .jsonl, .csv or .parquet"):
        read_prompts(str(other))
    with pytest.raises(InvalidArgumentError, match="neither a list of strings nor an existing file"):
        read_prompts("no-such-file.jsonl")


def test_template_is_applied_and_recorded(tmp_path, gpt2):
    ds = actstore.extract(gpt2, ["the cat sat"], out=str(tmp_path / "ds"), layers=[0],
                          template="Q: {prompt} A:", progress=False)
    assert ds.texts == ["Q: the cat sat A:"]
    assert ds.column("prompt").tolist() == ["the cat sat"]
    assert ds.info.extraction["run"]["template"] == "Q: {prompt} A:"
    with pytest.raises(InvalidArgumentError, match="template must contain '{prompt}'"):
        actstore.extract(gpt2, ["x"], out=str(tmp_path / "b"), template="Q:", progress=False)


def test_chat_template(tmp_path, gpt2):
    lm = copy.copy(gpt2)
    lm.tokenizer = copy.deepcopy(gpt2.tokenizer)
    with pytest.raises(InvalidArgumentError, match="has no chat template"):
        actstore.extract(lm, ["x"], out=str(tmp_path / "a"), chat_template=True, progress=False)
    lm.tokenizer.chat_template = "{% for m in messages %}user: {{ m['content'] }}{% endfor %} assistant:"
    ds = actstore.extract(lm, ["the cat sat"], out=str(tmp_path / "b"), layers=[0],
                          chat_template=True, progress=False)
    assert ds.texts == ["user: the cat sat assistant:"]
    assert ds.info.extraction["run"]["chat_template"] is True


def test_topk_logits_and_perplexity_match_unbatched(tmp_path, llama, prompts):
    ds = actstore.extract(llama, prompts, out=str(tmp_path / "ds"), layers=[1], logits_k=5,
                          perplexity=True, batch_size=3, progress=False)
    values, indices = ds.logits_topk()
    for row, text in enumerate(prompts):
        ids = llama.tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            logits = llama.model(**ids).logits[0].float()
        top = logits[-1].topk(5)
        np.testing.assert_allclose(values[row], top.values.numpy(), atol=1e-4)
        assert indices[row].tolist() == top.indices.tolist()
        nll = torch.nn.functional.cross_entropy(logits[:-1], ids["input_ids"][0, 1:])
        assert ds.column("perplexity")[row] == pytest.approx(float(torch.exp(nll)), rel=1e-4)


def test_logits_need_a_causal_lm(tmp_path, minilm):
    with pytest.raises(InvalidArgumentError, match="need a causal LM with its LM head"):
        actstore.extract(minilm, ["x"], out=str(tmp_path / "a"), logits_k=3, progress=False)


def test_progress_bar_reports_prompts_and_tokens(tmp_path, gpt2, prompts, capsys):
    actstore.extract(gpt2, prompts, out=str(tmp_path / "a"), layers=[0], progress=True)
    err = capsys.readouterr().err
    assert "8/8" in err and "prompt/s" in err and "tok/s" in err
    actstore.extract(gpt2, prompts, out=str(tmp_path / "b"), layers=[0], progress=False)
    assert capsys.readouterr().err == ""
