"""Sharded runs: SIGKILL at several points + rerun == uninterrupted run; workers; config checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import actstore
from actstore.errors import ConfigMismatchError, InvalidArgumentError
from actstore.extraction.runner import worker_from_env

DRIVER = r'''
import sys, time
from actstore.format import writer

_add = writer.DatasetWriter.add
def slow_add(self, *a, **k):          # widens the windows the test kills the run in
    time.sleep(0.25)
    return _add(self, *a, **k)
writer.DatasetWriter.add = slow_add

import actstore
model, out = sys.argv[1], sys.argv[2]
prompts = [f"the cat sat on the mat {'and the dog ran ' * (i % 4)}{i}" for i in range(12)]
actstore.extract(model, prompts, out=out, layers=[0, 2, 3], pooling=["last_token", "mean"],
                 dtype="bfloat16", labels=[i % 2 for i in range(12)], batch_size=2, shard_size=3,
                 device="cpu", progress=False)
print("DONE")
'''


def _start(driver: str, model: str, out: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, driver, model, out], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 180) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False if it finished first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.communicate()[1][-2000:]
            return False
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"the run neither reached the kill point nor finished: {proc.communicate()}")


def _snapshot(path: str) -> dict:
    ds = actstore.open_dataset(path)
    files = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path)
            if not rel.startswith("index"):
                with open(full, "rb") as f:
                    files[rel] = f.read()
    return {"index": ds.index, "files": files, "extraction": ds.info.extraction,
            "layers": ds.info.layers}


@pytest.mark.slow
def test_sigkill_at_several_points_then_rerun_is_identical(gpt2_path, tmp_path):
    driver = str(tmp_path / "driver.py")
    with open(driver, "w") as f:
        f.write(DRIVER)
    ref, out = str(tmp_path / "ref"), str(tmp_path / "out")
    assert _start(driver, gpt2_path, ref).wait() == 0
    parts = os.path.join(out, "_parts")
    points = [
        # mid-shard: the first part's folder exists but it is not committed
        lambda: os.path.isdir(os.path.join(parts, "shard-00000")),
        # two parts committed, a third under way
        lambda: os.path.exists(os.path.join(parts, "shard-00002", "index")),
        # during the merge: the final dataset's files are being written
        lambda: os.path.isdir(os.path.join(out, "tensors")),
    ]
    killed = [_kill_when(_start(driver, gpt2_path, out), p) for p in points]
    assert killed == [True, True, True], f"kill points reached: {killed}"
    proc = _start(driver, gpt2_path, out)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    got, want = _snapshot(out), _snapshot(ref)
    assert got["index"].equals(want["index"])
    assert got["files"].keys() == want["files"].keys()
    assert all(got["files"][k] == want["files"][k] for k in want["files"]), "tensor bytes differ"
    assert got["extraction"] == want["extraction"]
    assert not os.path.exists(parts)
    assert len(actstore.open_dataset(out)) == 12


def test_workers_take_disjoint_shards_and_merge_equals_single_run(gpt2, tmp_path, prompts):
    kw = dict(layers=[1, 3], pooling=["last_token", "mean"], batch_size=2, shard_size=3, progress=False)
    single = actstore.extract(gpt2, prompts, out=str(tmp_path / "one"), **kw)
    out = str(tmp_path / "many")
    assert actstore.extract(gpt2, prompts, out=out, rank=1, world_size=2, **kw) is None
    parts = sorted(os.listdir(os.path.join(out, "_parts")))
    assert parts == ["config.json", "shard-00001"]          # 8 prompts / 3 = shards 0, 1, 2
    with pytest.raises(InvalidArgumentError, match=r"shards \[0, 2\] of 3 are not finished"):
        actstore.merge(out)
    assert actstore.extract(gpt2, prompts, out=out, rank=0, world_size=2, **kw) is None
    merged = actstore.merge(out)
    assert merged.texts == prompts == single.texts
    for L in (1, 3):
        for view in ("last_token", "mean"):
            assert np.array_equal(merged.layer(L, view=view), single.layer(L, view=view))


def test_rerun_of_a_finished_run_returns_it(gpt2, tmp_path, prompts):
    out = str(tmp_path / "ds")
    first = actstore.extract(gpt2, prompts, out=out, layers=[0], progress=False)
    stamp = os.stat(os.path.join(out, "index", "train-00000-of-00001.parquet")).st_mtime_ns
    again = actstore.extract(gpt2, prompts, out=out, layers=[0], progress=False)
    assert os.stat(os.path.join(out, "index", "train-00000-of-00001.parquet")).st_mtime_ns == stamp
    assert np.array_equal(first.layer(0), again.layer(0))


@pytest.mark.parametrize("change, field", [
    (dict(layers=[1]), "layers"),
    (dict(pooling="mean"), "pooling"),
    (dict(dtype="float16"), "dtype"),
    (dict(max_length=4), "max_length"),
])
def test_changed_config_into_same_output_says_what_differs(gpt2, tmp_path, prompts, change, field):
    out = str(tmp_path / "ds")
    base = dict(layers=[0], pooling="last_token", dtype="float32", progress=False)
    actstore.extract(gpt2, prompts, out=out, **base)
    with pytest.raises(ConfigMismatchError, match=rf"{field}: .* -> "):
        actstore.extract(gpt2, prompts, out=out, **{**base, **change})


def test_changed_prompts_into_unfinished_output_is_refused(gpt2, tmp_path, prompts):
    out = str(tmp_path / "ds")
    actstore.extract(gpt2, prompts, out=out, layers=[0], shard_size=2, rank=0, world_size=2, progress=False)
    with pytest.raises(ConfigMismatchError, match="prompts_sha256"):
        actstore.extract(gpt2, prompts[::-1], out=out, layers=[0], shard_size=2, rank=1,
                         world_size=2, progress=False)


@pytest.mark.parametrize("env, expected", [
    ({}, (0, 1)),
    ({"RANK": "3", "WORLD_SIZE": "8"}, (3, 8)),                      # torchrun / accelerate
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "5"}, (2, 4)),
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "6"}, (5, 6)),                    # srun --ntasks 6
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, (0, 1)),
])
def test_worker_from_env(monkeypatch, env, expected):
    for k in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT",
              "SLURM_ARRAY_TASK_MIN", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert worker_from_env() == expected
    assert worker_from_env(1, 2) == (1, 2)           # flags beat the environment
    with pytest.raises(InvalidArgumentError, match="rank must be in"):
        worker_from_env(2, 2)


def test_remote_output_keeps_parts_local_and_merges_to_the_url(gpt2, tmp_path, prompts):
    kw = dict(layers=[0, 3], pooling=["last_token", "mean"], shard_size=3, progress=False)
    local = actstore.extract(gpt2, prompts, out=str(tmp_path / "local"), **kw)
    work = str(tmp_path / "work")
    url = "memory://extract-test/ds"
    assert actstore.extract(gpt2, prompts, out=url, work_dir=work, rank=0, world_size=2, **kw) is None
    assert sorted(os.listdir(os.path.join(work, "_parts"))) == ["config.json", "shard-00000", "shard-00002"]
    assert actstore.extract(gpt2, prompts, out=url, work_dir=work, rank=1, world_size=2, **kw) is None
    remote = actstore.merge(url, work_dir=work)
    assert remote.url.startswith("memory://") and not os.path.exists(os.path.join(work, "_parts"))
    assert remote.texts == local.texts
    for view in ("last_token", "mean"):
        assert np.array_equal(remote.layer(3, view=view), local.layer(3, view=view))


def test_resume_with_a_different_number_of_workers(gpt2, tmp_path, prompts, monkeypatch):
    # shards do not depend on the worker count, so 3 workers' partial run can be finished by one
    kw = dict(layers=[2], shard_size=2, progress=False)
    out = str(tmp_path / "ds")
    assert actstore.extract(gpt2, prompts, out=out, rank=2, world_size=3, **kw) is None
    from actstore.extraction import runner

    computed: list[int] = []
    real = runner._compute
    monkeypatch.setattr(runner, "_compute", lambda lm, ps, lo, hi, *a: computed.append(lo) or real(lm, ps, lo, hi, *a))
    ds = actstore.extract(gpt2, prompts, out=out, **kw)
    assert computed == [0, 2, 6]                               # shard 2 (rows 4-5) was done
    single = actstore.extract(gpt2, prompts, out=str(tmp_path / "one"), **kw)
    assert np.array_equal(ds.layer(2), single.layer(2))
