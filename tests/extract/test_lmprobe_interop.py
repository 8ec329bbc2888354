"""lmprobe 0.10.3 reads what ``extract`` writes, bit for bit (extra index columns included).

lmprobe only reads Hub repos, so ``hf_hub_download`` is pointed at the local dataset
(workaround B of reference/lmprobe-v2.md §10).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import actstore

lmprobe = pytest.importorskip("lmprobe")


def test_lmprobe_loads_an_extracted_dataset(gpt2_path, tmp_path, monkeypatch, prompts):
    import huggingface_hub

    out = str(tmp_path / "ds")
    labels = [i % 2 for i in range(len(prompts))]
    ds = actstore.extract(gpt2_path, prompts, out=out, layers=[0, 3], pooling=["last_token", "mean"],
                          labels=labels, max_length=6, shard_size=3, device="cpu", progress=False)
    assert ds.column("truncated").any()                  # an extra column lmprobe must ignore
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo_id, filename, **kw: os.path.join(out, filename))
    from lmprobe import load_activations

    acts, got_labels = load_activations("org/extracted", layers=[0, 3], return_labels=True,
                                        show_progress=False)
    assert list(got_labels) == labels
    for L in (0, 3):
        assert np.array_equal(np.asarray(acts[L]), ds.layer(L))
