"""Fixtures for the stream tests (the dataset writers are in ``streamdata``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamdata import write_full, write_pooled


@pytest.fixture(scope="session")
def pooled(tmp_path_factory) -> Path:
    """300 rows, two layers, 8-dim float32, small shards (many shard boundaries)."""
    return write_pooled(tmp_path_factory.mktemp("pooled") / "ds", 300)


@pytest.fixture(scope="session")
def pooled_bf16(tmp_path_factory) -> Path:
    return write_pooled(tmp_path_factory.mktemp("pooled16") / "ds", 120, dtype="bfloat16")


@pytest.fixture(scope="session")
def full(tmp_path_factory) -> Path:
    """40 rows of 1-5 tokens, full-sequence storage."""
    return write_full(tmp_path_factory.mktemp("full") / "ds")


# moto_server and s3 come from tests/conftest.py
