"""A Hub-compatible HTTP server on 127.0.0.1 for tests, driven by the real ``huggingface_hub``.

It answers every endpoint the 2.4.0 client uses for repos, commits, LFS (basic and multipart,
with HMAC-signed upload URLs, since the client sends no token there), tree listings with
pagination, paths-info and ``resolve`` with Range. Xet is never offered, so the client falls
back to classic LFS (set ``HF_HUB_DISABLE_XET=1`` before importing it).

Fault injection and transfer accounting make failures testable: :meth:`HubServer.fail_uploads`
fails LFS uploads, :meth:`HubServer.drop_connection` cuts a connection mid-response, and
:meth:`HubServer.bytes_served` tells how many file bytes ``resolve`` sent.

Examples
--------
>>> from actstore.testing import HubServer
>>> with HubServer("/tmp/hub", tokens={"hf_w": "write"}) as hub:   # doctest: +SKIP
...     HfApi(endpoint=hub.endpoint, token="hf_w").create_repo("me/x", repo_type="dataset")
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from ._store import HubStoreError, RepoStore

__all__ = ["HubServer", "TokenInfo"]

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


@dataclass(frozen=True)
class TokenInfo:
    """What a token may do: ``write`` access, in ``namespaces`` (``None`` = every namespace)."""

    user: str
    write: bool
    namespaces: frozenset[str] | None

    def allows(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    @classmethod
    def parse(cls, value: str | dict[str, Any]) -> TokenInfo:
        """``"write"``/``"read"`` (any namespace) or ``{"role", "user", "orgs"}``."""
        if isinstance(value, str):
            return cls(user="user", write=value == "write", namespaces=None)
        user = str(value.get("user", "user"))
        spaces = frozenset([user, *value.get("orgs", [])])
        return cls(user=user, write=value.get("role", "read") == "write", namespaces=spaces)


@dataclass
class _Fault:
    kind: str  # "upload" or "drop"
    match: str
    nth: int
    times: int
    status: int
    seen: int = 0


class HubServer:
    """A loopback Hub: ``with HubServer(root_dir, port=0, tokens={...}) as hub: hub.endpoint``.

    Parameters
    ----------
    root_dir : str or PathLike
        Where blobs and repositories are stored (survives a restart on the same directory).
    port : int
        TCP port on 127.0.0.1; 0 picks a free one.
    tokens : dict
        Token string -> ``"write"``, ``"read"`` or ``{"role": "write", "user": "me",
        "orgs": ["org"]}`` (namespaced). Requests without a valid token are anonymous.
    page_size : int
        Entries per ``tree`` page (the Hub uses 1000); smaller values exercise pagination.
    multipart_threshold, chunk_size : int
        LFS objects larger than ``multipart_threshold`` are uploaded in ``chunk_size`` parts.
    """

    def __init__(self, root_dir: str | os.PathLike[str], port: int = 0, *,
                 tokens: dict[str, str | dict[str, Any]] | None = None, page_size: int = 1000,
                 multipart_threshold: int = 10 * 1024 * 1024,
                 chunk_size: int = 5 * 1024 * 1024) -> None:
        self.store = RepoStore(root_dir)
        self.tokens = {t: TokenInfo.parse(v) for t, v in (tokens or {}).items()}
        self.page_size, self.multipart_threshold, self.chunk_size = (
            page_size, multipart_threshold, chunk_size)
        self._secret = secrets.token_bytes(16)
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._served: Counter[tuple[str, str]] = Counter()
        self.requests: list[tuple[str, str, int]] = []
        self.upload_count = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

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
        """Fail LFS upload requests (basic PUTs and multipart parts) from the ``nth`` on.

        ``times`` consecutive uploads fail with ``status``. A 5xx is retried by the client;
        a 4xx is not, so the default interrupts the push.
        """
        with self._lock:
            self._faults.append(_Fault("upload", "", nth, times, status))

    def drop_connection(self, match: str, nth: int = 1, *, times: int = 1) -> None:
        """Cut the connection of the ``nth`` request whose path contains ``match``.

        A file download gets its headers and half its body before the cut; any other
        request is closed without an answer.
        """
        with self._lock:
            self._faults.append(_Fault("drop", match, nth, times, 0))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _fault(self, kind: str, path: str) -> _Fault | None:
        with self._lock:
            for f in self._faults:
                if f.kind == kind and f.match in path:
                    f.seen += 1
                    if f.nth <= f.seen < f.nth + f.times:
                        return f
        return None

    def bytes_served(self, repo_id: str | None = None, prefix: str = "") -> int:
        """File bytes sent by ``resolve`` GETs, optionally for one repo and a path prefix."""
        with self._lock:
            return sum(n for (r, p), n in self._served.items()
                       if (repo_id is None or r == repo_id) and p.startswith(prefix))

    def reset_counters(self) -> None:
        with self._lock:
            self._served.clear()
            self.requests.clear()

    def _count(self, repo_id: str, path: str, n: int) -> None:
        with self._lock:
            self._served[(repo_id, path)] += n

    # ---- signed LFS URLs -----------------------------------------------------------------
    def sign(self, *parts: object) -> str:
        msg = "/".join(str(p) for p in parts).encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def check_sig(self, sig: str, *parts: object) -> None:
        if not hmac.compare_digest(sig, self.sign(*parts)):
            raise HubStoreError(403, "Forbidden", "invalid or missing upload signature")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet; requests are recorded in HubServer.requests

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[no-any-return]

    # ---- request plumbing ----------------------------------------------------------------
    def _body(self) -> bytes:
        # always drain the body, even before an early error: keep-alive reuses the socket
        if self._read_body is not None:
            return self._read_body
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self._read_body = b"".join(chunks)
        else:
            self._read_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._read_body

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self._body()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.hub.requests.append((self.command, self.path, status))  # logged before it is answered
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, err: HubStoreError, headers: dict[str, str] | None = None) -> None:
        h = {"X-Error-Code": err.code, "X-Error-Message": err.message.replace("\n", " ")}
        self._json({"error": err.message}, err.status, {**h, **(headers or {})})

    def _dispatch(self) -> None:
        self._read_body: bytes | None = None
        self._split = urlsplit(self.path)
        # a resolve GET is cut mid-body in _routes._send_file instead
        if not self._is_resolve() and self.hub._fault("drop", self._split.path):
            self._body()
            self._cut()
            return
        try:
            _route(self)
        except HubStoreError as err:
            self._error(err)
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True

    def _is_resolve(self) -> bool:
        return "/resolve/" in self._split.path and not self._split.path.startswith("/api/")

    def _cut(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _dispatch

    # ---- auth ----------------------------------------------------------------------------
    def token(self) -> TokenInfo | None:
        """The caller's token; an unknown token is refused outright, as on the Hub."""
        raw = self.headers.get("Authorization", "")
        if not raw:
            return None
        tok = raw.removeprefix("Bearer ").strip()
        info = self.hub.tokens.get(tok)
        if info is None:
            raise HubStoreError(401, "Unauthorized", "Invalid credentials in Authorization header")
        return info

    def need_write(self, namespace: str) -> TokenInfo:
        tok = self.token()
        if tok is None:
            raise HubStoreError(401, "Unauthorized",
                                "You must be authenticated with a write token to do this")
        if not tok.write or not tok.allows(namespace):
            raise HubStoreError(403, "Forbidden",
                                f"Your token has no write access to namespace {namespace!r}")
        return tok

    def load_repo(self, repo_type: str, repo_id: str, *, write: bool = False) -> dict[str, Any]:
        ns = repo_id.split("/")[0]
        if write:
            self.need_write(ns)
        tok = self.token()
        repo = self.hub.store.load(repo_type, repo_id)
        hidden = repo is not None and repo["private"] and (tok is None or not tok.allows(ns))
        if repo is None or hidden:
            status = 401 if tok is None else 404
            raise HubStoreError(status, "RepoNotFound", f"Repository Not Found for {repo_id}")
        return repo


def _repo_url(h: _Handler, repo_type: str, repo_id: str) -> str:
    return f"{h.hub.endpoint}/{_PREFIX[repo_type]}{repo_id}"


def _route(h: _Handler) -> None:
    """Match the request path against the Hub's endpoints."""
    from . import _routes

    parts = [unquote(p) for p in h._split.path.split("/")[1:]]
    _routes.route(h, parts)
