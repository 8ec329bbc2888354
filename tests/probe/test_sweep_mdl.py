"""Sweeps, repeated cross-validation, MDL, control tasks, results tables and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import actstore
from actstore.cli import main


def test_sweep_finds_the_informative_layer_and_plots(probe_dataset, tmp_path):
    ds = actstore.open_dataset(probe_dataset)
    sweep = actstore.sweep_layers(ds, "label", cv=5)
    frame = sweep.to_frame()
    assert list(frame["layer"]) == [0, 1, 2, 3]
    assert sweep.best_layer == 2
    assert frame.loc[frame.layer == 2, "accuracy_mean"].item() > 0.85
    assert (frame["accuracy_std"] >= 0).all() and len(sweep.results) == 20
    png = sweep.plot(str(tmp_path / "s.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_groups_never_straddle_folds(probe_dataset):
    from actstore.probe.sweep import make_folds

    ds = actstore.open_dataset(probe_dataset)
    topic = ds.column("topic")
    for tr, va in make_folds(ds.labels, 5, "classification", 0, topic):
        assert not set(topic[tr]) & set(topic[va])
    sweep = actstore.sweep_layers(ds, "label", layers=[2], cv=5, groups="topic")
    assert sweep.best_layer == 2


def test_cross_validate_over_seeds(arrays):
    X, y, _ = arrays
    frame = actstore.cross_validate(X, y, layers=2, cv=3, seeds=range(3))
    assert len(frame) == 9 and set(frame["seed"]) == {0, 1, 2}
    assert frame["accuracy"].mean() > 0.85


def test_mdl_real_labels_compress_shuffled_do_not(arrays):
    X, y, score = arrays
    rng = np.random.default_rng(0)
    real = actstore.mdl_probe(X, y, layers=2)
    fake = actstore.mdl_probe(X, rng.permutation(y), layers=2)
    assert real.compression > 1.3 and 0.9 < fake.compression < 1.05
    assert real.uniform_codelength == pytest.approx(len(y) * 1.0)
    assert len(real.block_losses) == len(real.block_ends)
    reg = actstore.mdl_probe(X, score, layers=1, task="regression")
    reg_fake = actstore.mdl_probe(X, rng.permutation(score), layers=1, task="regression")
    assert reg.compression > 1.1 and 0.9 < reg_fake.compression < 1.05


def test_control_task_selectivity(probe_dataset):
    ds = actstore.open_dataset(probe_dataset)
    res = actstore.control_task(ds, "label", layers=2, by="topic", cv=3, seeds=[0])
    assert res["task_score"] > 0.85 and res["selectivity"] > 0.2
    shuffled = actstore.control_task(ds, "label", layers=2, cv=3, seeds=[0])
    assert shuffled["control_score"] < 0.65


def test_cli_probe_sweep_report(probe_dataset, tmp_path, capsys):
    results = str(tmp_path / "results.parquet")
    assert main(["probe", probe_dataset, "--layer", "2", "--cv", "3", "--results", results,
                 "--save", str(tmp_path / "probe")]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert actstore.Probe.load(str(tmp_path / "probe")).layers_ == [2]
    assert main(["sweep", probe_dataset, "--cv", "3", "--plot", str(tmp_path / "s.png"),
                 "--results", results]) == 0
    assert "best layer (validation folds): 2" in capsys.readouterr().out
    frame = pd.read_parquet(results)
    assert {"dataset", "revision", "view", "layer", "classifier", "seed", "fold", "accuracy",
            "timestamp"} <= set(frame.columns)
    assert len(frame) == 3 + 12
    assert main(["report", results, "--plot", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out
    assert "accuracy_mean" in out and (tmp_path / "r.png").exists()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_equal_sklearn(seed):
    from sklearn import metrics as skm

    from actstore.probe.metrics import classification_metrics

    rng = np.random.default_rng(seed)
    y = rng.choice(["no", "yes"], 400)
    scores = np.round(rng.random(400), 1)  # many ties
    pred = np.where(scores > 0.45 + 0.1 * seed, "yes", "no")
    got = classification_metrics(y, pred, np.stack([1 - scores, scores], 1), np.array(["no", "yes"]))
    kw = {"pos_label": "yes", "zero_division": 0}
    ref = {"accuracy": skm.accuracy_score(y, pred), "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
           "f1": skm.f1_score(y, pred, **kw), "precision": skm.precision_score(y, pred, **kw),
           "recall": skm.recall_score(y, pred, **kw), "auroc": skm.roc_auc_score(y == "yes", scores)}
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k
    assert got["n"] == 400
    one_class = classification_metrics(np.array(["no"] * 5), np.array(["no", "yes", "no", "no", "no"]),
                                       None, np.array(["no", "yes"]))
    assert one_class["accuracy"] == 0.8 and one_class["f1"] == 0.0 and np.isnan(one_class["auroc"])


def test_report_keeps_multi_layer_rows(probe_dataset, tmp_path, capsys):
    results = str(tmp_path / "results.parquet")
    assert main(["probe", probe_dataset, "--layer", "1,2", "--cv", "3", "--results", results]) == 0
    assert main(["probe", probe_dataset, "--layer", "2", "--cv", "3", "--results", results]) == 0
    table = actstore.probe.report(results)
    assert sorted(table["layer"]) == ["1,2", "2"] and list(table["runs"]) == [3, 3]
    capsys.readouterr()
    assert main(["report", results, "--plot", str(tmp_path / "r.png")]) == 0
    assert "1,2" in capsys.readouterr().out and (tmp_path / "r.png").exists()
