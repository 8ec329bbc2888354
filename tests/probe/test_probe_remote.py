"""A probe trained on a dataset read from the Hub equals one trained on the local original."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

import actstore
from actstore import Probe

WRITE = "hf_test_write"
pytestmark = pytest.mark.hub


def test_probe_on_remote_dataset_equals_probe_on_local(hub, probe_dataset, tmp_path):
    repo = f"team/acts-{uuid.uuid4().hex[:8]}"
    actstore.push_dataset(probe_dataset, repo, token=WRITE, endpoint=hub.endpoint, progress=False)
    local = actstore.open_dataset(probe_dataset)
    pulled = actstore.pull_dataset(repo, layers=[2], out=str(tmp_path / "pulled"), token=WRITE,
                                   endpoint=hub.endpoint)
    # lazy: byte-range reads through actstore/cache, nothing downloaded up front
    lazy = actstore.open_dataset(f"hf://datasets/{repo}",
                                 storage_options={"token": WRITE, "endpoint": hub.endpoint})
    assert not str(lazy.url).startswith(str(tmp_path))
    train, test = np.arange(250), np.arange(250, 300)
    fits = [Probe(layers=2, random_state=0).fit(ds.select(train), "label") for ds in (local, pulled, lazy)]
    ref = fits[0].predict_proba(local.select(test))
    for probe, ds in zip(fits[1:], (pulled, lazy)):
        np.testing.assert_array_equal(probe.pipeline_[-1].coef_, fits[0].pipeline_[-1].coef_)
        np.testing.assert_array_equal(probe.pipeline_[-1].intercept_, fits[0].pipeline_[-1].intercept_)
        np.testing.assert_array_equal(probe.predict_proba(ds.select(test)), ref)
        np.testing.assert_array_equal(probe.predict(ds.select(test)), fits[0].predict(local.select(test)))


def test_sweep_on_remote_dataset_equals_local(hub, probe_dataset):
    repo = f"team/acts-{uuid.uuid4().hex[:8]}"
    actstore.push_dataset(probe_dataset, repo, token=WRITE, endpoint=hub.endpoint, progress=False)
    lazy = actstore.open_dataset(f"hf://datasets/{repo}",
                                 storage_options={"token": WRITE, "endpoint": hub.endpoint})
    remote = actstore.sweep_layers(lazy, "label", layers=[1, 2], cv=3, seed=0).to_frame()
    local = actstore.sweep_layers(actstore.open_dataset(probe_dataset), "label", layers=[1, 2], cv=3,
                                  seed=0).to_frame()
    assert remote.equals(local)
