"""Removing stale staging folders before a merge never touches a live writer's folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

import actstore
from actstore.extraction.layout import RunDir

_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from actstore.format.writer import DatasetWriter
    w = DatasetWriter(sys.argv[1], model="test/model", layers=[0], dim=8, dtype="float32",
                      pooling="last_token", overwrite=True)
    w.add([f"p{i}" for i in range(10)], hidden={0: np.ones((10, 8), np.float32)})
    print("ready", flush=True)
    sys.stdin.readline()  # the test removes stale staging while this writer is alive
    w.commit()
    print("committed", flush=True)
""")


def test_a_live_writers_staging_folder_survives_and_its_commit_succeeds(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(out)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        staging = list(out.glob(".actstore-tmp-*"))
        assert len(staging) == 1 and any(staging[0].iterdir())
        RunDir(str(out)).remove_stale_staging()
        assert staging[0].is_dir() and any(staging[0].iterdir())  # the live writer's files stay
        out_text, err = proc.communicate("go\n", timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "committed" in out_text, err
    np.testing.assert_array_equal(actstore.open_dataset(str(out)).layer(0), np.ones((10, 8), np.float32))


def test_a_dead_writers_staging_folder_is_removed(tmp_path):
    out = tmp_path / "out"
    stale = out / ".actstore-tmp-0123456789ab"
    stale.mkdir(parents=True)
    (stale / "shard").write_bytes(b"x" * 10)
    RunDir(str(out)).remove_stale_staging()
    assert not stale.exists()
