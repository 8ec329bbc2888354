"""A Hub-compatible HTTP server on 127.0.0.1 for tests, driven by the real ``huggingface_hub``.

:class:`HubServer` owns the lifecycle and the test-facing API (fault injection, transfer
accounting, the Xet switch); ``_Handler`` turns HTTP into :class:`~._state.Request` objects,
asks :func:`~._routes.route` for the :class:`~._state.Response` and writes it back. The
endpoints are listed in :mod:`actstore.testing`.

Examples
--------
>>> from actstore.testing import HubServer
>>> with HubServer("/tmp/hub", tokens={"hf_w": "write"}, xet=True) as hub:   # doctest: +SKIP
...     HfApi(endpoint=hub.endpoint, token="hf_w").create_repo("me/x", repo_type="dataset")
"""

from __future__ import annotations

import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import _routes
from ._state import Fault, HubState, Request, Response, TokenInfo
from ._store import RepoStore

__all__ = ["HubServer", "TokenInfo"]


class HubServer:
    """A loopback Hub: ``with HubServer(root_dir, port=0, tokens={...}) as hub: hub.endpoint``.

    Parameters
    ----------
    root_dir : str or PathLike
        Where blobs, repositories and the Xet CAS folder are stored (survives a restart on
        the same directory).
    port : int
        TCP port on 127.0.0.1; 0 picks a free one.
    tokens : dict
        Token string -> ``"write"``, ``"read"`` or ``{"role": "write", "user": "me",
        "orgs": ["org"]}`` (namespaced). Requests without a valid token are anonymous.
    page_size : int
        Entries per ``tree`` page (the Hub uses 1000); smaller values exercise pagination.
    multipart_threshold, chunk_size : int
        LFS objects larger than ``multipart_threshold`` are uploaded in ``chunk_size`` parts.
    xet : bool
        Speak Xet as the Hub does (Xet tokens on a ``local://`` CAS folder, Xet headers on
        downloads), so a client with Xet on (the default) uploads and downloads through
        ``hf_xet``; classic LFS uploads are still accepted. With ``xet=False`` the server is
        LFS only, for a client with ``HF_HUB_DISABLE_XET=1``. Can be switched at runtime.
    """

    def __init__(self, root_dir: str | os.PathLike[str], port: int = 0, *,
                 tokens: dict[str, str | dict[str, Any]] | None = None, page_size: int = 1000,
                 multipart_threshold: int = 10 * 1024 * 1024,
                 chunk_size: int = 5 * 1024 * 1024, xet: bool = False) -> None:
        self.state = HubState(RepoStore(root_dir), {t: TokenInfo.parse(v) for t, v in (tokens or {}).items()},
                              page_size=page_size, multipart_threshold=multipart_threshold,
                              chunk_size=chunk_size, xet=xet)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.state = self.state  # type: ignore[attr-defined]
        self.state.endpoint = self.endpoint
        self._thread: threading.Thread | None = None

    # ---- settings the tests read and change ----------------------------------------------
    @property
    def store(self) -> RepoStore:
        return self.state.store

    @property
    def tokens(self) -> dict[str, TokenInfo]:
        return self.state.tokens

    @property
    def xet(self) -> bool:
        """Whether the server speaks Xet (see the class docstring)."""
        return self.state.xet

    @xet.setter
    def xet(self, on: bool) -> None:
        self.state.xet = bool(on)

    @property
    def cas_url(self) -> str:
        """The ``local://`` CAS folder handed out in Xet tokens."""
        return self.state.cas.url

    @property
    def page_size(self) -> int:
        return self.state.page_size

    @page_size.setter
    def page_size(self, n: int) -> None:
        self.state.page_size = n

    @property
    def multipart_threshold(self) -> int:
        return self.state.multipart_threshold

    @property
    def chunk_size(self) -> int:
        return self.state.chunk_size

    # ---- lifecycle ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- fault injection and accounting -------------------------------------------------
    def fail_uploads(self, nth: int = 1, *, times: int = 1, status: int = 400) -> None:
        """Fail uploads from the ``nth`` on: LFS upload requests (basic PUTs and multipart
        parts) and, with Xet, the write-token requests that start each Xet upload session.

        ``times`` consecutive uploads fail with ``status``. A 5xx is retried by the client;
        a 4xx is not, so the default interrupts the push.
        """
        with self.state.lock:
            self.state.faults.append(Fault("upload", "", nth, times, status))

    def drop_connection(self, match: str, nth: int = 1, *, times: int = 1) -> None:
        """Cut the connection of the ``nth`` request whose path contains ``match``.

        A file download gets its headers and half its body before the cut; any other
        request is closed without an answer.
        """
        with self.state.lock:
            self.state.faults.append(Fault("drop", match, nth, times, 0))

    def clear_faults(self) -> None:
        with self.state.lock:
            self.state.faults.clear()

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """``(method, path, status)`` of every request answered, in order."""
        return self.state.requests

    @property
    def upload_count(self) -> int:
        """Uploads seen: LFS upload requests plus the file uploads Xet shards record."""
        return self.state.lfs_uploads + self.state.cas.file_uploads()

    @property
    def xet_bytes_stored(self) -> int:
        """Bytes of Xet data in the CAS folder (a re-upload of known content adds none)."""
        return self.state.cas.stored_bytes()

    def bytes_served(self, repo_id: str | None = None, prefix: str = "") -> int:
        """File bytes sent over HTTP by ``resolve`` GETs, optionally for one repo and a path
        prefix (bytes ``hf_xet`` reads from the CAS folder are not counted)."""
        with self.state.lock:
            return sum(n for (r, p), n in self.state.served.items()
                       if (repo_id is None or r == repo_id) and p.startswith(prefix))

    def reset_counters(self) -> None:
        with self.state.lock:
            self.state.served.clear()
            self.state.requests.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet; requests are recorded in HubServer.requests

    def _read_body(self) -> bytes:
        # always drain the body, even before an early error: keep-alive reuses the socket
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        if len(body) != n:
            raise ConnectionError("client closed the connection mid-request")
        return body

    def _dispatch(self) -> None:
        state: HubState = self.server.state
        try:
            body = self._read_body()
            req = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            resp = _routes.route(state, req)
            if resp.cut:
                self._cut()
                return
            self._write(state, req, resp)
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True

    def _write(self, state: HubState, req: Request, resp: Response) -> None:
        length = resp.file.length if resp.file is not None else len(resp.body)
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(length))
        for k, v in resp.headers.items():
            self.send_header(k, v)
        state.log(req.method, req.target, resp.status)  # logged before it is answered
        self.end_headers()
        if req.method == "HEAD":
            return
        if resp.file is None:
            self.wfile.write(resp.body)
            return
        f_slice = resp.file
        limit = length // 2 if resp.drop else length
        sent = 0
        with open(f_slice.path, "rb") as f:
            f.seek(f_slice.start)
            while sent < limit:
                chunk = f.read(min(1 << 20, limit - sent))
                if not chunk:
                    break
                state.count(f_slice.repo_id, f_slice.repo_path, len(chunk))  # before it leaves
                self.wfile.write(chunk)
                sent += len(chunk)
        if resp.drop:
            self._cut()

    def _cut(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _dispatch
