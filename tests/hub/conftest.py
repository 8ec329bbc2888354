"""Fixtures of the Hub tests: one loopback Hub server for the whole session.

The root conftest already pointed ``HF_ENDPOINT`` at ``127.0.0.1:$ACTSTORE_TEST_HUB_PORT`` and
disabled Xet before anything imported ``huggingface_hub``; the server binds that port here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from actstore.testing import HubServer  # noqa: F401 (fixture type)

WRITE = "hf_test_write"          # write access to every namespace
READ = "hf_test_read"            # read-only
ALICE = "hf_test_alice"          # write access to namespace "alice" only

pytestmark = pytest.mark.hub


# the session-wide ``hub`` server fixture lives in tests/conftest.py (probe tests use it too)


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
