"""A streaming pass over s3://, http:// and hf:// fetches each tensor byte once (counted on
the servers) and fits exactly what the local pass fits."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

import actstore
from actstore.format.writer import DatasetWriter

# one 2 MB shard per layer: the reader's first read of a shard (its 64 KiB header probe) is
# then 3% of the shard, so the whole pass stays within 1.05x the tensor bytes
LAYERS, ROWS, DIM = [0, 1, 2], 4000, 128
_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _range_server_class():
    # the cache tests' loopback HTTP range server (it counts every request and body byte)
    path = Path(__file__).resolve().parents[1] / "cache" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_actstore_cache_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RangeServer


class _CountingApp:
    """WSGI middleware in front of moto's S3 app: logs each GET's path, Range and body size."""

    def __init__(self, app) -> None:
        self.app, self.log, self.lock = app, [], threading.Lock()

    def __call__(self, environ, start_response):
        chunks = list(self.app(environ, start_response))
        if environ["REQUEST_METHOD"] == "GET":
            with self.lock:
                self.log.append({"path": environ.get("PATH_INFO", ""), "range": environ.get("HTTP_RANGE"),
                                 "bytes": sum(len(c) for c in chunks)})
        return chunks


@pytest.fixture(scope="module")
def counted_s3():
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = _CountingApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", _free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", app
    server.shutdown()


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("http-root"))
    server = _range_server_class()(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, root
    server.shutdown()
    server.server_close()


def _local(tmp_path) -> tuple[str, int]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=ROWS)
    X = rng.normal(size=(ROWS, len(LAYERS), DIM)).astype(np.float32)
    X[:, :, 0] += y[:, None]
    path = str(tmp_path / "ds")
    with DatasetWriter(path, model="synthetic", layers=LAYERS, dim=DIM, shard_bytes=DIM * 4 * ROWS) as w:
        w.add([f"p{i}" for i in range(ROWS)], hidden={L: X[:, j] for j, L in enumerate(LAYERS)}, labels=y.tolist())
    tensors = os.path.join(path, "tensors")
    return path, sum(os.path.getsize(os.path.join(tensors, f)) for f in os.listdir(tensors))


def _check_once(log: list[dict], tensor_bytes: int) -> None:
    """Every tensor byte fetched once: no overlapping ranges (but the header probe, a read
    from offset 0 once per shard), the payload and little more."""
    gets = [r for r in log if "tensors/" in r["path"]]
    seen: dict[str, list[tuple[int, int]]] = {}
    for r in gets:
        m = _RANGE.fullmatch(r["range"] or "")
        assert m, f"an unranged GET of {r['path']}"
        seen.setdefault(r["path"], []).append((int(m.group(1)), int(m.group(2)) + 1))
    for path, spans in seen.items():
        spans = sorted(s for s in spans if s[0] > 0)
        for (_, a1), (b0, b1) in zip(spans, spans[1:]):
            assert b0 >= a1, f"{path}: bytes {b0}-{min(a1, b1)} fetched twice"
    sent = sum(r["bytes"] for r in gets)
    assert ROWS * DIM * 4 * len(LAYERS) <= sent <= 1.05 * tensor_bytes


def _same_as_local(fit, path: str) -> None:
    local = actstore.fit_streaming(actstore.open_dataset(path), layers="all", block_rows=256)
    for key, probe in local.probes.items():
        np.testing.assert_array_equal(fit[key].pipeline_.W, probe.pipeline_.W)


def test_s3_pass_fetches_each_byte_once(counted_s3, tmp_path, monkeypatch):
    import s3fs

    endpoint, app = counted_s3
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    opts = {"key": "testing", "secret": "testing", "skip_instance_cache": True,
            "client_kwargs": {"endpoint_url": endpoint}}
    path, tensor_bytes = _local(tmp_path)
    fs, bucket = s3fs.S3FileSystem(**opts), f"b-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    fs.put(path, f"{bucket}/ds", recursive=True)
    ds = actstore.open_dataset(f"s3://{bucket}/ds", storage_options=opts, cache=False)
    app.log.clear()
    fit = actstore.fit_streaming(ds, layers="all", block_rows=256)
    _check_once(app.log, tensor_bytes)
    _same_as_local(fit, path)


def test_http_pass_fetches_each_byte_once(http, tmp_path):
    server, root = http
    path, tensor_bytes = _local(tmp_path)
    shutil.copytree(path, os.path.join(root, "ds"))
    ds = actstore.open_dataset(f"{server.url}/ds", cache=False)
    server.reset()
    fit = actstore.fit_streaming(ds, layers="all", block_rows=256)
    _check_once([r for r in server.log if r["method"] == "GET"], tensor_bytes)
    _same_as_local(fit, path)


@pytest.mark.hub
def test_hub_pass_without_cache_fetches_each_byte_once(hub, tmp_path):
    path, tensor_bytes = _local(tmp_path)
    repo = f"team/sfit-{uuid.uuid4().hex[:8]}"
    actstore.push_dataset(path, repo, token="hf_test_write", endpoint=hub.endpoint, progress=False)
    ds = actstore.open_dataset(f"hf://datasets/{repo}", cache=False,
                               storage_options={"token": "hf_test_write", "endpoint": hub.endpoint})
    hub.reset_counters()
    fit = actstore.fit_streaming(ds, layers="all", block_rows=256)
    served = hub.bytes_served(repo, "tensors/")
    assert ROWS * DIM * 4 * len(LAYERS) <= served <= 1.05 * tensor_bytes
    _same_as_local(fit, path)
