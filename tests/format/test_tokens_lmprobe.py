"""lmprobe 0.10.3 and the two full-sequence index layouts (spec section 5b).

The lmprobe-compatible layout (per-token lists too) loads in lmprobe with each row's last token;
the compact layout, which lmprobe does not know, makes lmprobe fail with its own errors, never
hand back other rows' tokens. lmprobe runs in a subprocess (see test_lmprobe_compat.py).
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

from actstore.format.writer import DatasetWriter

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"
SCRIPT = Path(__file__).parent / "lmprobe_scripts" / "read_tokens.py"
TOKENS = [3, 1, 5, 2, 4]


def lmprobe_env(work: Path) -> dict[str, str]:
    return dict(os.environ, HF_HOME=str(work / "hf"), HF_HUB_CACHE=str(work / "hf" / "hub"),
                LMPROBE_CACHE_DIR=str(work / "lmcache"), HF_HUB_OFFLINE="1")


def into_hub_cache(src: Path, hub: Path, repo: str) -> None:
    """Lay a local dataset out as an offline HF hub cache entry for ``repo``."""
    entry = hub / f"datasets--{repo.replace('/', '--')}"
    shutil.copytree(src, entry / "snapshots" / SNAPSHOT)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(SNAPSHOT)


def _read_with_lmprobe(work: Path, compat: bool, states: list[np.ndarray]) -> tuple[dict, Path]:
    name = "compat" if compat else "compact"
    ds = work / name
    with DatasetWriter(str(ds), model=f"org/model-{name}", layers=[0], dim=4, pooling="all",
                       shard_bytes=4 * 4 * 5, lmprobe_compat=compat) as w:
        w.add([f"{name} prompt {i}" for i in range(len(states))], hidden={0: states})
    into_hub_cache(ds, work / "hf" / "hub", f"org/{name}")
    out = work / f"out-{name}"
    out.mkdir()
    proc = subprocess.run([sys.executable, str(SCRIPT), f"org/{name}", str(out)], capture_output=True,
                          text=True, env=lmprobe_env(work), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text()), out


@pytest.fixture(scope="module")
def reads(tmp_path_factory):
    rng = np.random.default_rng(5)
    states = [rng.standard_normal((t, 4)).astype(np.float32) for t in TOKENS]
    # separate HF and lmprobe caches: lmprobe caches by model and prompt text
    return states, {c: _read_with_lmprobe(tmp_path_factory.mktemp(f"lp{int(c)}"), c, states)
                    for c in (True, False)}


@pytest.mark.slow
def test_lmprobe_reads_the_compat_layout(reads):
    states, by = reads
    result, out = by[True]
    assert result["load_activations"] == {"ok": True}, result
    np.testing.assert_array_equal(np.load(out / "last_0.npy"), np.stack([s[-1] for s in states]))
    assert result["pull_materialize"] == {"ok": True}, result


@pytest.mark.slow
def test_lmprobe_fails_on_the_compact_layout_with_its_own_error(reads):
    states, by = reads
    result, out = by[False]
    # every lmprobe read that returns per-row values fails with lmprobe's own error (it finds
    # no token_offset/per-token lists), before and after pull_dataset(materialize=True)
    for name in ("load_activations", "after_pull", "after_pull_mean", "after_pull_first_token"):
        assert result[name]["error"] == "TypeError", (name, result)
    assert not list(out.glob("*last*.npy")) and not list(out.glob("after_pull*.npy"))
    # its layout-blind concatenation of every shard is the same bytes under both layouts
    np.testing.assert_array_equal(np.load(out / "whole_0.npy"), np.load(by[True][1] / "whole_0.npy"))
