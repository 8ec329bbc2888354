"""Probe(layers="auto" / "fast_auto"), compute_layer_importance and sample_weight."""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore import Probe


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """Nine blocks; only block 6 carries the label."""
    rng = np.random.default_rng(0)
    n, d = 400, 12
    y = rng.integers(0, 2, n)
    path = tmp_path_factory.mktemp("auto") / "ds"
    hidden = {L: rng.standard_normal((n, d)) for L in range(9)}
    hidden[6][:, :3] += 1.5 * y[:, None]
    with actstore.DatasetWriter(path, model="test/m", layers=list(range(9)), dim=d,
                                pooling="last_token") as w:
        w.add([f"t{i}" for i in range(n)], hidden=hidden, labels=y.tolist())
    return actstore.open_dataset(path)


def test_auto_selects_the_informative_layer_by_group_lasso(ds):
    probe = Probe(layers="auto", auto_candidates=[2, 4, 6, 8], auto_alpha=0.1, random_state=0).fit(ds, "label")
    assert probe.candidate_layers_ == [2, 4, 6, 8] and probe.selected_layers_ == [6]
    assert probe.layers_ == [6] and probe.layer_importances_.argmax() == 2
    ref = Probe(layers=6, random_state=0).fit(ds, "label")
    np.testing.assert_allclose(probe.predict_proba(ds), ref.predict_proba(ds), rtol=1e-6)
    assert probe.get_params()["layers"] == "auto"   # the parameter is stored unchanged


def test_auto_default_candidates_are_fractions_of_the_depth(ds):
    probe = Probe(layers="auto", auto_alpha=0.1).fit(ds, "label")
    assert probe.candidate_layers_ == [2, 4, 6]    # 0.25, 0.5, 0.75 of blocks 0..8


def test_auto_keeping_nothing_falls_back_with_a_warning(ds):
    with pytest.warns(UserWarning, match="kept no layer"):
        probe = Probe(layers="auto", auto_candidates=[2, 4], auto_alpha=10.0).fit(ds, "label")
    assert probe.selected_layers_ == [2, 4]


def test_fast_auto_keeps_the_top_k_by_coefficient_norm(ds):
    probe = Probe(layers="fast_auto", auto_candidates=[1, 3, 6, 7], fast_auto_top_k=1).fit(ds, "label")
    assert probe.selected_layers_ == [6] and probe.layers_ == [6]
    assert probe.layer_importances_.sum() == pytest.approx(1.0)


def test_auto_probe_saves_and_loads(ds, tmp_path):
    probe = Probe(layers="auto", auto_candidates=[4, 6], auto_alpha=0.1).fit(ds, "label")
    probe.save(tmp_path / "p")
    loaded = Probe.load(tmp_path / "p")
    assert loaded.layers_ == [6]
    np.testing.assert_allclose(loaded.predict_proba(ds), probe.predict_proba(ds), atol=1e-6)


def test_compute_layer_importance(ds):
    probe = Probe(layers=[2, 6]).fit(ds, "label")
    imp = probe.compute_layer_importance("l2")
    assert max(imp, key=imp.get) == 6 and sum(imp.values()) == pytest.approx(1.0)
    raw = probe.compute_layer_importance("max_abs", normalize=False)
    W = probe._head().W.reshape(2, 12, -1)
    assert raw[6] == pytest.approx(np.abs(W[1]).max()) and raw[2] == pytest.approx(np.abs(W[0]).max())
    pca = Probe(layers=[2, 6], preprocessing="pca", pca_components=4).fit(ds, "label")
    assert set(pca.compute_layer_importance()) == {2, 6}   # on the collapsed head, PCA included
    with pytest.raises(actstore.InvalidArgumentError, match="metric must be one of"):
        probe.compute_layer_importance("l3")


def test_auto_bad_input(ds):
    with pytest.raises(actstore.InvalidArgumentError, match=r"auto_candidates \[12\] are not stored"):
        Probe(layers="auto", auto_candidates=[2, 12]).fit(ds, "label")
    with pytest.raises(actstore.InvalidArgumentError, match="does not take sample_weight"):
        Probe(layers="auto").fit(ds, "label", sample_weight=np.ones(len(ds)))


def test_sample_weight_equals_repeating_rows():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((150, 8)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.standard_normal(150) > 0).astype(int)
    w = rng.integers(0, 4, 150)
    for clf in ("logistic_regression", "ridge", "mass_mean"):
        weighted = Probe(layers=0, classifier=clf, random_state=0).fit(X, y, sample_weight=w)
        repeated = Probe(layers=0, classifier=clf, random_state=0).fit(np.repeat(X, w, 0), np.repeat(y, w))
        np.testing.assert_allclose(weighted.decision_function(X), repeated.decision_function(X),
                                   rtol=2e-3, atol=2e-3)


def test_sample_weight_changes_the_fit_and_flows_through_sweeps(ds):
    y = np.asarray(ds.labels)
    w = np.where(y == 1, 5.0, 1.0)
    plain = Probe(layers=6).fit(ds, "label")
    weighted = Probe(layers=6).fit(ds, "label", sample_weight=w)
    assert weighted.predict(ds).mean() > plain.predict(ds).mean()  # up-weighted class predicted more
    a = actstore.sweep_layers(ds, "label", layers=[6], cv=3, sample_weight=w).results
    b = actstore.sweep_layers(ds, "label", layers=[6], cv=3).results
    assert not np.allclose(a["recall"], b["recall"])
    c = actstore.cross_validate(ds, "label", layers=6, cv=3, seeds=[0], sample_weight=w)
    np.testing.assert_allclose(c["recall"].to_numpy(), a["recall"].to_numpy())


def test_sample_weight_bad_input(ds):
    with pytest.raises(actstore.InvalidArgumentError, match="sample_weight must hold 400"):
        Probe(layers=6).fit(ds, "label", sample_weight=np.ones(3))
    with pytest.raises(actstore.InvalidArgumentError, match="LinearDiscriminantAnalysis does not take sample_weight"):
        Probe(layers=6, classifier="lda").fit(ds, "label", sample_weight=np.ones(len(ds)))
    with pytest.raises(actstore.InvalidArgumentError, match="does not take sample_weight"):
        Probe(layers=6, preprocessing="pca", pca_components=3).fit(ds, "label", sample_weight=np.ones(len(ds)))


def test_probe_sweep_specs_pick_the_best_layer_by_cv(ds):
    probe = Probe(layers="sweep:2", random_state=0).fit(ds, "label")
    assert set(probe.sweep_scores_) == {0, 2, 4, 6, 8} and probe.layers_ == [6]
    assert Probe(layers="sweep:5-7").fit(ds, "label").layers_ == [6]
    assert set(Probe(layers="sweep").fit(ds, "label").sweep_scores_) == set(range(9))
    with pytest.raises(actstore.InvalidArgumentError, match="sweep grammar"):
        Probe(layers="sweep:x").fit(ds, "label")
    with pytest.raises(actstore.InvalidArgumentError, match="selects none"):
        Probe(layers="sweep:20-30").fit(ds, "label")


def test_sweep_keeps_probes_for_new_data(ds):
    train, test = ds.select(range(300)), ds.select(range(300, 400))
    sweep = actstore.sweep_layers(train, "label", layers="sweep:3", cv=3, keep_probes=True)
    assert set(sweep.probes) == {0, 3, 6}
    ref = Probe(layers=6, random_state=0).fit(train, "label")
    np.testing.assert_allclose(sweep[6].predict_proba(test), ref.predict_proba(test), rtol=1e-6)
    scores = sweep.score(test, "label")
    assert max(scores, key=scores.get) == 6 == sweep.best_layer_on(test, "label") == sweep.best_layer
    assert sweep.predict(test)[6].shape == (100,)
    with pytest.raises(actstore.InvalidArgumentError, match="keep_probes=True"):
        actstore.sweep_layers(train, "label", layers=[0], cv=3).score(test, "label")
