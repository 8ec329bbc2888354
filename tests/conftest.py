"""Test-session setup shared by every test module.

huggingface_hub and datasets read ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_DISABLE_XET`` and
``HF_HUB_OFFLINE`` when they are imported, so the loopback Hub's port and a private HF home
are fixed here, before any test module can import them. The Hub test server fixture binds
the port chosen here (``ACTSTORE_TEST_HUB_PORT``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_SESSION_TMP = tempfile.mkdtemp(prefix="actstore-tests-")
# removed when the session ends (pytest_unconfigure), and at exit if pytest never got there
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)
_HUB_PORT = _free_port()

os.environ["ACTSTORE_TEST_HUB_PORT"] = str(_HUB_PORT)
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{_HUB_PORT}"
os.environ["HF_HOME"] = os.path.join(_SESSION_TMP, "hf_home")
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_UPDATE_DOWNLOAD_COUNTS"] = "0"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("ACTSTORE_OFFLINE", None)
os.environ["ACTSTORE_CACHE_DIR"] = os.path.join(_SESSION_TMP, "actstore_cache")
os.environ["LMPROBE_CACHE_DIR"] = os.path.join(_SESSION_TMP, "lmprobe_cache")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_unconfigure(config) -> None:  # noqa: ARG001 - pytest hook signature
    """Remove the session's HF home and caches (about 13 MB a run otherwise left in /tmp)."""
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


# -- the loopback Hub server (one per session, on the port chosen above) ------------------
import pytest  # noqa: E402

HUB_TOKENS = {
    "hf_test_write": "write",  # write access to every namespace
    "hf_test_read": "read",  # read-only
    "hf_test_alice": {"role": "write", "user": "alice"},  # write to namespace "alice" only
}


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """A Hub-compatible server on 127.0.0.1:$ACTSTORE_TEST_HUB_PORT, driven by the real client."""
    from actstore.testing import HubServer

    with HubServer(tmp_path_factory.mktemp("hub_store"), port=_HUB_PORT, tokens=HUB_TOKENS) as server:
        yield server


# -- a real S3 server (moto in server mode on 127.0.0.1), for the cache, stream and probe tests --
@pytest.fixture(scope="session")
def moto_server():
    from moto.server import ThreadedMotoServer

    port = _free_port()
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
    fs = s3fs.S3FileSystem(**opts)
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    return opts, bucket
