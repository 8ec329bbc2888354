"""Every stored vector equals an unbatched single-prompt forward pass of the same model.

The reference uses ``output_hidden_states`` (not actstore's hooks): ``hidden_states[i + 1]``
is block ``i``'s output and ``hidden_states[0]`` the embedding output. The last block is
left out of the comparison for causal models, whose final ``hidden_states`` entry has the
final norm applied.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import actstore

TOL = 1e-4


def _reference(lm, text: str) -> tuple[list[np.ndarray], int]:
    ids = lm.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        out = lm.model(**ids, output_hidden_states=True)
    return [h[0].float().numpy() for h in out.hidden_states], ids["input_ids"].shape[1]


def _pooled(seq: np.ndarray) -> dict[str, np.ndarray]:
    return {"last_token": seq[-1], "first_token": seq[0], "mean": seq.mean(0)}


@pytest.mark.parametrize("name, layers", [("gpt2", [0, 2]), ("llama", [1, 2]), ("minilm", [0, 3, 5])])
def test_pooled_views_match_unbatched_forward(name, layers, request, tmp_path, prompts):
    lm = request.getfixturevalue(name)
    spec = ["embeddings", *layers]
    ds = actstore.extract(lm, prompts, out=str(tmp_path / "ds"), layers=spec, batch_size=3,
                          pooling=["last_token", "mean", "first_token"], progress=False)
    assert ds.info.layers == ("embeddings", *layers)  # stored as lmprobe's -1, listed by name
    worst = 0.0
    for row, text in enumerate(prompts):
        hs, n_tok = _reference(lm, text)
        assert ds.column("num_tokens")[row] == n_tok
        for L in ds.info.layers:
            want = _pooled(hs[0 if L == "embeddings" else L + 1])
            for view in ("last_token", "mean", "first_token"):
                got = ds.get([row], layers=[L], view=view)[0, 0]
                worst = max(worst, float(np.abs(got - want[view]).max()))
    assert worst <= TOL, f"{name}: max abs diff {worst}"


def test_padding_sides_are_what_the_fixtures_claim(gpt2, llama, minilm):
    # the point of the test above is to cover both sides; make sure it does
    assert gpt2.tokenizer.padding_side == "left" and gpt2.causal
    assert llama.tokenizer.padding_side == "right" and llama.causal
    assert minilm.tokenizer.padding_side == "right" and not minilm.causal


@pytest.mark.parametrize("name", ["gpt2", "minilm"])
def test_full_sequence_matches_unbatched_forward(name, request, tmp_path, prompts):
    lm = request.getfixturevalue(name)
    ds = actstore.extract(lm, prompts, out=str(tmp_path / "ds"), layers=[1], batch_size=4,
                          pooling=["all", "mean"], progress=False)
    assert ds.info.storage == "full_sequence"
    for row, text in enumerate(prompts):
        hs, n_tok = _reference(lm, text)
        tokens = ds.tokens(row, 1)
        assert tokens.shape == (n_tok, hs[2].shape[-1])
        np.testing.assert_allclose(tokens, hs[2], atol=TOL, rtol=0)
        np.testing.assert_allclose(ds.get([row], layers=[1], view="mean")[0, 0], hs[2].mean(0), atol=TOL, rtol=0)


def test_padding_does_not_leak_between_batch_mates(gpt2, tmp_path):
    # a short prompt batched with a long one gives what it gives alone (lmprobe's
    # first_token returned padding here under left padding)
    short, long = "hello", "the quick brown fox jumps over the lazy dog and the cat sat on the mat"
    alone = actstore.extract(gpt2, [short], out=str(tmp_path / "a"), layers=[3],
                             pooling=["first_token", "last_token", "mean"], progress=False)
    mixed = actstore.extract(gpt2, [short, long], out=str(tmp_path / "b"), layers=[3],
                             pooling=["first_token", "last_token", "mean"], progress=False)
    for view in ("first_token", "last_token", "mean"):
        diff = np.abs(alone.layer(3, view=view)[0] - mixed.layer(3, view=view)[0]).max()
        assert diff <= TOL, view
