"""Bad input: each case is a clear error (class + message) or a documented behaviour."""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore.errors import InvalidArgumentError, LayerNotFoundError
from actstore.extraction.layers import resolve_model_layers


def _run(lm, prompts, tmp_path, **kw):
    return actstore.extract(lm, prompts, out=str(tmp_path / "ds"), progress=False, **kw)


def test_empty_prompt_list(gpt2, tmp_path):
    with pytest.raises(InvalidArgumentError, match="prompt list is empty"):
        _run(gpt2, [], tmp_path)


def test_empty_string_prompts(gpt2, tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"Prompts \[1, 2\] are empty"):
        _run(gpt2, ["ok", "", "   "], tmp_path)


def test_non_string_prompts(gpt2, tmp_path):
    with pytest.raises(InvalidArgumentError, match="prompts must be strings"):
        _run(gpt2, ["ok", 3], tmp_path)


def test_layer_out_of_range(gpt2, tmp_path):
    with pytest.raises(LayerNotFoundError, match=r"Layer 4 is out of range for a model with 4 layers"):
        _run(gpt2, ["hello"], tmp_path, layers=[0, 4])
    with pytest.raises(LayerNotFoundError, match="Layer -5"):
        _run(gpt2, ["hello"], tmp_path, layers=-5)
    with pytest.raises(InvalidArgumentError, match="Unknown layer 'first'"):
        _run(gpt2, ["hello"], tmp_path, layers=["first"])


def test_unknown_pooling(gpt2, tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"Unknown pooling \['max'\]; expected some of last_token"):
        _run(gpt2, ["hello"], tmp_path, pooling=["last_token", "max"])


def test_bad_dtype_and_sizes(gpt2, tmp_path):
    with pytest.raises(InvalidArgumentError, match="dtype must be one of"):
        _run(gpt2, ["hello"], tmp_path, dtype="fp8")
    with pytest.raises(InvalidArgumentError, match="batch_size must be a positive integer; got 0"):
        _run(gpt2, ["hello"], tmp_path, batch_size=0)


def test_model_without_pad_token_falls_back_to_eos(gpt2_path, tmp_path):
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(gpt2_path)
    assert raw.pad_token is None                                   # the fixture has none
    from actstore.extraction import load_model

    lm = load_model(gpt2_path, device="cpu")
    assert lm.tokenizer.pad_token == lm.tokenizer.eos_token == "</s>"
    ds = _run(lm, ["hello", "the cat sat on the mat"], tmp_path, layers=[0])
    assert len(ds) == 2


def test_labels_of_the_wrong_length(gpt2, tmp_path):
    with pytest.raises(InvalidArgumentError, match="labels has 1 entries but there are 2 prompts"):
        _run(gpt2, ["a", "b"], tmp_path, labels=[1])


def test_too_long_prompts_are_truncated_and_counted(gpt2, tmp_path):
    long = " ".join(["the cat sat on the mat"] * 4)                 # 25 tokens with <s>
    ds = _run(gpt2, [long, "hello"], tmp_path, layers=[0], max_length=8)
    assert ds.column("truncated").tolist() == [True, False]
    assert ds.column("num_tokens").tolist() == [8, 2]
    assert ds.info.extraction["run"]["max_length"] == 8


def test_prompt_longer_than_the_model_takes(gpt2, tmp_path):
    long = " ".join(["the cat sat on the mat"] * 12)                # 73 tokens, GPT-2 takes 64
    with pytest.raises(InvalidArgumentError, match="has 73 tokens but the model takes at most 64; pass max_length"):
        _run(gpt2, [long], tmp_path)
    with pytest.raises(InvalidArgumentError, match="max_length=100 is longer than the model takes"):
        _run(gpt2, [long], tmp_path, max_length=100)


def test_unwritable_output(gpt2, tmp_path):
    # /proc refuses new folders even to root, so this runs (and fails properly) under any user
    with pytest.raises(InvalidArgumentError, match="Cannot write to the output folder .*choose a writable"):
        actstore.extract(gpt2, ["hello"], out="/proc/actstore-unwritable/ds", progress=False)


def test_output_that_is_a_file(gpt2, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(InvalidArgumentError, match="Cannot write to the output folder"):
        actstore.extract(gpt2, ["hello"], out=str(target), progress=False)


def test_layer_specs():
    assert resolve_model_layers("all", 4) == [0, 1, 2, 3]
    assert resolve_model_layers("middle", 12) == [5]  # one block, (12 - 1) // 2
    assert resolve_model_layers("last", 12) == [11]
    assert resolve_model_layers([4, 8, -1, 11, "8"], 12) == [4, 8, 11]   # deduplicated
    assert resolve_model_layers(["embeddings", 0], 12) == [-1, 0]
    assert resolve_model_layers("-2", 12) == [10]


def test_embedding_output_is_layer_minus_one(gpt2, tmp_path):
    ds = _run(gpt2, ["hello world"], tmp_path, layers=["embeddings"])
    assert ds.info.layers == ("embeddings",)  # stored as -1, listed by name
    assert np.isfinite(ds.layer("embeddings")).all()


def test_output_under_a_read_only_filesystem(gpt2):
    # /proc refuses new folders even for root, so this case runs everywhere
    with pytest.raises(InvalidArgumentError, match="Cannot write to the output folder '/proc/actstore-test/ds'"):
        actstore.extract(gpt2, ["hello"], out="/proc/actstore-test/ds", progress=False)


def test_prompt_with_no_tokens(llama_path, tmp_path):
    from tokenizers import normalizers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama_path)
    tok._tokenizer.post_processor = None                 # no BOS
    tok._tokenizer.normalizer = normalizers.Replace("~", "")  # a normaliser that drops characters
    assert tok("~~~")["input_ids"] == []
    model = AutoModelForCausalLM.from_pretrained(llama_path)
    with pytest.raises(InvalidArgumentError, match="'~~~' tokenises to no tokens"):
        actstore.extract(model, ["hello", "~~~"], tokenizer=tok, out=str(tmp_path / "ds"), progress=False)


def test_plain_transformers_objects(llama_path, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(llama_path)
    ds = actstore.extract(model, ["hello world"], tokenizer=AutoTokenizer.from_pretrained(llama_path),
                          out=str(tmp_path / "ds"), layers=[1], progress=False)
    assert ds.info.model == "tiny-llama" and ds.info.layers == (1,)  # no local path published
