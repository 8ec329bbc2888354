"""The CLI exits 0 after successful work, every time, even on a loaded machine.

Before the fix, ``actstore info`` (and every command that opens a dataset) died at
interpreter exit with "terminate called without an active exception" (exit 134) in up to a
quarter of the runs under load: pyarrow released the index's Python file object on a worker
thread during finalization (see ``actstore/format/arrowio.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from actstore.format.writer import DatasetWriter

ROOT = str(Path(__file__).resolve().parents[1])
RUNS, AT_ONCE, BUSY = 100, 4, 2


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.mark.slow
def test_cli_info_exits_zero_100_times_under_load(tmp_path):
    ds = str(tmp_path / "ds")
    with DatasetWriter(ds, model="m", layers=[0, 1], dim=16) as w:
        w.add([f"t{i}" for i in range(64)], hidden={0: np.ones((64, 16)), 1: np.zeros((64, 16))},
              labels=[i % 2 for i in range(64)])
    env = _env()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BUSY)]
    try:
        def once(_: int) -> tuple[int, str]:
            p = subprocess.run([sys.executable, "-m", "actstore", "info", ds], env=env,
                               capture_output=True, text=True, timeout=120)
            return p.returncode, p.stderr[-500:]

        with ThreadPoolExecutor(AT_ONCE) as pool:
            results = list(pool.map(once, range(RUNS)))
    finally:
        for p in busy:
            p.kill()
            p.wait()
    bad = [(rc, err) for rc, err in results if rc != 0]
    assert not bad, f"{len(bad)} of {RUNS} runs failed; first: exit {bad[0][0]}: {bad[0][1]}"
