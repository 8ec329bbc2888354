"""Extraction, the activation cache and the merge of workers keep the embeddings by name
end to end (the writer and the cache API refuse the stored ``-1``)."""

from __future__ import annotations

import numpy as np

import actstore
from actstore.cache import UnifiedCache
from actstore.extraction import warmup


def test_cached_extract_and_warmup_of_the_embeddings(gpt2, tmp_path, prompts):
    cache = UnifiedCache(str(tmp_path / "cache"))
    kw = dict(layers=["embeddings", -1], progress=False)
    plain = actstore.extract(gpt2, prompts, out=str(tmp_path / "plain"), **kw)
    assert plain.info.layers == ("embeddings", 3)
    assert warmup(cache, gpt2, prompts[:3], layers=["embeddings", -1]) == [0, 1, 2]
    cached = actstore.extract(gpt2, prompts, out=str(tmp_path / "c"), cache=cache, **kw)
    np.testing.assert_allclose(cached.layer("embeddings"), plain.layer("embeddings"), atol=1e-5)
    np.testing.assert_allclose(cached.layer(3), plain.layer(3), atol=1e-4)
    space = {"dtype": "float32", "max_length": None, "template": None}
    got = cache.get(gpt2.name, prompts, layers=["embeddings"], revision=gpt2.revision, config=space)
    np.testing.assert_array_equal(got[:, 0], cached.layer("embeddings"))


def test_workers_merge_the_embeddings(gpt2, tmp_path, prompts):
    kw = dict(layers=["embeddings", 1], batch_size=2, shard_size=3, progress=False)
    single = actstore.extract(gpt2, prompts, out=str(tmp_path / "one"), **kw)
    out = str(tmp_path / "many")
    for rank in (0, 1):
        assert actstore.extract(gpt2, prompts, out=out, rank=rank, world_size=2, **kw) is None
    merged = actstore.merge(out)
    assert merged.info.layers == ("embeddings", 1)
    assert merged._s.views["last_token"].layers == (-1, 1)            # lmprobe's -1 on disk
    np.testing.assert_array_equal(merged.layer("embeddings"), single.layer("embeddings"))
