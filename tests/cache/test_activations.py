"""The activation side: keys, missing/put/get, to_dataset (warmup, which runs a model, is
extraction's: tests/extract/test_warmup.py)."""

from __future__ import annotations

import numpy as np
import pytest

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
