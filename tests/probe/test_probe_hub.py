"""``Probe.push_to_hub`` / ``Probe.from_hub`` against the loopback Hub server (real client)."""

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
    sha = probe.push_to_hub(repo, token=WRITE, endpoint=hub.endpoint, commit_message="probe v1",
                            metrics=probe.evaluate(X[200:], y[200:]), base_model="synthetic")
    loaded = Probe.from_hub(repo, token=WRITE, endpoint=hub.endpoint)
    assert loaded.hub_revision_ == sha and loaded.layers_ == [2]
    np.testing.assert_array_equal(loaded.predict(X), probe.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), probe.predict_proba(X), atol=1e-6)
    from huggingface_hub import HfApi, hf_hub_download

    card = open(hf_hub_download(repo, "README.md", token=WRITE, endpoint=hub.endpoint)).read()
    assert card.startswith("---\nlibrary_name: actstore\n")
    assert "- interpretability" in card and "base_model: synthetic" in card
    assert "accuracy" in card and "Probe.from_hub" in card and "logistic_regression" in card
    files = set(HfApi(endpoint=hub.endpoint, token=WRITE).list_repo_files(repo))
    assert {"probe.json", "probe.safetensors", "README.md"} <= files


def test_from_hub_pins_the_requested_revision(hub, arrays):
    X, y, _ = arrays
    repo = _repo("pinned")
    first = Probe(layers=2, random_state=0).fit(X, y)
    sha1 = first.push_to_hub(repo, token=WRITE, endpoint=hub.endpoint)
    Probe(layers=1, random_state=0).fit(X, y).push_to_hub(repo, token=WRITE, endpoint=hub.endpoint)
    assert Probe.from_hub(repo, token=WRITE, endpoint=hub.endpoint).layers_ == [1]
    old = Probe.from_hub(repo, revision=sha1, token=WRITE, endpoint=hub.endpoint)
    assert old.layers_ == [2] and old.hub_revision_ == sha1
    np.testing.assert_allclose(old.decision_function(X), first.decision_function(X), rtol=1e-5)


def test_from_hub_refuses_tampered_weights(hub, arrays, tmp_path):
    X, y, _ = arrays
    repo = _repo("tampered")
    Probe(layers=2, random_state=0).fit(X, y).push_to_hub(repo, token=WRITE, endpoint=hub.endpoint)
    other = tmp_path / "other"
    Probe(layers=2, random_state=1).fit(X[:150], y[:150]).save(str(other))
    from huggingface_hub import HfApi

    HfApi(endpoint=hub.endpoint, token=WRITE).upload_file(
        path_or_fileobj=str(other / "probe.safetensors"), path_in_repo="probe.safetensors", repo_id=repo)
    with pytest.raises(actstore.IntegrityError, match="sha256"):
        Probe.from_hub(repo, token=WRITE, endpoint=hub.endpoint)


def test_from_hub_errors_name_the_repo(hub, arrays):
    X, y, _ = arrays
    with pytest.raises(actstore.DatasetNotFoundError, match="Probe \\(model\\) repo 'team/missing-probe'"):
        Probe.from_hub("team/missing-probe", token=WRITE, endpoint=hub.endpoint)
    probe = Probe(layers=2).fit(X, y)
    repo = _repo("noauth")
    with pytest.raises(actstore.HubAuthError, match=repo):
        probe.push_to_hub(repo, token=False, endpoint=hub.endpoint)
