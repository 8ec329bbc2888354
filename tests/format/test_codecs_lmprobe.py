"""lmprobe 0.10.3 refuses an int8 or fp8 dataset instead of reading codes as activations.

A codec shard stores its codes under ``hidden.layer_{L}.codes`` (spec section 2b), never
lmprobe's ``hidden.layer_{L}``: lmprobe would read an ``I8`` tensor under that key as
activations (its dtype map knows ``I8``). lmprobe runs in a subprocess with its own offline
HF cache, as in ``test_lmprobe_compat.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import actstore
from actstore.format.writer import DatasetWriter

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"

SCRIPT = """
import json, sys
from lmprobe import load_activation_dataset, load_activations
repo = sys.argv[1]
out = {}
try:
    acts = load_activations(repo, layers=[0], show_progress=False)
    out["load_activations"] = "returned " + repr({k: str(getattr(v, "dtype", "?")) for k, v in acts.items()})
except Exception as exc:
    out["load_activations"] = "error: " + type(exc).__name__ + ": " + str(exc)[:300]
try:
    tensors, _ = load_activation_dataset(repo)
    out["dataset_keys"] = sorted(tensors)
except Exception as exc:
    out["dataset_keys"] = "error: " + type(exc).__name__
print(json.dumps(out))
"""


def _hub_cache(src: Path, hub: Path, repo: str) -> None:
    entry = hub / f"datasets--{repo.replace('/', '--')}"
    shutil.copytree(src, entry / "snapshots" / SNAPSHOT)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(SNAPSHOT)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["int8", "fp8_e4m3"])
def test_lmprobe_refuses_a_codec_dataset(tmp_path, dtype):
    x = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    with DatasetWriter(str(tmp_path / "ds"), model="org/q", layers=[0], dim=8, dtype=dtype) as w:
        w.add([f"p{i}" for i in range(6)], hidden={0: x}, labels=[0, 1] * 3)
    assert actstore.open_dataset(str(tmp_path / "ds")).info.dtype == dtype
    _hub_cache(tmp_path / "ds", tmp_path / "hf" / "hub", "org/q")
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
               LMPROBE_CACHE_DIR=str(tmp_path / "lmcache"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, "org/q"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["load_activations"].startswith("error"), result
    assert "ImportError" not in result["load_activations"], result
    # whatever lmprobe's bulk loader returns, it is never codes under an activation key
    keys = result["dataset_keys"]
    assert isinstance(keys, str) or "hidden.layer_0" not in keys, keys
