"""Under ``torchrun --nproc-per-node 2`` (gloo, CPU) each rank finds its part by itself, both
take the same number of steps, and their union is the dataset, each row once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_torchrun_two_ranks_cover_the_dataset_once(pooled, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), *sys.path]),
           "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    # --standalone: a rendezvous on a free local port (a fixed --master-port could collide)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    str(HERE / "ddp_worker.py"), str(pooled), str(tmp_path)], check=True, env=env, timeout=180)
    a, b = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    assert a.size == b.size == 150
    assert not set(a.tolist()) & set(b.tolist())
    assert np.array_equal(np.sort(np.concatenate([a, b])), np.arange(300))
