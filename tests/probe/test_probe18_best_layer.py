"""``SweepResult.best_layer`` (issue 18.5): the cross-validated choice, and, called as lmprobe's
``best_layer(test)``, the layer whose kept probe scores best on the test data."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import actstore
from actstore import Probe

D = 10


def _hidden(rng, y, strengths):
    return {L: (rng.standard_normal((y.size, D)) + s * (2 * y[:, None] - 1) * (np.arange(D) < 2)).astype(np.float32)
            for L, s in enumerate(strengths)}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Training rows where layer 2 carries the label best (the CV choice), and test rows where
    layer 2's signal is flipped and layer 1 carries it: the test choice must differ."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("best")
    y_tr, y_te = rng.integers(0, 2, 300), rng.integers(0, 2, 200)
    out = []
    for name, y, strengths in (("train", y_tr, [0.0, 0.6, 1.2]), ("test", y_te, [0.0, 0.6, -1.2])):
        with actstore.DatasetWriter(root / name, model="m", layers=[0, 1, 2], dim=D) as w:
            w.add([f"t{i}" for i in range(y.size)], hidden=_hidden(rng, y, strengths), labels=y.tolist())
        out.append(actstore.open_dataset(root / name))
    return out


def test_best_layer_called_on_test_data_is_the_kept_probes_best_test_score_by_hand(sets):
    train, test = sets
    sweep = actstore.sweep_layers(train, "label", cv=3, keep_probes=True)
    # by hand: one StandardScaler + logistic regression per layer on every training row
    ytr, yte = np.asarray(train.labels), np.asarray(test.labels)
    hand = {}
    for L in (0, 1, 2):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(train.layer(L), ytr)
        hand[L] = model.score(test.layer(L), yte)
    assert sweep.score(test, "label") == pytest.approx(hand)
    want = max(hand, key=hand.get)
    assert want == 1 and sweep.best_layer == 2        # the two choices differ on these data
    assert sweep.best_layer(test, "label") == want == sweep.best_layer_on(test, "label")
    auroc = {L: sweep[L].evaluate(test, "label")["auroc"] for L in (0, 1, 2)}
    assert sweep.best_layer(test, "label", metric="auroc") == max(auroc, key=auroc.get)
    with pytest.raises(actstore.InvalidArgumentError, match="metric must be one of"):
        sweep.best_layer(test, "label", metric="eval_hash")


def test_best_layer_is_still_the_layer_itself(sets):
    train, _ = sets
    sweep = actstore.sweep_layers(train, "label", cv=3)
    best = sweep.best_layer
    assert best == 2 and isinstance(best, int) and f"{best}" == "2" and json.dumps(best) == "2"
    for twin in (copy.copy(best), copy.deepcopy(best), pickle.loads(pickle.dumps(best))):
        assert type(twin) is int and twin == 2     # copies do not carry the sweep along
    probe = Probe(layers=best).fit(train, "label")
    assert type(clone(probe).layers) is int and probe.layers_ == [2]
    with pytest.raises(actstore.InvalidArgumentError, match="keep_probes=True"):
        best(train, "label")                       # no kept probes: nothing to score


def test_regression_best_layer_on_mse_counts_lower_as_better(sets):
    train, test = sets
    ytr = np.asarray(train.labels, dtype=float)
    yte = np.asarray(test.labels, dtype=float)
    sweep = actstore.sweep_layers(train, ytr, cv=3, task="regression", keep_probes=True)
    mse = {L: sweep[L].evaluate(test, yte)["mse"] for L in (0, 1, 2)}
    r2 = sweep.score(test, yte)
    assert sweep.best_layer(test, yte, metric="mse") == min(mse, key=mse.get) == max(r2, key=r2.get)
