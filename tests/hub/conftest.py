"""Fixtures of the Hub tests: one loopback Hub server for the whole session, in two modes.

The root conftest already pointed ``HF_ENDPOINT`` at ``127.0.0.1:$ACTSTORE_TEST_HUB_PORT``
before anything imported ``huggingface_hub``, and set ``HF_HUB_DISABLE_XET=1`` for the other
test areas. Every test here runs twice, choosing the mode through the server:

- ``xet``: the server speaks Xet, and the client is as a user gets it by default (Xet on:
  ``huggingface_hub.constants.HF_HUB_DISABLE_XET`` back to False for the test), so uploads and
  downloads go through ``hf_xet`` and a ``local://`` CAS folder;
- ``lfs``: the server speaks classic LFS only, and the client is as with
  ``HF_HUB_DISABLE_XET=1`` (the root conftest's setting).

The client decides the upload protocol by itself (no server answer switches it), so the
constant is set per test to what a user in that mode has; the client reads it on every call.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from actstore.testing import HubServer

WRITE = "hf_test_write"          # write access to every namespace
READ = "hf_test_read"            # read-only
ALICE = "hf_test_alice"          # write access to namespace "alice" only

pytestmark = pytest.mark.hub


# the session-wide ``hub`` server fixture lives in tests/conftest.py (probe tests use it too);
# the mode is a parameter of its own, so that one server serves both modes
@pytest.fixture(params=["lfs", "xet"])
def hub_mode(request: pytest.FixtureRequest) -> str:
    """``"xet"`` or ``"lfs"``: the protocol the server speaks (and the client uses) in this test."""
    return str(request.param)


@pytest.fixture(autouse=True)
def _hub_in_mode(hub_mode: str, hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import huggingface_hub.constants as hf_constants

    xet = hub_mode == "xet"
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", not xet)
    hub.xet = xet
    try:
        yield
    finally:
        hub.xet = False


@pytest.fixture(autouse=True)
def _clean_hub(hub: HubServer) -> Iterator[None]:
    hub.clear_faults()
    hub.reset_counters()
    yield
    hub.clear_faults()
    hub.page_size = 1000


@pytest.fixture
def repo_id() -> str:
    """A fresh repo id per test, so tests never see each other's commits."""
    return f"org/t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def api(hub: HubServer):  # type: ignore[no-untyped-def]
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.endpoint, token=WRITE)


def write_dataset(path, *, n: int = 40, layers=(0, 1, 2), dim: int = 16, seed: int = 0,
                  shard_bytes: int = 1024, views: bool = True):  # type: ignore[no-untyped-def]
    """A small real dataset (several shards per layer, a 'mean' view, int labels)."""
    import numpy as np

    from actstore.format.writer import DatasetWriter

    rng = np.random.default_rng(seed)
    pooling = ["last_token", "mean"] if views else "last_token"
    texts = [f"prompt {seed}-{i}" for i in range(n)]
    hidden = {L: rng.standard_normal((n, dim)).astype("float32") for L in layers}
    mean = {L: rng.standard_normal((n, dim)).astype("float32") for L in layers}
    with DatasetWriter(str(path), model="org/tiny-model", layers=list(layers), dim=dim,
                       pooling=pooling, shard_bytes=shard_bytes, revision="a" * 40) as w:
        w.add(texts, hidden=hidden, views={"mean": mean} if views else None,
              labels=[i % 2 for i in range(n)])
    return texts, hidden, mean


@pytest.fixture
def local_ds(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "ds"
    texts, hidden, mean = write_dataset(path)
    return path, texts, hidden, mean
