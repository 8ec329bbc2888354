"""`actstore demo` end to end on a small setting, and `actstore env`."""

from __future__ import annotations

import os

import numpy as np

import actstore
from actstore.cli import main
from actstore.demo import make_prompts


def test_prompt_sets_are_labelled_unique_and_correct():
    texts, labels, tasks = make_prompts(50)
    assert len(texts) == len(set(texts)) == 100 and set(tasks) == {"comparison", "facts"}
    for t, y, task in zip(texts, labels, tasks):
        if task == "comparison":
            a, b = int(t.split()[0]), int(t.split()[-1].rstrip("."))
            assert y == int(a > b)
    assert 0.3 < np.mean(labels) < 0.7


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert main(["demo", "--out", out, "--prompts-per-task", "60", "--cv", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "[5/5]" in printed and "task: comparison" in printed and "task: facts" in printed
    ds = actstore.open_dataset(os.path.join(out, "dataset"))
    assert len(ds) == 120 and ds.info.views == ("last_token", "mean") and len(ds.info.layers) == 6
    assert ds.verify().ok
    png = os.path.join(out, "sweep.png")
    assert open(png, "rb").read(4) == b"\x89PNG"


def test_env_lists_versions_and_extras(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"actstore {actstore.__version__}")
    assert "[extract] installed" in out and "[probe] installed" in out and "pyarrow" in out
