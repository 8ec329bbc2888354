"""``extract(pooling="all")``: the compact token layout by default at scale, the token masks
(spec section 5c: prompt length, special first token), with and without generation;
``lmprobe_compat=`` through ``extract`` and ``merge``; lmprobe 0.10.3 reads a compat dataset."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import actstore
from actstore.format import spec

INDEX = spec.INDEX_PATH


def _hidden(lm, ids: list[int], layer: int) -> np.ndarray:
    with torch.inference_mode():
        out = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[layer + 1][0].float().numpy()


def _format(out):
    t = pq.read_table(os.path.join(out, INDEX))
    return t, json.loads(t.schema.metadata[b"actstore:format"])


@pytest.mark.parametrize("compat", [None, True, False])
def test_full_sequence_records_masks_and_follows_lmprobe_compat(gpt2, tmp_path, prompts, compat, monkeypatch):
    if compat is None:  # the size rule: a dataset this small is above a lowered threshold
        monkeypatch.setattr(spec, "COMPAT_MAX_TOKENS", 10)
    out = str(tmp_path / "ds")
    ds = actstore.extract(gpt2, prompts, out=out, layers=[1, 3], pooling=["all", "mean"],
                          lmprobe_compat=compat, device="cpu", progress=False)
    t, fmt = _format(out)
    assert ("token_shard_ids" in t.column_names) is bool(compat)
    assert (spec.COMPACT_TOKENS_EXTENSION in fmt["must_understand"]) is (not compat)
    assert spec.TOKEN_MASKS_EXTENSION in fmt["extensions"]
    lengths = [len(gpt2.tokenizer(p)["input_ids"]) for p in prompts]
    assert ds.column("prompt_tokens").tolist() == lengths == ds.column("num_tokens").tolist()
    assert ds.column("special_first_token").all()  # the tokenizer prepends <s>
    assert ds.token_ids("continuation").size == 0
    assert ds.token_ids("special").tolist() == [ds.token_range(r)[0] for r in range(len(ds))]
    for r, p in enumerate(prompts):
        np.testing.assert_allclose(ds.tokens(r, 1), _hidden(gpt2, gpt2.tokenizer(p)["input_ids"], 1), atol=1e-4)


def test_generation_with_all_stores_prompt_then_continuation(gpt2, tmp_path):
    prompts = ["the cat sat", "a dog ran in the park today", "hello"]
    ds = actstore.extract(gpt2, prompts, out=str(tmp_path / "ds"), layers=[2], batch_size=2,
                          pooling=["all", "mean"], generate=dict(max_new_tokens=4), progress=False)
    assert ds.info.views == ("all", "mean", "generated_mean")
    for row, p in enumerate(prompts):
        ids = gpt2.tokenizer(p, return_tensors="pt")
        with torch.inference_mode():
            seq = gpt2.model.generate(**ids, max_new_tokens=4, do_sample=False,
                                      pad_token_id=gpt2.tokenizer.pad_token_id)[0].tolist()
        n_p, n_g = ids["input_ids"].shape[1], int(ds.column("generated_tokens")[row])
        assert int(ds.column("prompt_tokens")[row]) == n_p and ds.column("num_tokens")[row] == n_p + n_g
        h = _hidden(gpt2, seq[: n_p + n_g], 2)
        np.testing.assert_allclose(ds.tokens(row, 2), h, atol=1e-4)
        cont = ds.select([row]).token_ids("continuation")
        np.testing.assert_allclose(ds.get_tokens(cont, layers=[2])[:, 0], h[n_p:], atol=1e-4)
        np.testing.assert_allclose(ds.get([row], [2], view="generated_mean")[0, 0], h[n_p:].mean(0), atol=1e-4)
    # the loader streams only the continuations
    got = sum(b["layer_2"].shape[0] for b in actstore.stream(ds, tokens=True, mask="continuation",
                                                               batch_size=4, numpy=True))
    assert got == int(ds.column("generated_tokens").sum())


def test_workers_merge_with_masks_and_lmprobe_compat(gpt2, tmp_path, prompts):
    kw = dict(layers=[0, 2], pooling="all", shard_size=3, device="cpu", progress=False)
    single = actstore.extract(gpt2, prompts, out=str(tmp_path / "one"), lmprobe_compat=False, **kw)
    out = str(tmp_path / "two")
    for rank in (1, 0):
        assert actstore.extract(gpt2, prompts, out=out, rank=rank, world_size=2, lmprobe_compat=True, **kw) is None
    merged = actstore.merge(out, lmprobe_compat=True)
    t, fmt = _format(out)
    assert "token_shard_ids" in t.column_names and spec.COMPACT_TOKENS_EXTENSION not in fmt["must_understand"]
    assert merged.column("prompt_tokens").tolist() == single.column("prompt_tokens").tolist()
    assert merged.column("special_first_token").tolist() == single.column("special_first_token").tolist()
    for r in range(len(prompts)):
        for L in (0, 2):
            np.testing.assert_array_equal(merged.tokens(r, L), single.tokens(r, L))
    with pytest.raises(actstore.InvalidArgumentError, match="lmprobe_compat must be"):
        actstore.extract(gpt2, prompts, out=str(tmp_path / "x"), lmprobe_compat="yes", **kw)


def test_lmprobe_reads_a_compat_extracted_full_sequence_dataset(gpt2, tmp_path, prompts, monkeypatch):
    pytest.importorskip("lmprobe")
    import huggingface_hub

    out = str(tmp_path / "ds")
    ds = actstore.extract(gpt2, prompts, out=out, layers=[1, 3], pooling="all", shard_size=3,
                          lmprobe_compat=True, device="cpu", progress=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo_id, filename, **kw: os.path.join(out, filename))
    from lmprobe import load_activations

    acts = load_activations("org/full-seq", layers=[1, 3], show_progress=False)
    for L in (1, 3):  # lmprobe loads each row's last token
        assert np.array_equal(np.asarray(acts[L]), ds.layer(L))
        assert np.array_equal(ds.layer(L), np.stack([ds.tokens(r, L)[-1] for r in range(len(ds))]))
