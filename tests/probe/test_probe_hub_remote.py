"""Probes on the Hub, and probes trained on remote datasets equal probes trained locally."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

import actstore
from actstore import Probe

WRITE = "hf_test_write"
pytestmark = pytest.mark.hub


def _repo(prefix: str) -> str:
    return f"team/{prefix}-{uuid.uuid4().hex[:8]}"


def test_push_to_hub_and_from_hub_round_trip(hub, arrays):
    X, y, _ = arrays
    probe = Probe(layers=2, random_state=0).fit(X[:200], y[:200])
    repo = _repo("probe")
    sha = probe.push_to_hub(repo, token=WRITE, endpoint=hub.endpoint,
                            metrics=probe.evaluate(X[200:], y[200:]), base_model="synthetic")
    loaded = Probe.from_hub(repo, token=WRITE, endpoint=hub.endpoint)
    assert loaded.hub_revision_ == sha and loaded.layers_ == [2]
    np.testing.assert_array_equal(loaded.predict(X), probe.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), probe.predict_proba(X), atol=1e-6)
    from huggingface_hub import hf_hub_download

    card = open(hf_hub_download(repo, "README.md", token=WRITE, endpoint=hub.endpoint)).read()
    assert "library_name: actstore" in card and "base_model: synthetic" in card and "accuracy" in card


def test_from_hub_errors_name_the_repo(hub, arrays):
    X, y, _ = arrays
    with pytest.raises(actstore.DatasetNotFoundError, match="team/missing-probe"):
        Probe.from_hub("team/missing-probe", token=WRITE, endpoint=hub.endpoint)
    probe = Probe(layers=2).fit(X, y)
    with pytest.raises(actstore.HubAuthError, match="team/"):
        probe.push_to_hub(_repo("noauth"), token=False, endpoint=hub.endpoint)


def test_probe_on_remote_dataset_equals_probe_on_local(hub, probe_dataset, tmp_path):
    repo = _repo("acts")
    actstore.push_dataset(probe_dataset, repo, token=WRITE, endpoint=hub.endpoint, progress=False)
    local = actstore.open_dataset(probe_dataset)
    pulled = actstore.pull_dataset(repo, layers=[2], out=str(tmp_path / "pulled"), token=WRITE,
                                   endpoint=hub.endpoint)
    lazy = actstore.open_dataset(f"hf://datasets/{repo}",
                                 storage_options={"token": WRITE, "endpoint": hub.endpoint})
    rows = np.arange(250)
    fits = [Probe(layers=2, random_state=0).fit(ds.select(rows), "label") for ds in (local, pulled, lazy)]
    ref = fits[0].predict_proba(local.select(np.arange(250, 300)))
    for probe, ds in zip(fits[1:], (pulled, lazy)):
        np.testing.assert_array_equal(probe.pipeline_[-1].coef_, fits[0].pipeline_[-1].coef_)
        np.testing.assert_array_equal(probe.predict_proba(ds.select(np.arange(250, 300))), ref)
