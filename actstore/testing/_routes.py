"""Endpoint handlers of the loopback Hub: ``route(state, request) -> Response``, no sockets.

Each handler reads a :class:`~._state.Request` and the :class:`~._state.HubState` (store,
tokens, faults, counters) and returns a :class:`~._state.Response`; the HTTP plumbing lives in
:mod:`.hub_server`. The endpoint list is in :mod:`actstore.testing`'s docstring.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import time
from typing import Any
from urllib.parse import parse_qs, quote

from ._state import PREFIX, TYPES, FileSlice, HubState, Request, Response
from ._store import FileEntry, HubStoreError, RepoStore, dir_json, list_tree, wants_lfs

__all__ = ["is_resolve", "route"]

_LFS_JSON = "application/vnd.git-lfs+json"
XET_TOKEN_SECONDS = 3600  # lifetime of a Xet access token


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def is_resolve(req: Request) -> bool:
    """Whether ``req`` downloads a file (``/{prefix}{repo}/resolve/...``)."""
    return "/resolve/" in req.path and not req.path.startswith("/api/")


def route(state: HubState, req: Request) -> Response:
    """The answer to ``req``; every Hub error becomes an error response."""
    if not is_resolve(req) and state.fault("drop", req.path):
        return Response(cut=True)  # a resolve GET is cut mid-body instead (Response.drop)
    try:
        return _route(state, req, req.parts)
    except HubStoreError as err:
        return Response.error(err)


def _no_route(req: Request) -> HubStoreError:
    return HubStoreError(404, "NotFound", f"no route for {req.method} {req.path}")


def _route(st: HubState, req: Request, parts: list[str]) -> Response:
    m = req.method
    if parts[:1] == ["api"]:
        return _api(st, req, parts[1:])
    if parts and parts[0].startswith("lfs-"):
        return _lfs_transfer(st, req, parts)
    repo_type = "model"
    if parts and parts[0] in ("datasets", "spaces"):
        repo_type, parts = TYPES[parts[0]], parts[1:]
    if len(parts) >= 5 and parts[2] == "resolve" and m in ("GET", "HEAD"):
        return _resolve(st, req, repo_type, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
    if len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
        return _lfs_batch(st, req, repo_type, f"{parts[0]}/{parts[1][:-4]}")
    raise _no_route(req)


def _api(st: HubState, req: Request, parts: list[str]) -> Response:
    m = req.method
    if parts == ["repos", "create"] and m == "POST":
        return _create_repo(st, req)
    if parts == ["repos", "delete"] and m == "DELETE":
        return _delete_repo(st, req)
    if parts == ["whoami-v2"]:
        return _whoami(st, req)
    if parts == ["validate-yaml"]:
        return Response.of_json({"errors": [], "warnings": []})
    if len(parts) < 3 or parts[0] not in TYPES:
        raise _no_route(req)
    repo_type, repo_id, rest = TYPES[parts[0]], f"{parts[1]}/{parts[2]}", parts[3:]
    if not rest and m == "GET":
        return _repo_info(st, req, repo_type, repo_id, "main")
    if len(rest) >= 2 and rest[0] == "revision" and m == "GET":
        return _repo_info(st, req, repo_type, repo_id, "/".join(rest[1:]))
    if len(rest) >= 2 and rest[0] == "preupload" and m == "POST":
        return _preupload(st, req, repo_type, repo_id, "/".join(rest[1:]))
    if len(rest) >= 2 and rest[0] == "commit" and m == "POST":
        return _commit(st, req, repo_type, repo_id, "/".join(rest[1:]))
    if len(rest) >= 2 and rest[0] == "tree" and m == "GET":
        return _tree(st, req, repo_type, repo_id, rest[1], "/".join(rest[2:]))
    if len(rest) == 2 and rest[0] == "branch" and m == "POST":
        return _create_branch(st, req, repo_type, repo_id, rest[1])
    if len(rest) == 2 and rest[0] == "paths-info" and m == "POST":
        return _paths_info(st, req, repo_type, repo_id, rest[1])
    if len(rest) >= 1 and rest[0] in ("xet-write-token", "xet-read-token") and m == "GET":
        return _xet_token(st, req, repo_type, repo_id, rest[0] == "xet-write-token",
                          "/".join(rest[1:]) or "main")
    raise _no_route(req)


# ---- repositories ------------------------------------------------------------------------
def _repo_args(st: HubState, req: Request) -> tuple[str, str, dict[str, Any]]:
    body = req.json()
    repo_type = body.get("type") or "model"
    tok = st.token(req)
    ns = body.get("organization") or (tok.user if tok else "")
    name = body.get("name", "")
    if repo_type not in PREFIX or not name or "/" in name:
        raise HubStoreError(400, "BadRequest", f"invalid repo name {ns}/{name} or type {repo_type}")
    return repo_type, f"{ns}/{name}", body


def _create_repo(st: HubState, req: Request) -> Response:
    repo_type, repo_id, body = _repo_args(st, req)
    st.need_write(req, repo_id.split("/")[0])
    url = {"url": st.repo_url(repo_type, repo_id)}
    with st.store.lock:
        if st.store.load(repo_type, repo_id) is not None:
            # the client reads "url" from the 409 when exist_ok=True
            return Response.of_json(
                {**url, "error": "You already created this repo"}, 409,
                {"X-Error-Code": "RepoExists", "X-Error-Message": "You already created this repo"})
        private = body.get("visibility") == "private" or bool(body.get("private"))
        st.store.create(repo_type, repo_id, private)
    return Response.of_json(url)


def _delete_repo(st: HubState, req: Request) -> Response:
    repo_type, repo_id, _ = _repo_args(st, req)
    st.load_repo(req, repo_type, repo_id, write=True)
    st.store.delete(repo_type, repo_id)
    return Response.of_json({})


def _whoami(st: HubState, req: Request) -> Response:
    tok = st.token(req)
    if tok is None:
        raise HubStoreError(401, "Unauthorized", "You must be authenticated")
    orgs = sorted((tok.namespaces or frozenset()) - {tok.user})
    return Response.of_json({"type": "user", "name": tok.user, "orgs": [{"name": o} for o in orgs],
                             "auth": {"accessToken": {"role": "write" if tok.write else "read"}}})


def _repo_info(st: HubState, req: Request, repo_type: str, repo_id: str, rev: str) -> Response:
    repo = st.load_repo(req, repo_type, repo_id)
    sha = st.store.resolve_rev(repo, rev)
    files = RepoStore.files(repo, sha)
    return Response.of_json({
        "id": repo_id, "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
        "author": repo_id.split("/")[0], "sha": sha, "private": repo["private"],
        "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
        "lastModified": _iso(repo["commits"][sha]["date"]), "createdAt": _iso(repo["created"]),
        "siblings": [{"rfilename": p, "size": e.size} for p, e in sorted(files.items())],
    })


def _create_branch(st: HubState, req: Request, repo_type: str, repo_id: str, branch: str) -> Response:
    store = st.store
    st.load_repo(req, repo_type, repo_id, write=True)
    start = req.json().get("startingPoint") or "main"
    with store.lock:
        repo = store.load(repo_type, repo_id)
        assert repo is not None
        if branch in repo["branches"]:
            raise HubStoreError(409, "BranchExists", f"Branch {branch} already exists")
        repo["branches"][branch] = store.resolve_rev(repo, start)
        store.save(repo_type, repo_id, repo)
    return Response.of_json({})


def _head(st: HubState, req: Request, repo_type: str, repo_id: str, rev: str, *,
          write: bool = False) -> tuple[dict[str, Any], str, dict[str, FileEntry]]:
    repo = st.load_repo(req, repo_type, repo_id, write=write)
    sha = st.store.resolve_rev(repo, rev)
    return repo, sha, RepoStore.files(repo, sha)


# ---- commits -----------------------------------------------------------------------------
def _preupload(st: HubState, req: Request, repo_type: str, repo_id: str, rev: str) -> Response:
    """Upload modes: "lfs" (sent through Xet by a client with Xet on) or "regular"."""
    _, _, files = _head(st, req, repo_type, repo_id, rev, write=True)
    out = []
    for f in req.json().get("files", []):
        sample = base64.b64decode(f.get("sample", ""))
        lfs = wants_lfs(f["path"], int(f["size"]), sample)
        remote = files.get(f["path"])
        oid = None
        if remote is not None and remote.lfs == lfs:
            oid = remote.sha256 if lfs else remote.sha1
        out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False, "oid": oid})
    return Response.of_json({"files": out})


def _commit(st: HubState, req: Request, repo_type: str, repo_id: str, branch: str) -> Response:
    st.load_repo(req, repo_type, repo_id, write=True)
    lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
    if not lines or lines[0].get("key") != "header":
        raise HubStoreError(400, "BadRequest", "commit payload must start with a header line")
    header = lines[0]["value"]
    ops = [(ln["key"], ln["value"]) for ln in lines[1:]]
    sha = st.store.commit(repo_type, repo_id, branch, header.get("parentCommit"), ops,
                          header.get("summary") or "", find_xet=st.cas.lookup if st.xet else None)
    url = f"{st.repo_url(repo_type, repo_id)}/commit/{sha}"
    return Response.of_json({"commitOid": sha, "commitUrl": url, "success": True})


# ---- Xet ---------------------------------------------------------------------------------
def _xet_token(st: HubState, req: Request, repo_type: str, repo_id: str, write: bool,
               rev: str) -> Response:
    """A Xet CAS token: JSON for ``hf_xet`` and the ``X-Xet-*`` headers for the Python client."""
    if not st.xet:
        raise HubStoreError(404, "NotFound", f"Xet is not enabled on this server ({req.path})")
    st.load_repo(req, repo_type, repo_id, write=write)
    if write:
        fault = st.fault("upload", req.path)
        if fault is not None:
            raise HubStoreError(fault.status, "InjectedFault", "injected upload failure")
        with st.lock:
            st.xet_grants += 1
    exp = int(time.time()) + XET_TOKEN_SECONDS
    token = st.sign("xet", repo_type, repo_id, "write" if write else "read", exp)
    headers = {"X-Xet-Cas-Url": st.cas.url, "X-Xet-Access-Token": token,
               "X-Xet-Token-Expiration": str(exp)}
    return Response.of_json({"accessToken": token, "exp": exp, "casUrl": st.cas.url}, headers=headers)


# ---- listing -----------------------------------------------------------------------------
def _tree(st: HubState, req: Request, repo_type: str, repo_id: str, rev: str, path: str) -> Response:
    _, _, files = _head(st, req, repo_type, repo_id, rev)
    q = req.query
    recursive = q.get("recursive", ["false"])[0].lower() == "true"
    entries = list_tree(files, path, recursive, xet=st.xet)
    start = int(q.get("cursor", ["0"])[0])
    page = entries[start:start + st.page_size]
    headers = {}
    if start + st.page_size < len(entries):
        nxt = f"{st.endpoint}{req.path}?recursive={str(recursive).lower()}&expand=false" \
              f"&cursor={start + st.page_size}"
        headers["Link"] = f'<{nxt}>; rel="next"'
    return Response.of_json(page, headers=headers)


def _paths_info(st: HubState, req: Request, repo_type: str, repo_id: str, rev: str) -> Response:
    _, _, files = _head(st, req, repo_type, repo_id, rev)
    form = parse_qs(req.body.decode())
    out: list[dict[str, Any]] = []
    for p in form.get("paths", []):
        p = p.strip("/")
        if p in files:
            out.append(files[p].tree_json(xet=st.xet))
        elif any(f.startswith(p + "/") for f in files):
            out.append(dir_json(p))
    return Response.of_json(out)


# ---- LFS ---------------------------------------------------------------------------------
def _lfs_batch(st: HubState, req: Request, repo_type: str, repo_id: str) -> Response:
    repo = st.load_repo(req, repo_type, repo_id, write=True)
    known = set(repo.get("lfs", []))
    body = req.json()
    store = st.store
    verify = {"href": f"{st.endpoint}/lfs-verify/{repo_type}/{repo_id}",
              "header": {"Authorization": req.header("Authorization")}}
    use_multipart = "multipart" in body.get("transfers", ["basic"])
    objects, transfer = [], "basic"
    for o in body.get("objects", []):
        oid, size = str(o["oid"]), int(o["size"])
        store.blob_path(oid)  # validates the oid
        if oid in known and store.has_blob(oid, size):
            objects.append({"oid": oid, "size": size})  # no actions: already stored
            continue
        if use_multipart and size > st.multipart_threshold:
            transfer = "multipart"
            n = math.ceil(size / st.chunk_size)
            parts = {str(i): f"{st.endpoint}/lfs-part/{oid}/{size}/{i}?sig={st.sign(oid, size, i)}"
                     for i in range(1, n + 1)}
            upload = {"href": f"{st.endpoint}/lfs-complete/{oid}/{size}?sig={st.sign(oid, size, 'c')}",
                      "header": {"chunk_size": str(st.chunk_size), **parts}}
        else:
            upload = {"href": f"{st.endpoint}/lfs-upload/{oid}/{size}?sig={st.sign(oid, size)}"}
        objects.append({"oid": oid, "size": size, "actions": {"upload": upload, "verify": verify}})
    return Response.of_json({"transfer": transfer, "objects": objects}, content_type=_LFS_JSON)


def _write_body(req: Request, path: str) -> None:
    with open(path, "wb") as f:
        f.write(req.body)


def _lfs_transfer(st: HubState, req: Request, parts: list[str]) -> Response:
    store = st.store
    sig = req.query.get("sig", [""])[0]
    kind = parts[0]
    if kind == "lfs-verify":
        repo_type, repo_id = parts[1], f"{parts[2]}/{parts[3]}"
        st.load_repo(req, repo_type, repo_id, write=True)
        body = req.json()
        if not store.has_blob(str(body.get("oid")), int(body.get("size", -1))):
            raise HubStoreError(404, "ObjectMissing", f"LFS object {body.get('oid')} not stored")
        store.add_lfs_object(repo_type, repo_id, str(body["oid"]))
        return Response.of_json({"success": True})
    if len(parts) < 3:
        raise _no_route(req)
    oid, size = parts[1], int(parts[2])
    if kind in ("lfs-upload", "lfs-part") and req.method == "PUT":
        with st.lock:
            st.lfs_uploads += 1
        fault = st.fault("upload", req.path)
        if fault is not None:
            raise HubStoreError(fault.status, "InjectedFault", "injected upload failure")
    if kind == "lfs-upload" and req.method == "PUT":
        st.check_sig(sig, oid, size)
        tmp = store.tmp_path()
        _write_body(req, tmp)
        store.put_blob_file(tmp, oid, size)
        return Response.of_json({})
    if kind == "lfs-part" and req.method == "PUT":
        part = int(parts[3])
        st.check_sig(sig, oid, size, part)
        _write_body(req, os.path.join(store.root, "uploads", f"{oid}.part{part}"))
        etag = hashlib.md5(req.body, usedforsecurity=False).hexdigest()
        return Response(200, b"", {"ETag": f'"{etag}"'})
    if kind == "lfs-complete" and req.method == "POST":
        st.check_sig(sig, oid, size, "c")
        return _complete_multipart(st, req, oid, size)
    raise _no_route(req)


def _complete_multipart(st: HubState, req: Request, oid: str, size: int) -> Response:
    store = st.store
    numbers = sorted(int(p["partNumber"]) for p in req.json().get("parts", []))
    if numbers != list(range(1, len(numbers) + 1)):
        raise HubStoreError(400, "BadRequest", f"multipart parts {numbers} are not 1..n")
    tmp = store.tmp_path()
    with open(tmp, "wb") as out:
        for n in numbers:
            part = os.path.join(store.root, "uploads", f"{oid}.part{n}")
            if not os.path.exists(part):
                raise HubStoreError(400, "BadRequest", f"part {n} of {oid} was never uploaded")
            with open(part, "rb") as f:
                while chunk := f.read(1 << 20):
                    out.write(chunk)
    store.put_blob_file(tmp, oid, size)
    for n in numbers:
        os.unlink(os.path.join(store.root, "uploads", f"{oid}.part{n}"))
    return Response.of_json({})


# ---- downloads ---------------------------------------------------------------------------
def _parse_range(spec: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` -> inclusive (start, end) clamped to the file; None = unsatisfiable."""
    a, _, b = spec.removeprefix("bytes=").split(",")[0].strip().partition("-")
    if not a:  # suffix range: the last b bytes
        start, end = max(size - int(b), 0), size - 1
    else:
        start, end = int(a), (int(b) if b else size - 1)
    end = min(end, size - 1)
    return None if start >= size or start > end else (start, end)


def _resolve(st: HubState, req: Request, repo_type: str, repo_id: str, rev: str,
             path: str) -> Response:
    """A file: its headers (Xet ones for Xet files when Xet is on) and bytes, Range honoured.

    The bytes of a Xet file are served from a copy materialised from the CAS on first use
    (the "LFS bridge" a plain HTTP client such as ``HfFileSystem.open`` reads).
    """
    _, sha, files = _head(st, req, repo_type, repo_id, rev)
    entry = files.get(path)
    if entry is None:
        err = HubStoreError(404, "EntryNotFound", f"{path} does not exist at {rev}")
        return Response.error(err, {"X-Repo-Commit": sha})
    headers = {"X-Repo-Commit": sha, "ETag": f'"{entry.etag}"', "Accept-Ranges": "bytes"}
    if entry.lfs:
        headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
    if st.xet and entry.xet:
        auth = f"{st.endpoint}/api/{repo_type}s/{repo_id}/xet-read-token/{quote(sha, safe='')}"
        headers.update({"X-Xet-Hash": entry.xet, "Link": f'<{auth}>; rel="xet-auth"'})
    start, end, status = 0, entry.size - 1, 200
    rng = req.header("Range")
    if rng and req.method == "GET":
        parsed = _parse_range(rng, entry.size)
        if parsed is None:
            err = HubStoreError(416, "RangeNotSatisfiable", f"range {rng} outside {entry.size} bytes")
            return Response.error(err, {"Content-Range": f"bytes */{entry.size}"})
        (start, end), status = parsed, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
    blob = st.store.blob_path(entry.sha256)
    if req.method == "GET" and entry.xet and not st.store.has_blob(entry.sha256, entry.size):
        st.cas.materialise(entry.xet, entry.size, entry.sha256, blob)
    length = end - start + 1
    drop = req.method == "GET" and st.fault("drop", req.path) is not None
    return Response(status, b"", headers, "application/octet-stream",
                    file=FileSlice(blob, start, length, repo_id, path), drop=drop)
