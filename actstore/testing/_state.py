"""What the loopback Hub's routes work on: a parsed request, a response, and the server state.

The routes (:mod:`._routes`) are functions ``route(state, request) -> Response``: they never
touch a socket. :mod:`.hub_server` turns HTTP into :class:`Request` objects and writes each
:class:`Response` back (streaming a :class:`FileSlice` and honouring ``drop``/``cut``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ._store import HubStoreError, RepoStore
from ._xet import XetCas

__all__ = ["PREFIX", "TYPES", "FileSlice", "Fault", "HubState", "Request", "Response", "TokenInfo"]

TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}  # URL segment -> repo type
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}  # repo type -> URL prefix


@dataclass(frozen=True)
class Request:
    """One HTTP request, fully read: ``method``, raw ``target`` (path?query), lower-cased
    ``headers`` and the whole ``body``."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def parts(self) -> list[str]:
        """The path's segments, each unquoted on its own (``%2F`` stays inside a segment)."""
        return [unquote(p) for p in self.path.split("/")[1:]]

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise HubStoreError(400, "BadRequest", "request body is not JSON") from None


@dataclass(frozen=True)
class FileSlice:
    """``length`` bytes of the file at ``path`` from ``start``, counted as served for
    ``(repo_id, repo_path)``."""

    path: str
    start: int
    length: int
    repo_id: str
    repo_path: str


@dataclass
class Response:
    """What to answer. ``file`` streams a slice instead of ``body``; ``drop`` cuts the
    connection after half of it; ``cut`` closes the connection without any answer."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    file: FileSlice | None = None
    drop: bool = False
    cut: bool = False

    @classmethod
    def of_json(cls, obj: Any, status: int = 200, headers: dict[str, str] | None = None,
                content_type: str = "application/json") -> Response:
        return cls(status, json.dumps(obj).encode(), dict(headers or {}), content_type)

    @classmethod
    def error(cls, err: HubStoreError, headers: dict[str, str] | None = None) -> Response:
        h = {"X-Error-Code": err.code, "X-Error-Message": err.message.replace("\n", " ")}
        return cls.of_json({"error": err.message}, err.status, {**h, **(headers or {})})


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
class Fault:
    """An injected failure: ``kind`` "upload" or "drop", on requests whose path holds ``match``,
    from the ``nth`` such request on, ``times`` in a row."""

    kind: str
    match: str
    nth: int
    times: int
    status: int
    seen: int = 0


class HubState:
    """Everything the routes read and change: the store, tokens, settings, faults, counters.

    Thread-safe where the server's threads share it (faults and counters under one lock; the
    store has its own).
    """

    def __init__(self, store: RepoStore, tokens: dict[str, TokenInfo], *, page_size: int,
                 multipart_threshold: int, chunk_size: int, xet: bool) -> None:
        self.store, self.tokens = store, tokens
        self.page_size, self.multipart_threshold, self.chunk_size = (
            page_size, multipart_threshold, chunk_size)
        self.endpoint = ""  # set once the server is bound
        self.cas = XetCas(store.root)
        self.xet = xet
        self.secret = secrets.token_bytes(16)
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self.served: Counter[tuple[str, str]] = Counter()
        self.requests: list[tuple[str, str, int]] = []
        self.lfs_uploads = 0
        self.xet_grants = 0  # write tokens handed out (one per upload session)

    # ---- faults and counters -------------------------------------------------------------
    def fault(self, kind: str, path: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.kind == kind and f.match in path:
                    f.seen += 1
                    if f.nth <= f.seen < f.nth + f.times:
                        return f
        return None

    def count(self, repo_id: str, path: str, n: int) -> None:
        with self.lock:
            self.served[(repo_id, path)] += n

    def log(self, method: str, target: str, status: int) -> None:
        with self.lock:
            self.requests.append((method, target, status))

    # ---- signed LFS URLs -----------------------------------------------------------------
    def sign(self, *parts: object) -> str:
        msg = "/".join(str(p) for p in parts).encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()

    def check_sig(self, sig: str, *parts: object) -> None:
        if not hmac.compare_digest(sig, self.sign(*parts)):
            raise HubStoreError(403, "Forbidden", "invalid or missing upload signature")

    # ---- auth ----------------------------------------------------------------------------
    def token(self, req: Request) -> TokenInfo | None:
        """The caller's token; an unknown token is refused outright, as on the Hub."""
        raw = req.header("Authorization")
        if not raw:
            return None
        info = self.tokens.get(raw.removeprefix("Bearer ").strip())
        if info is None:
            raise HubStoreError(401, "Unauthorized", "Invalid credentials in Authorization header")
        return info

    def need_write(self, req: Request, namespace: str) -> TokenInfo:
        tok = self.token(req)
        if tok is None:
            raise HubStoreError(401, "Unauthorized",
                                "You must be authenticated with a write token to do this")
        if not tok.write or not tok.allows(namespace):
            raise HubStoreError(403, "Forbidden",
                                f"Your token has no write access to namespace {namespace!r}")
        return tok

    def load_repo(self, req: Request, repo_type: str, repo_id: str, *,
                  write: bool = False) -> dict[str, Any]:
        ns = repo_id.split("/")[0]
        if write:
            self.need_write(req, ns)
        tok = self.token(req)
        repo = self.store.load(repo_type, repo_id)
        hidden = repo is not None and repo["private"] and (tok is None or not tok.allows(ns))
        if repo is None or hidden:
            status = 401 if tok is None else 404
            raise HubStoreError(status, "RepoNotFound", f"Repository Not Found for {repo_id}")
        return repo

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.endpoint}/{PREFIX[repo_type]}{repo_id}"
