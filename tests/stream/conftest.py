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


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3 server on 127.0.0.1 (as in tests/cache/conftest.py)."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture()
def s3(moto_server, monkeypatch):
    """(storage_options, fresh bucket name) on the moto server, through real s3fs."""
    import uuid

    import s3fs

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    opts = {"key": "testing", "secret": "testing", "skip_instance_cache": True,
            "client_kwargs": {"endpoint_url": moto_server}}
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**opts).mkdir(bucket)
    return opts, bucket
