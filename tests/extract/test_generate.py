"""The aligned-probing workflow: continuations stored, prompt and generated views correct."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import actstore
from actstore.errors import InvalidArgumentError

GEN = dict(max_new_tokens=5, num_return_sequences=2, do_sample=True, top_p=0.9, temperature=1.0, seed=7)


def _hidden(lm, ids: list[int], layer: int) -> np.ndarray:
    with torch.inference_mode():
        out = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[layer + 1][0].float().numpy()


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_generated_rows_and_views_match_a_single_forward(name, request, tmp_path):
    lm = request.getfixturevalue(name)
    prompts = ["the cat sat", "is paris the capital of france", "hello"]
    ds = actstore.extract(lm, prompts, out=str(tmp_path / "ds"), layers=[1], batch_size=2,
                          pooling=["last_token", "mean"], labels=[1, 0, 1], generate=GEN,
                          progress=False)
    assert len(ds) == 6
    assert ds.info.views == ("last_token", "mean", "generated_last_token", "generated_mean")
    assert ds.column("prompt_index").tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.column("sample").tolist() == [0, 1] * 3
    assert ds.labels.tolist() == [1, 1, 0, 0, 1, 1]
    assert ds.info.extraction["run"]["generate"]["seed"] == 7
    for row in range(6):
        p = prompts[ds.column("prompt_index")[row]]
        assert ds.texts[row] == p + ds.column("continuation")[row]
        n_p, n_g = int(ds.column("prompt_tokens")[row]), int(ds.column("generated_tokens")[row])
        assert 1 <= n_g <= 5 and ds.column("num_tokens")[row] == n_p + n_g
        # re-encode the stored sequence: the prompt's ids plus the generated ids
        prompt_ids = lm.tokenizer(p)["input_ids"]
        assert len(prompt_ids) == n_p
        got = {v: ds.get([row], layers=[1], view=v)[0, 0] for v in ds.info.views}
        seq_prompt = _hidden(lm, prompt_ids, 1)
        np.testing.assert_allclose(got["last_token"], seq_prompt[-1], atol=1e-4)
        np.testing.assert_allclose(got["mean"], seq_prompt.mean(0), atol=1e-4)
        assert not np.allclose(got["generated_mean"], got["mean"])


def test_generation_is_reproducible_by_seed(gpt2, tmp_path):
    kw = dict(layers=[0], generate=GEN, progress=False)
    a = actstore.extract(gpt2, ["the cat sat", "hello"], out=str(tmp_path / "a"), **kw)
    b = actstore.extract(gpt2, ["the cat sat", "hello"], out=str(tmp_path / "b"), **kw)
    assert a.column("continuation").tolist() == b.column("continuation").tolist()
    assert np.array_equal(a.layer(0, view="generated_last_token"), b.layer(0, view="generated_last_token"))


def test_generate_refuses_bad_options(gpt2, minilm, tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"Unknown generate option\(s\) \['beams'\]"):
        actstore.extract(gpt2, ["x"], out=str(tmp_path / "a"), generate={"beams": 2}, progress=False)
    with pytest.raises(InvalidArgumentError, match="needs a causal LM"):
        actstore.extract(minilm, ["x"], out=str(tmp_path / "b"), generate={}, progress=False)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_greedy_generated_views_match_the_whole_sequence(name, request, tmp_path):
    lm = request.getfixturevalue(name)
    prompts = ["the cat sat", "a dog ran in the park today"]
    ds = actstore.extract(lm, prompts, out=str(tmp_path / "ds"), layers=[2], batch_size=2,
                          pooling=["last_token", "mean", "first_token"],
                          generate=dict(max_new_tokens=4), progress=False)
    for row, p in enumerate(prompts):
        ids = lm.tokenizer(p, return_tensors="pt")
        with torch.inference_mode():
            seq = lm.model.generate(**ids, max_new_tokens=4, do_sample=False,
                                    pad_token_id=lm.tokenizer.pad_token_id)[0].tolist()
        n_p, n_g = ids["input_ids"].shape[1], int(ds.column("generated_tokens")[row])
        h = _hidden(lm, seq[: n_p + n_g], 2)
        gen = h[n_p:]
        np.testing.assert_allclose(ds.get([row], [2], view="generated_mean")[0, 0], gen.mean(0), atol=1e-4)
        np.testing.assert_allclose(ds.get([row], [2], view="generated_last_token")[0, 0], gen[-1], atol=1e-4)
        np.testing.assert_allclose(ds.get([row], [2], view="generated_first_token")[0, 0], gen[0], atol=1e-4)
        assert ds.texts[row].startswith(p + " ")         # the tokenizer's spacing is kept
