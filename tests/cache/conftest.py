"""Fixtures for the cache tests: a real moto S3 server and a loopback HTTP range server."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from actstore.format.writer import DatasetWriter


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RangeServer(ThreadingHTTPServer):
    """Serves files under ``root``; counts requests and body bytes; can ignore Range."""

    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops bursts of concurrent connects

    def __init__(self, root: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.ignore_range = False
        self.log: list[dict] = []
        self.lock = threading.Lock()
        # optional network model for benchmarks: one shared link of this many bytes/s, and
        # a fixed latency per request (overlapping across concurrent requests)
        self.link_bps: float | None = None
        self.latency_s = 0.0
        self._link_free = 0.0

    def throttle(self, nbytes: int) -> None:
        if self.link_bps is None:
            return
        with self.lock:
            start = max(time.monotonic(), self._link_free)
            self._link_free = start + nbytes / self.link_bps
            done = self._link_free
        time.sleep(max(0.0, done - time.monotonic()) + self.latency_s)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.log.clear()

    def bytes_sent(self, prefix: str = "") -> int:
        with self.lock:
            return sum(r["bytes"] for r in self.log if r["path"].startswith(prefix))


class _Handler(BaseHTTPRequestHandler):
    server: RangeServer
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers
    disable_nagle_algorithm = True  # else header and body writes stall on delayed ACKs (40 ms)

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def _file(self) -> str | None:
        rel = self.path.split("?", 1)[0].lstrip("/")
        full = os.path.normpath(os.path.join(self.server.root, rel))
        return full if full.startswith(self.server.root) and os.path.isfile(full) else None

    def _record(self, status: int, nbytes: int, rng: str | None) -> None:
        with self.server.lock:
            self.server.log.append({"method": self.command, "path": self.path.lstrip("/"),
                                    "status": status, "bytes": nbytes, "range": rng})

    def _headers(self, full: str) -> tuple[int, str]:
        st = os.stat(full)
        return st.st_size, '"' + hashlib.md5(f"{st.st_size}-{st.st_mtime_ns}".encode()).hexdigest() + '"'

    def do_HEAD(self) -> None:
        full = self._file()
        if full is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size, etag = self._headers(full)
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self._record(200, 0, None)
        self.end_headers()

    def _control(self) -> bool:
        """``/__control?...``: lets a benchmark drive a server running in another process."""
        if not self.path.startswith("/__control"):
            return False
        from urllib.parse import parse_qs, urlsplit

        q = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        srv = self.server
        if q.get("reset"):
            srv.reset()
        if "bps" in q:
            srv.link_bps = float(q["bps"]) or None
        if "latency" in q:
            srv.latency_s = float(q["latency"])
        with srv.lock:
            body = json.dumps({"bytes": sum(r["bytes"] for r in srv.log), "requests": len(srv.log)}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return True

    def do_GET(self) -> None:
        if self._control():
            return
        full = self._file()
        if full is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self._record(404, 0, None)
            self.end_headers()
            return
        size, etag = self._headers(full)
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        with open(full, "rb") as f:
            if m and not self.server.ignore_range:
                start = int(m.group(1))
                end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
                f.seek(start)
                body = f.read(end - start + 1)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                status = 206
            else:
                body = f.read()
                self.send_response(200)
                status = 200
        self.server.throttle(len(body))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        # record before the body goes out: a client that has its bytes must find them counted
        self._record(status, len(body), rng)
        self.end_headers()
        self.wfile.write(body)


def serve_forever(root: str) -> None:
    """Run a RangeServer in this process and print its URL (for benchmarks)."""
    server = RangeServer(root)
    print(server.url, flush=True)
    server.serve_forever()



@pytest.fixture(scope="session")
def http_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("http-root"))


@pytest.fixture(scope="session")
def http_server(http_root):
    server = RangeServer(http_root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture()
def served(http_server):
    http_server.ignore_range = False
    http_server.reset()
    yield http_server
    http_server.ignore_range = False


def write_dataset(path: str, *, rows: int = 2000, dim: int = 96, layers=(0, 1),
                  shard_bytes: int = 1 << 30, seed: int = 0, dtype: str = "float32") -> dict:
    """A small real v2 dataset; returns the arrays written, per layer."""
    rng = np.random.default_rng(seed)
    arrays = {L: rng.standard_normal((rows, dim)).astype(np.float32) for L in layers}
    with DatasetWriter(path, model="test/model", layers=list(layers), dim=dim, dtype=dtype,
                       pooling="last_token", shard_bytes=shard_bytes, overwrite=True) as w:
        for s in range(0, rows, 500):
            w.add([f"prompt {i}" for i in range(s, min(rows, s + 500))],
                  hidden={L: a[s : s + 500] for L, a in arrays.items()},
                  labels=[i % 2 for i in range(s, min(rows, s + 500))])
    return arrays


@pytest.fixture(scope="session")
def write_ds():
    """The :func:`write_dataset` helper, as a fixture (test modules cannot import conftest)."""
    return write_dataset


if __name__ == "__main__":
    import sys

    serve_forever(sys.argv[1])
