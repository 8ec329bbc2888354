"""Servers the guides' code reaches offline: S3 (moto), a plain HTTP range server, a Hub."""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _range_server_class():
    # the cache tests' loopback HTTP server (Range, ETag); conftest files cannot be imported
    spec = importlib.util.spec_from_file_location("_cache_conftest", ROOT / "tests/cache/conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.RangeServer


@pytest.fixture(scope="session")
def docs_env(tmp_path_factory):
    """The environment a guide runs in: its servers' addresses and credentials."""
    import s3fs
    from moto.server import ThreadedMotoServer

    from actstore.testing import HubServer

    base = tmp_path_factory.mktemp("docs-servers")
    moto_port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    http_root = base / "http"
    http_root.mkdir()
    http = _range_server_class()(str(http_root))
    threading.Thread(target=http.serve_forever, daemon=True).start()
    hub_port = _free_port()
    hub = HubServer(base / "hub", port=hub_port, tokens={"hf_docs_write": "write"})
    hub.__enter__()
    env = dict(os.environ)
    env.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
        "HF_ENDPOINT": f"http://127.0.0.1:{hub_port}", "HF_TOKEN": "hf_docs_write",
        "DOCS_HTTP_ROOT": str(http_root), "DOCS_HTTP_URL": http.url.rstrip("/"),
        "ACTSTORE_CACHE_DIR": str(base / "cache"), "HF_HOME": str(base / "hf_home"),
        "MPLBACKEND": "Agg",
    })
    s3fs.S3FileSystem(key="testing", secret="testing",
                      client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]}).mkdir("team-bucket")
    try:
        yield env
    finally:
        hub.__exit__(None, None, None)
        http.shutdown()
        moto.stop()
