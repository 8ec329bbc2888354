"""One run configuration, checked once, and facts about the model found once per run (issue 13)."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

import actstore
from actstore.errors import InvalidArgumentError
from actstore.extraction import RunConfig


def test_model_facts_are_found_once_per_model_not_per_batch(gpt2, tmp_path, prompts, monkeypatch):
    """``capture`` walked ``named_modules()`` and read ``inspect.signature(forward)`` twice on
    every batch; both are facts about the model."""
    walks, signatures = [], []
    real_walk, real_signature = gpt2.model.named_modules, inspect.signature

    def walk(*a, **k):
        walks.append(1)
        return real_walk(*a, **k)

    def signature(obj, *a, **k):
        if obj == gpt2.model.forward:
            signatures.append(1)
        return real_signature(obj, *a, **k)

    lm = dataclasses.replace(gpt2)  # a fresh LoadedModel: nothing is known about it yet
    monkeypatch.setattr(lm.model, "named_modules", walk)
    monkeypatch.setattr(inspect, "signature", signature)
    ds = actstore.extract(lm, prompts, out=str(tmp_path / "ds"), layers=[0, 2], batch_size=1,
                          progress=False)
    assert len(ds) == len(prompts) >= 4
    assert len(walks) <= 1 and len(signatures) <= 1, (len(walks), len(signatures))


def test_one_frozen_config_is_checked_once_and_recorded_as_before(gpt2, tmp_path, prompts):
    cfg = RunConfig.create(pooling=["mean", "all", "mean"], dtype="float16", batch_size=4,
                           max_length=None, shard_size=None, logits_k=None, perplexity=False,
                           template=None, chat_template=False)
    assert cfg.pooling == ("all", "mean") and cfg.shard_size == 64  # full sequences first
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dtype = "float32"  # type: ignore[misc]
    for bad in ({"dtype": "int4"}, {"pooling": "max"}, {"batch_size": 0}):
        kw = {"pooling": "last_token", "dtype": "float32", "batch_size": 1, "max_length": None,
              "shard_size": None, "logits_k": None, "perplexity": False, "template": None,
              "chat_template": False, **bad}
        with pytest.raises(InvalidArgumentError):
            RunConfig.create(**kw)
    ds = actstore.extract(gpt2, prompts, out=str(tmp_path / "ds"), layers=["embeddings", 1],
                          pooling=["last_token", "mean"], shard_size=3, progress=False,
                          cache=str(tmp_path / "cache"))
    run = ds.info.extraction["run"]
    # the record keeps the keys and JSON types every earlier run wrote (a rerun compares equal)
    assert set(run) == {"model", "revision", "template", "chat_template", "padding_side",
                        "layers", "pooling", "dtype", "batch_size", "max_length", "shard_size",
                        "logits_k", "perplexity", "generate", "prompts_sha256", "num_prompts"}
    assert run["layers"] == [-1, 1] and run["pooling"] == ["last_token", "mean"]
    assert json.loads(json.dumps(run)) == run


def test_one_worker_one_shard_writes_the_dataset_once(gpt2, tmp_path, prompts, monkeypatch):
    """With one worker and one shard the part would be the whole dataset: it is written at
    ``out`` directly, not as a part that the merge reads back and writes again; the result
    is the dataset the merge of a part writes."""
    import importlib

    import pyarrow.parquet as pq

    merging = importlib.import_module("actstore.extraction.merge")  # the module, not the function

    kw = dict(layers=["embeddings", 2], pooling=["last_token", "mean"], dtype="bfloat16",
              labels=[i % 2 for i in range(len(prompts))], template="Q: {prompt}",
              metadata={"source": [f"s{i}" for i in range(len(prompts))]}, progress=False)
    merged_out = str(tmp_path / "merged")
    # two workers: shard 0 is rank 0's, rank 1 has none; the merge writes the dataset
    assert actstore.extract(gpt2, prompts, out=merged_out, rank=0, world_size=2, **kw) is None
    merged = actstore.merge(merged_out)
    real_write = merging._write

    def no_merge(*a, **k):
        raise AssertionError("the one part was written and then merged")

    monkeypatch.setattr(merging, "_write", no_merge)
    direct = actstore.extract(gpt2, prompts, out=str(tmp_path / "direct"), **kw)
    monkeypatch.setattr(merging, "_write", real_write)
    assert not (tmp_path / "direct" / "_parts").exists()
    for view in ("last_token", "mean"):
        for layer in ("embeddings", 2):
            a, b = direct.torch(layer, view=view), merged.torch(layer, view=view)
            assert a.dtype == b.dtype and bool((a.view(-1) == b.view(-1)).all())
    index = "index/train-00000-of-00001.parquet"
    ta, tb = pq.read_table(tmp_path / "direct" / index), pq.read_table(tmp_path / "merged" / index)
    assert ta.schema.remove_metadata() == tb.schema.remove_metadata() and ta.equals(tb)
    assert direct.info.extraction == merged.info.extraction
    assert direct.verify().ok
