"""3-D arrays given to a probe say which layers they hold, or are refused (trust issue, scope 6)."""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore import Probe


@pytest.fixture(scope="module")
def ds(probe_dataset):
    return actstore.open_dataset(probe_dataset)


def test_score_on_an_array_of_other_layers_is_refused_not_misread(ds):
    p = Probe(layers=[1, 2], random_state=0).fit(ds)
    rows = np.arange(len(ds))
    X = ds.get(rows, layers=[1, 2, 3])
    with pytest.raises(actstore.InvalidArgumentError, match=r"X holds 3 layers .* fitted on layers \[1, 2\].*layers="):
        p.score(X, ds.labels)
    # named, the array is read by layer number and scores like the dataset itself
    assert p.score(X, ds.labels, layers=[1, 2, 3]) == pytest.approx(p.score(ds))
    np.testing.assert_array_equal(p.predict(X, layers=[1, 2, 3]), p.predict(ds))
    np.testing.assert_allclose(p.predict_proba(X, layers=[1, 2, 3]), p.predict_proba(ds))
    # the fitted layers in the fitted order need no names (like the 2-D columns form)
    np.testing.assert_array_equal(p.predict(ds.get(rows, layers=p.layers_)), p.predict(ds))


def test_named_array_missing_a_fitted_layer_is_refused(ds):
    p = Probe(layers=[1, 2], random_state=0).fit(ds)
    with pytest.raises(actstore.LayerNotFoundError, match=r"\[2\] missing"):
        p.predict(ds.get([0, 1], layers=[0, 1, 3]), layers=[0, 1, 3])
    with pytest.raises(actstore.InvalidArgumentError, match="names 2 layers but X holds 3"):
        p.predict(ds.get([0, 1], layers=[1, 2, 3]), layers=[1, 2])
    with pytest.raises(actstore.InvalidArgumentError, match="block number >= 0 or 'embeddings'"):
        p.predict(ds.get([0, 1], layers=[1, 2]), layers=[1, -1])


def test_fit_on_a_named_array_matches_fit_on_the_dataset(ds):
    rows = np.arange(len(ds))
    X = ds.get(rows, layers=[1, 2, 3])
    p = Probe(layers=[1, 2], random_state=0).fit(X, ds.labels, layers=[1, 2, 3])
    q = Probe(layers=[1, 2], random_state=0).fit(ds)
    assert p.layers_ == [1, 2]
    np.testing.assert_array_equal(p.predict(ds), q.predict(ds))
    # -1 resolves against the named layers: the deepest block the array holds
    assert Probe().fit(X, ds.labels, layers=[1, 2, 3]).layers_ == [3]


def test_probe_fitted_on_an_unnamed_array_refuses_a_dataset(ds, tmp_path):
    X = ds.get(np.arange(len(ds)), layers=[2, 3])
    p = Probe(layers=0, random_state=0).fit(X, ds.labels)          # position 0 = layer 2
    with pytest.raises(actstore.InvalidArgumentError, match="layers were not named"):
        p.predict(ds)
    p.save(str(tmp_path / "p"))
    with pytest.raises(actstore.InvalidArgumentError, match="layers were not named"):
        Probe.load(str(tmp_path / "p")).predict(ds)
    np.testing.assert_array_equal(Probe.load(str(tmp_path / "p")).predict(X), p.predict(X))
