"""On a CUDA device: stored vectors match the CPU unbatched reference, bfloat16 models run,
and a real torchrun launch splits the shards between ranks (skipped without CUDA)."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

import actstore

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("path_fixture", ["gpt2_path", "llama_path"])
def test_cuda_vectors_match_cpu_unbatched(path_fixture, request, tmp_path, prompts):
    from actstore.extraction import load_model

    path = request.getfixturevalue(path_fixture)
    cpu, gpu = load_model(path, device="cpu"), load_model(path, device="cuda")
    ds = actstore.extract(gpu, prompts, out=str(tmp_path / "ds"), layers=[0, 2],
                          pooling=["last_token", "mean", "first_token"], batch_size=3, progress=False)
    for row, text in enumerate(prompts):
        ids = cpu.tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            hs = cpu.model(**ids, output_hidden_states=True).hidden_states
        for L in (0, 2):
            seq = hs[L + 1][0].numpy()
            for view, want in (("last_token", seq[-1]), ("mean", seq.mean(0)), ("first_token", seq[0])):
                got = ds.get([row], layers=[L], view=view)[0, 0]
                np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_bfloat16_model_on_cuda(gpt2_path, tmp_path, prompts):
    ds = actstore.extract(gpt2_path, prompts, out=str(tmp_path / "ds"), layers="all",
                          dtype="bfloat16", model_dtype=torch.bfloat16, device="cuda",
                          logits_k=3, perplexity=True, progress=False)
    assert ds.info.dtype == "bfloat16" and np.isfinite(ds.layer(3)).all()
    assert np.isfinite(ds.column("perplexity")).all()


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="needs torchrun")
def test_torchrun_two_ranks_then_merge(gpt2_path, tmp_path, prompts):
    src = tmp_path / "p.txt"
    src.write_text("\n".join(prompts) + "\n")
    out = str(tmp_path / "ds")
    cmd = ["torchrun", "--nproc-per-node", "2", "-m", "actstore", "extract", gpt2_path, str(src),
           "--out", out, "--layers", "0,-1", "--shard-size", "2", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    parts = sorted(p for p in os.listdir(os.path.join(out, "_parts")) if p.startswith("shard"))
    assert parts == [f"shard-{i:05d}" for i in range(4)]       # both ranks' shards, none twice
    merged = actstore.merge(out)
    single = actstore.extract(gpt2_path, prompts, out=str(tmp_path / "one"), layers=[0, -1],
                              shard_size=2, device="cuda", progress=False)
    assert merged.texts == single.texts
    np.testing.assert_allclose(merged.layer(3), single.layer(3), atol=1e-5)
