"""Extraction checks what it can before the model loads, says how to start over, and says
when it resumes (issue 12, scope 2)."""

from __future__ import annotations

import os

import pytest

import actstore
from actstore.errors import ConfigMismatchError, InvalidArgumentError

PROMPTS = ["the cat sat", "hello world", "two plus two is four", "why is the sky blue",
           "the lazy dog"]


@pytest.fixture
def no_model_load(monkeypatch):
    """Any attempt to load a model fails the test: the check must come first."""
    import actstore.extraction.models as ex  # where the model is loaded

    def boom(*a, **k):  # pragma: no cover - reached only on failure
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(ex, "load_model", boom)


def _csv(path, rows, header):
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(header) + "\n")
        for r in rows:
            f.write(",".join(map(str, r)) + "\n")
    return str(path)


def test_label_column_without_the_flag_fails_before_the_model_loads(tmp_path, gpt2_path,
                                                                      no_model_load):
    data = _csv(tmp_path / "p.csv", [(t, i % 2) for i, t in enumerate(PROMPTS)], ["text", "label"])
    with pytest.raises(InvalidArgumentError, match="--label-column label"):
        actstore.extract(gpt2_path, data, out=str(tmp_path / "ds"), progress=False)
    assert not os.path.exists(tmp_path / "ds" / "_parts" / "config.json")


def test_reserved_metadata_column_fails_before_the_model_loads(tmp_path, gpt2_path, no_model_load):
    with pytest.raises(InvalidArgumentError, match="'truncated'.*rename"):
        actstore.extract(gpt2_path, PROMPTS, out=str(tmp_path / "ds"), progress=False,
                         metadata={"truncated": [0] * len(PROMPTS)})


def test_bad_template_and_unwritable_out_fail_before_the_model_loads(tmp_path, gpt2_path,
                                                                      no_model_load):
    with pytest.raises(InvalidArgumentError, match="template must contain"):
        actstore.extract(gpt2_path, PROMPTS, out=str(tmp_path / "ds"), template="Q:",
                         progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InvalidArgumentError, match="Cannot write to the output folder"):
        actstore.extract(gpt2_path, PROMPTS, out=str(blocker / "ds"), progress=False)


def test_changed_settings_fail_before_the_model_loads_and_name_the_way_out(tmp_path, gpt2_path,
                                                                            monkeypatch):
    out = str(tmp_path / "ds")
    actstore.extract(gpt2_path, PROMPTS, out=out, layers=[0], shard_size=2, progress=False)
    import actstore.extraction.models as ex  # where the model is loaded

    monkeypatch.setattr(ex, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    with pytest.raises(ConfigMismatchError, match="dtype.*--overwrite") as err:
        actstore.extract(gpt2_path, PROMPTS, out=out, layers=[0], shard_size=2, dtype="float16",
                         progress=False)
    assert "deletes the dataset at" in str(err.value)


def test_overwrite_starts_over(tmp_path, gpt2_path):
    out = str(tmp_path / "ds")
    actstore.extract(gpt2_path, PROMPTS, out=out, layers=[0], progress=False)
    ds = actstore.extract(gpt2_path, PROMPTS[:3], out=out, layers=[1, 2], progress=False,
                          overwrite=True)
    assert len(ds) == 3 and ds.info.layers == (1, 2)
    assert actstore.open_dataset(out).info.layers == (1, 2)


def _killed_run(gpt2, out, monkeypatch, after=2):
    """An extraction killed once ``after`` shards (of one prompt each) are committed."""
    import actstore.extraction.runner as runner

    real = runner._write_part
    calls = []

    def die(*a, **k):
        calls.append(1)
        if len(calls) > after:
            raise KeyboardInterrupt
        real(*a, **k)

    monkeypatch.setattr(runner, "_write_part", die)
    with pytest.raises(KeyboardInterrupt):
        actstore.extract(gpt2, PROMPTS, out=out, layers=[0], shard_size=1, progress=False)
    monkeypatch.setattr(runner, "_write_part", real)


def test_overwrite_removes_parts_of_an_unfinished_run(tmp_path, gpt2, monkeypatch):
    out = tmp_path / "ds"
    _killed_run(gpt2, str(out), monkeypatch)
    with pytest.raises(ConfigMismatchError, match="deletes the parts in .*_parts"):
        actstore.extract(gpt2, PROMPTS, out=str(out), layers=[0], shard_size=1, dtype="float16",
                         progress=False)
    ds = actstore.extract(gpt2, PROMPTS, out=str(out), layers=[0], progress=False,
                          dtype="float16", overwrite=True)
    assert len(ds) == len(PROMPTS) and ds.info.dtype == "float16"
    assert not (out / "_parts").exists()


def test_a_run_that_committed_nothing_does_not_bind_the_corrected_rerun(tmp_path, gpt2):
    out = str(tmp_path / "ds")
    long = " ".join(["the cat sat on the mat"] * 12)  # longer than the model takes
    with pytest.raises(InvalidArgumentError, match="pass max_length"):
        actstore.extract(gpt2, ["hello", long], out=out, layers=[0], progress=False)
    ds = actstore.extract(gpt2, ["hello", long], out=out, layers=[0], max_length=32,
                          progress=False)
    assert len(ds) == 2


def test_resumed_run_says_so_and_its_bar_starts_where_it_is(tmp_path, gpt2, capsys, monkeypatch):
    out = str(tmp_path / "ds")
    _killed_run(gpt2, out, monkeypatch)
    starts = []
    import tqdm.auto

    class Bar(tqdm.auto.tqdm):
        def __init__(self, *a, **k):
            starts.append((k.get("initial"), k.get("total")))
            super().__init__(*a, **k)

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    capsys.readouterr()
    ds = actstore.extract(gpt2, PROMPTS, out=out, layers=[0], shard_size=1, progress=True)
    assert len(ds) == len(PROMPTS)
    assert "resuming: 2 of 5 prompts done" in capsys.readouterr().err
    assert starts == [(2, 5)]


@pytest.fixture
def weight_bars(monkeypatch):
    """transformers' bars on (the test session sets HF_HUB_DISABLE_PROGRESS_BARS=1, which the
    Hub client read at import)."""
    import sys

    import huggingface_hub.utils
    from transformers.utils import logging

    bars = sys.modules[huggingface_hub.utils.are_progress_bars_disabled.__module__]
    monkeypatch.setattr(bars, "HF_HUB_DISABLE_PROGRESS_BARS", None)
    was = logging.is_progress_bar_enabled()
    logging.enable_progress_bar()
    yield
    if not was:
        logging.disable_progress_bar()


def test_progress_false_silences_the_loading_weights_bar(tmp_path, gpt2_path, capfd, weight_bars):
    actstore.extract(gpt2_path, PROMPTS[:2], out=str(tmp_path / "a"), layers=[0], progress=True)
    assert "Loading weights" in capfd.readouterr().err  # the bar is there when asked for
    actstore.extract(gpt2_path, PROMPTS[:2], out=str(tmp_path / "ds"), layers=[0],
                     progress=False)
    assert "Loading weights" not in capfd.readouterr().err
    from transformers.utils import logging

    assert logging.is_progress_bar_enabled()  # and the setting is put back


def test_cli_label_column_mistake_costs_one_line_then_overwrite(tmp_path, gpt2_path, capfd):
    from actstore.cli import main

    data = _csv(tmp_path / "p.csv", [(t, i % 2) for i, t in enumerate(PROMPTS)], ["text", "label"])
    out = str(tmp_path / "ds")
    base = ["extract", gpt2_path, data, "--out", out, "--layers", "0", "--no-progress"]
    assert main(base) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "pass --label-column label" in err
    assert "Loading weights" not in err
    assert main(base + ["--label-column", "label"]) == 0
    capfd.readouterr()
    assert main(base + ["--label-column", "label", "--dtype", "float16"]) == 2
    assert "--overwrite" in capfd.readouterr().err
    assert main(base + ["--label-column", "label", "--dtype", "float16", "--overwrite"]) == 0
    ds = actstore.open_dataset(out)
    assert ds.info.dtype == "float16" and ds.labels.tolist() == [i % 2 for i in range(5)]


def test_overwrite_keeps_the_old_dataset_when_the_model_does_not_load(tmp_path, gpt2_path):
    out = str(tmp_path / "ds")
    actstore.extract(gpt2_path, PROMPTS, out=out, layers=[0], progress=False)
    with pytest.raises(Exception):  # noqa: B017 - whatever the loader raises for a missing folder
        actstore.extract(str(tmp_path / "no-such-model"), PROMPTS, out=out, layers=[0],
                         progress=False, overwrite=True)
    assert len(actstore.open_dataset(out)) == len(PROMPTS)
