"""Honest probe CLI: a held-out split, ``actstore predict``, and a saved probe that says what
it was fitted on (issue 12, scope 5)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from actstore import open_dataset
from actstore.cli import main
from actstore.errors import InvalidArgumentError
from actstore.probe import Probe

N = 300  # rows of the probe_dataset fixture (tests/probe/conftest.py)


def _json(out: str) -> dict:
    return json.loads(out[out.index("{"): out.rindex("}") + 1])


def test_probe_test_size_reports_held_out_accuracy_and_saves_the_train_fit(probe_dataset, tmp_path,
                                                                           capsys):
    saved = str(tmp_path / "p")
    assert main(["probe", probe_dataset, "--layer", "2", "--cv", "3", "--test-size", "0.25",
                 "--save", saved]) == 0
    out = capsys.readouterr().out
    summary = _json(out)
    assert summary["test_rows"] == N // 4 and summary["train_rows"] == N - N // 4
    assert 0.8 < summary["held_out"]["accuracy"] <= 1.0
    assert "fitted on 225 training rows" in out
    probe = Probe.load(saved)
    assert probe.provenance["rows"] == N - N // 4


def test_probe_test_rows(probe_dataset, capsys):
    assert main(["probe", probe_dataset, "--layer", "2", "--cv", "3", "--test-rows", "200:"]) == 0
    summary = _json(capsys.readouterr().out)
    assert summary["test_rows"] == N - 200 and summary["train_rows"] == 200


def test_probe_bad_split_is_one_line(probe_dataset, capsys):
    assert main(["probe", probe_dataset, "--test-size", "1.5"]) == 2
    assert "--test-size must be a fraction" in capsys.readouterr().err


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_predict_writes_predictions(probe_dataset, tmp_path, capsys, ext):
    saved = str(tmp_path / "p")
    assert main(["probe", probe_dataset, "--layer", "2", "--cv", "3", "--save", saved]) == 0
    out = str(tmp_path / f"pred.{ext}")
    assert main(["predict", saved, probe_dataset, "--out", out]) == 0
    frame = pd.read_csv(out) if ext == "csv" else pd.read_parquet(out)
    ds = open_dataset(probe_dataset)
    assert len(frame) == N and {"row", "text", "prediction", "proba_0", "proba_1"} <= set(frame)
    np.testing.assert_array_equal(frame["prediction"], Probe.load(saved).predict(ds))
    assert "accuracy against the dataset's 'label' column" in capsys.readouterr().out


def test_predict_refuses_an_unknown_out_format(probe_dataset, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "p"), probe_dataset, "--out", "x.txt"]) == 2
    assert "--out must end in .csv or .parquet" in capsys.readouterr().err


def test_saved_probe_records_its_dataset(probe_dataset, tmp_path):
    ds = open_dataset(probe_dataset)
    probe = Probe(layers=2).fit(ds, "label")
    probe.save(str(tmp_path / "p"))
    loaded = Probe.load(str(tmp_path / "p"))
    prov = loaded.provenance
    assert prov["dataset"] == ds.url and prov["view"] == "last_token" and prov["layers"] == [2]
    assert prov["label_column"] == "label" and prov["model"] == "synthetic"
    assert f"fitted on {ds.url}" in repr(loaded) and "'label'" in repr(loaded)


def test_probe_on_arrays_has_no_provenance(arrays, tmp_path):
    X, y, _ = arrays
    probe = Probe(layers=2).fit(X, y)
    probe.save(str(tmp_path / "p"))
    assert Probe.load(str(tmp_path / "p")).provenance is None
    with pytest.raises(InvalidArgumentError):
        Probe(layers=2).fit(X[:0], y[:0])
