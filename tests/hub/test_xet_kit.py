"""The test kit itself: routes are pure functions of a request and a state object, the Xet
shard reader, and probes on the Hub in both modes (see conftest)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from actstore.testing import HubServer
from actstore.testing._routes import route
from actstore.testing._state import HubState, Request, TokenInfo
from actstore.testing._store import RepoStore
from actstore.testing._xet import parse_shard

from .conftest import WRITE


def _state(tmp_path: Path, xet: bool) -> HubState:
    st = HubState(RepoStore(tmp_path / "s"), {"w": TokenInfo.parse("write"), "r": TokenInfo.parse("read")},
                  page_size=1000, multipart_threshold=1 << 30, chunk_size=1 << 20, xet=xet)
    st.endpoint = "http://hub.invalid"
    return st


def _req(method: str, target: str, token: str | None = None, body: bytes = b"") -> Request:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return Request(method, target, headers, body)


def test_route_is_a_function_of_request_and_state(tmp_path: Path) -> None:
    st = _state(tmp_path, xet=True)
    made = route(st, _req("POST", "/api/repos/create", "w",
                          json.dumps({"name": "x", "organization": "me", "type": "dataset"}).encode()))
    assert made.status == 200 and json.loads(made.body)["url"] == "http://hub.invalid/datasets/me/x"
    tok = route(st, _req("GET", "/api/datasets/me/x/xet-write-token/main", "w"))
    body = json.loads(tok.body)
    assert tok.status == 200 and body["casUrl"] == st.cas.url and body["casUrl"].startswith("local://")
    assert tok.headers["X-Xet-Cas-Url"] == st.cas.url and int(body["exp"]) > 0
    # token rules: a read token gets no write token; anonymous gets nothing of a private repo
    assert route(st, _req("GET", "/api/datasets/me/x/xet-write-token/main", "r")).status == 403
    assert route(st, _req("GET", "/api/datasets/me/x/xet-read-token/main", "r")).status == 200
    st.xet = False
    off = route(st, _req("GET", "/api/datasets/me/x/xet-read-token/main", "r"))
    assert off.status == 404  # an LFS-only server offers no Xet
    # a fault is state too
    st.xet = True
    st.faults.append(__import__("actstore.testing._state", fromlist=["Fault"]).Fault("upload", "", 1, 1, 503))
    assert route(st, _req("GET", "/api/datasets/me/x/xet-write-token/main", "w")).status == 503
    # delete goes through the store's own method
    gone = route(st, _req("DELETE", "/api/repos/delete", "w",
                          json.dumps({"name": "x", "organization": "me", "type": "dataset"}).encode()))
    assert gone.status == 200 and st.store.load("dataset", "me/x") is None


def test_shard_reader_refuses_what_it_does_not_understand() -> None:
    from actstore.testing._store import HubStoreError

    with pytest.raises(HubStoreError, match="not a Xet shard"):
        parse_shard(b"\0" * 100)
    with pytest.raises(HubStoreError, match="past its end"):  # a huge segment count
        parse_shard(b"HFRepoMetaData".ljust(48, b"\0") + b"\1" * 48)
    with pytest.raises(HubStoreError, match="no end marker"):
        parse_shard(b"HFRepoMetaData".ljust(48, b"\0") + b"\1" * 32 + bytes(16))


def test_xet_upload_is_found_by_sha256_and_served_over_the_bridge(hub: HubServer, api, repo_id: str,
                                                                  tmp_path: Path) -> None:
    import hashlib

    from huggingface_hub import HfFileSystem

    data = np.random.default_rng(0).bytes(300_000)
    (tmp_path / "a.safetensors").write_bytes(data)
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_file(path_or_fileobj=str(tmp_path / "a.safetensors"), path_in_repo="t/a.safetensors",
                    repo_id=repo_id, repo_type="dataset")
    entry = hub.store.files(hub.store.load("dataset", repo_id),
                            hub.store.load("dataset", repo_id)["branches"]["main"])["t/a.safetensors"]
    assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert (entry.xet is not None) == hub.xet  # Xet on: stored as a Xet file, found by sha256
    fs = HfFileSystem(endpoint=hub.endpoint, token=WRITE, skip_instance_cache=True)
    with fs.open(f"datasets/{repo_id}/t/a.safetensors", "rb", cache_type="none") as f:
        f.seek(1000)
        assert f.read(100) == data[1000:1100]
    assert hub.bytes_served(repo_id) == 100  # Range honoured on the bridge in both modes


def test_probe_push_and_load_in_both_modes(hub: HubServer) -> None:
    from actstore import Probe

    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 3, 8)).astype("float32")
    y = (X[:, 2, 0] > 0).astype(int)
    probe = Probe(layers=2, random_state=0).fit(X, y)
    repo = f"team/probe-{uuid.uuid4().hex[:8]}"
    sha = probe.push_to_hub(repo, token=WRITE, endpoint=hub.endpoint)
    loaded = Probe.from_hub(repo, token=WRITE, endpoint=hub.endpoint)
    assert loaded.hub_revision_ == sha
    np.testing.assert_array_equal(loaded.predict(X), probe.predict(X))


def test_hub_errors_carry_repo_id_and_status(hub: HubServer, repo_id: str, local_ds,
                                             tmp_path: Path) -> None:
    import actstore
    from actstore.errors import DatasetNotFoundError, HubAuthError
    from actstore.hub_client import hub_errors

    path, *_ = local_ds
    with pytest.raises(HubAuthError) as auth:
        actstore.push_dataset(path, repo_id, token="hf_wrong", progress=False)
    assert auth.value.repo_id == repo_id and auth.value.status == 401
    with pytest.raises(DatasetNotFoundError, match="^Dataset repo 'org/nowhere-x' was not found") as nf:
        actstore.pull_dataset("org/nowhere-x", token=WRITE, out=tmp_path / "n", progress=False)
    assert nf.value.repo_id == "org/nowhere-x" and nf.value.status == 404
    from huggingface_hub import HfApi

    # the wording follows the repo's kind, no rewriting of messages afterwards
    with pytest.raises(DatasetNotFoundError, match="^Probe \\(model\\) repo 'team/none'"):
        with hub_errors("team/none", "load the probe from", repo_kind="probe (model)"):
            HfApi(endpoint=hub.endpoint, token=WRITE).model_info("team/none")
