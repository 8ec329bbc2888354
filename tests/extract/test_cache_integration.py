"""``extract(..., cache=...)`` computes only what the UnifiedCache lacks, and shares
entries with ``warmup(cache, ...)``."""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore.cache import UnifiedCache
from actstore.errors import InvalidArgumentError
from actstore.extraction import forward, warmup


@pytest.fixture
def counted(monkeypatch):
    """Counts the prompts that actually go through the model."""
    seen: list[str] = []
    real = forward.capture

    def spy(model, inputs, layers, **kw):
        seen.extend([None] * inputs["input_ids"].shape[0])
        return real(model, inputs, layers, **kw)

    monkeypatch.setattr(forward, "capture", spy)
    return seen


def test_second_run_computes_nothing_and_matches(gpt2, tmp_path, prompts, counted):
    cache = UnifiedCache(str(tmp_path / "cache"))
    kw = dict(layers=[0, 2], pooling=["last_token", "mean"], dtype="bfloat16", progress=False, cache=cache)
    fresh = actstore.extract(gpt2, prompts, out=str(tmp_path / "a"), **kw)
    assert len(counted) == len(prompts)
    again = actstore.extract(gpt2, prompts, out=str(tmp_path / "b"), **kw)
    assert len(counted) == len(prompts)                       # nothing recomputed
    for view in ("last_token", "mean"):
        assert np.array_equal(fresh.layer(2, view=view), again.layer(2, view=view))
    assert again.column("num_tokens").tolist() == fresh.column("num_tokens").tolist()


def test_only_missing_prompts_are_computed_after_warmup(gpt2, tmp_path, prompts, counted):
    cache = UnifiedCache(str(tmp_path / "cache"))
    assert warmup(cache, gpt2, prompts[:5], layers=[1], pooling="last_token") == list(range(5))
    counted.clear()
    ds = actstore.extract(gpt2, prompts, out=str(tmp_path / "ds"), layers=[1], cache=cache,
                          progress=False)
    assert len(counted) == len(prompts) - 5
    plain = actstore.extract(gpt2, prompts, out=str(tmp_path / "plain"), layers=[1], progress=False)
    np.testing.assert_allclose(ds.layer(1), plain.layer(1), atol=1e-4)


def test_template_keys_by_the_prompt_as_given(gpt2, tmp_path, counted):
    cache = UnifiedCache(str(tmp_path / "cache"))
    kw = dict(layers=[0], template="Q: {prompt} A:", cache=cache, progress=False)
    actstore.extract(gpt2, ["the cat sat"], out=str(tmp_path / "a"), **kw)
    actstore.extract(gpt2, ["the cat sat"], out=str(tmp_path / "b"), **kw)
    assert len(counted) == 1
    actstore.extract(gpt2, ["the cat sat"], out=str(tmp_path / "c"), **{**kw, "template": "{prompt}?"})
    assert len(counted) == 2                                  # another template, other values


def test_cache_refuses_what_it_cannot_hold(gpt2, tmp_path):
    with pytest.raises(InvalidArgumentError, match="cannot be combined with pooling='all'"):
        actstore.extract(gpt2, ["x"], out=str(tmp_path / "a"), pooling="all",
                         cache=str(tmp_path / "c"), progress=False)
