"""Datasets written by lmprobe 0.10.3 itself read correctly in actstore (quirks included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import actstore

SCRIPT = Path(__file__).parent / "lmprobe_scripts" / "write_datasets.py"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    work = tmp_path_factory.mktemp("lmprobe-written")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(work / "hf"),
               LMPROBE_CACHE_DIR=str(work / "lmcache"))
    proc = subprocess.run([sys.executable, str(SCRIPT), str(work)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return work, json.loads(proc.stdout.strip().splitlines()[-1])


def test_pooled_float32_with_logits_and_sidecars(written):
    work, dirs = written
    root = Path(dirs["pooled"])
    assert (root / "lmprobe_info.json").exists() and (root / "_stage_complete").exists()
    ds = actstore.open_dataset(str(root))
    X = np.load(work / "pooled_X.npy")
    assert ds.info.model == "m-pooled" and ds.info.layers == (0, 2) and ds.info.dtype == "float32"
    np.testing.assert_array_equal(ds.layer(0), X[:, :8])
    np.testing.assert_array_equal(ds.get([11, 3], layers=[2])[:, 0], X[[11, 3], 8:])
    np.testing.assert_array_equal(ds.labels, [i % 2 for i in range(12)])
    assert ds.texts[:2] == ["pooled prompt 0", "pooled prompt 1"]
    # hidden shards (5/5/2) and logits shards (3/3/3/3) have different boundaries
    assert len(ds.info.tensors["hidden_layers"]["shards"]) != len(ds.info.tensors["logits_topk"]["shards"])
    logits = np.load(work / "pooled_logits.npy")
    values, indices = ds.logits_topk()
    expected = np.argsort(-logits, axis=1)[:, :4]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(values, np.take_along_axis(logits, expected, axis=1))
    assert ds.verify().ok


def test_float16_shards_behind_a_float32_claim(written):
    work, dirs = written
    ds = actstore.open_dataset(dirs["half"])
    assert ds.info.tensors["hidden_layers"]["dtype"] == "float32"  # lmprobe's claim
    assert ds.info.dtype == "float16"  # the truth, from the shard header
    X = np.load(work / "half_X.npy")
    np.testing.assert_array_equal(ds.layer(2), X[:, 8:].astype(np.float16))
    assert ds.layer(0, dtype=np.float32).dtype == np.float32


def test_full_sequence_tokens_and_last_token_rows(written):
    work, dirs = written
    ds = actstore.open_dataset(dirs["full"])
    seqs = np.load(work / "full.npz")
    assert ds.info.storage == "full_sequence"
    for i in range(6):
        np.testing.assert_array_equal(ds.tokens(i, 2), seqs[f"arr_{i}"][:, 8:])
    last = np.stack([seqs[f"arr_{i}"][-1, :8] for i in range(6)])
    np.testing.assert_array_equal(ds.layer(0), last)
    assert ds.verify().ok
