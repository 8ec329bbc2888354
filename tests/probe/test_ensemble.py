"""ProbeEnsemble: configurations and bootstrap members, soft/hard voting, pickle-free saves."""

from __future__ import annotations

import json

import numpy as np
import pytest

import actstore
from actstore.probe.ensemble import ProbeEnsemble


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    rng = np.random.default_rng(0)
    n, d = 400, 16
    y = rng.integers(0, 2, n)
    path = tmp_path_factory.mktemp("ens") / "ds"
    with actstore.DatasetWriter(path, model="test/m", layers=[0, 1, 2], dim=d, pooling="last_token") as w:
        w.add([f"t{i}" for i in range(n)], labels=y.tolist(),
              metadata=[{"topic": i // 8} for i in range(n)],
              hidden={L: rng.standard_normal((n, d)) + (L + 1) * 0.5 * y[:, None] * np.eye(d)[L]
                      for L in range(3)})
    return actstore.open_dataset(path)


def test_soft_voting_is_the_weighted_mean_of_members(ds):
    configs = [{"layers": 2, "classifier": "logistic_regression"}, {"layers": 1, "classifier": "lda"},
               {"layers": [1, 2], "classifier": "mass_mean"}]
    ens = ProbeEnsemble.from_configs(configs, weights=[2, 1, 1], random_state=0).fit(ds, "label")
    member = [actstore.Probe(**{**c, "random_state": i}).fit(ds, "label") for i, c in enumerate(configs)]
    expected = (2 * member[0].predict_proba(ds) + member[1].predict_proba(ds) + member[2].predict_proba(ds)) / 4
    np.testing.assert_allclose(ens.predict_proba(ds), expected, rtol=1e-6, atol=1e-7)
    assert ens.score(ds, "label") > 0.8
    assert set(ens.evaluate(ds, "label")) >= {"accuracy", "auroc"}


def test_hard_voting_counts_votes(ds):
    configs = [{"layers": L} for L in (0, 1, 2)]
    ens = ProbeEnsemble.from_configs(configs, voting="hard").fit(ds, "label")
    votes = np.stack([actstore.Probe(layers=L, random_state=i).fit(ds, "label").predict(ds)
                      for i, L in enumerate((0, 1, 2))])
    np.testing.assert_allclose(ens.predict_proba(ds)[:, 1], votes.mean(0))
    assert set(np.unique(ens.predict_proba(ds))) <= {0.0, 1 / 3, 2 / 3, 1.0}


def test_bootstrap_members_differ_and_their_spread_is_reported(ds):
    ens = ProbeEnsemble.bootstrap({"layers": 0}, n=6, random_state=1).fit(ds, "label")
    coefs = [m.coef_ for m in ens.members_] if hasattr(ens.members_[0], "coef_") else [m.predict_proba(ds) for m in ens.members_]
    assert not np.allclose(coefs[0], coefs[1])   # different resamples
    std = ens.prediction_std(ds)
    assert std.shape == (len(ds),) and np.all(std >= 0) and std.max() > 0
    again = ProbeEnsemble.bootstrap({"layers": 0}, n=6, random_state=1).fit(ds, "label")
    np.testing.assert_array_equal(again.predict_proba(ds), ens.predict_proba(ds))  # seeded


def test_grouped_bootstrap_draws_whole_groups(ds):
    ens = ProbeEnsemble.bootstrap({"layers": 1}, n=3, groups="topic", random_state=0)
    rng = np.random.default_rng(0)
    rows = ens._resample(rng, ds, len(ds), np.asarray(ds.labels))
    topics = np.asarray(ds.column("topic"))
    drawn, counts = np.unique(topics[rows], return_counts=True)
    assert np.all(counts % 8 == 0)               # every drawn topic comes whole (8 rows each)
    ens.fit(ds, "label")
    assert len(ens.members_) == 3


def test_save_load_round_trip_without_pickle(ds, tmp_path):
    ens = ProbeEnsemble.from_configs([{"layers": 2}, {"layers": 1, "classifier": "lda"}],
                                     weights=[3, 1]).fit(ds, "label")
    ens.save(tmp_path / "e")
    back = ProbeEnsemble.load(tmp_path / "e")
    np.testing.assert_allclose(back.predict_proba(ds), ens.predict_proba(ds), rtol=1e-6)
    assert not list((tmp_path / "e").rglob("*.pkl"))
    meta = json.loads((tmp_path / "e/ensemble.json").read_text())
    meta["members"] = 10**9
    (tmp_path / "e/ensemble.json").write_text(json.dumps(meta))
    with pytest.raises(actstore.FormatError, match="'members' must be an int"):
        ProbeEnsemble.load(tmp_path / "e")
    meta["members"], meta["weights"] = 2, [1, "x"]
    (tmp_path / "e/ensemble.json").write_text(json.dumps(meta))
    with pytest.raises(actstore.FormatError, match="'weights'"):
        ProbeEnsemble.load(tmp_path / "e")
    with pytest.raises(actstore.FormatError, match="not a saved ProbeEnsemble"):
        ProbeEnsemble.load(tmp_path / "nothing")


def test_bad_input(ds):
    with pytest.raises(actstore.InvalidArgumentError, match="voting"):
        ProbeEnsemble.from_configs([{"layers": 0}], voting="mean").fit(ds, "label")
    with pytest.raises(actstore.InvalidArgumentError, match="weights must be 2"):
        ProbeEnsemble.from_configs([{"layers": 0}, {"layers": 1}], weights=[1]).fit(ds, "label")
    with pytest.raises(actstore.InvalidArgumentError, match="n_bootstrap"):
        ProbeEnsemble.bootstrap({"layers": 0}, n=0).fit(ds, "label")
    with pytest.raises(actstore.InvalidArgumentError, match="configs is empty"):
        ProbeEnsemble.from_configs([]).fit(ds, "label")
    with pytest.raises(actstore.NotFittedError):
        ProbeEnsemble.from_configs([{"layers": 0}]).predict(ds)
