"""Endpoint handlers of the loopback Hub (see ``shared/reference/hub-protocol.md``)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from ._store import FileEntry, HubStoreError, RepoStore, dir_json, list_tree, wants_lfs

if TYPE_CHECKING:  # pragma: no cover
    from .hub_server import _Handler

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
__all__ = ["route"]

_LFS_JSON = "application/vnd.git-lfs+json"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def _query(h: _Handler) -> dict[str, list[str]]:
    return parse_qs(h._split.query)


def _json_body(h: _Handler) -> Any:
    try:
        return json.loads(h._body() or b"{}")
    except ValueError:
        raise HubStoreError(400, "BadRequest", "request body is not JSON") from None


def route(h: _Handler, parts: list[str]) -> None:
    """Dispatch on the already-unquoted path segments."""
    m = h.command
    if parts[:1] == ["api"]:
        return _api(h, parts[1:])
    if parts and parts[0].startswith("lfs-"):
        return _lfs_transfer(h, parts)
    repo_type = "model"
    if parts and parts[0] in ("datasets", "spaces"):
        repo_type, parts = _TYPES[parts[0]], parts[1:]
    if len(parts) >= 5 and parts[2] == "resolve" and m in ("GET", "HEAD"):
        return _resolve(h, repo_type, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
    if len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
        return _lfs_batch(h, repo_type, f"{parts[0]}/{parts[1][:-4]}")
    raise HubStoreError(404, "NotFound", f"no route for {m} {h._split.path}")


def _api(h: _Handler, parts: list[str]) -> None:
    m = h.command
    if parts == ["repos", "create"] and m == "POST":
        return _create_repo(h)
    if parts == ["repos", "delete"] and m == "DELETE":
        return _delete_repo(h)
    if parts == ["whoami-v2"]:
        return _whoami(h)
    if parts == ["validate-yaml"]:
        h._body()
        return h._json({"errors": [], "warnings": []})
    if len(parts) < 3 or parts[0] not in _TYPES:
        raise HubStoreError(404, "NotFound", f"no route for {m} /api/{'/'.join(parts)}")
    repo_type, repo_id, rest = _TYPES[parts[0]], f"{parts[1]}/{parts[2]}", parts[3:]
    if not rest and m == "GET":
        return _repo_info(h, repo_type, repo_id, "main")
    if len(rest) >= 2 and rest[0] == "revision" and m == "GET":
        return _repo_info(h, repo_type, repo_id, "/".join(rest[1:]))
    if len(rest) >= 2 and rest[0] == "preupload" and m == "POST":
        return _preupload(h, repo_type, repo_id, "/".join(rest[1:]))
    if len(rest) >= 2 and rest[0] == "commit" and m == "POST":
        return _commit(h, repo_type, repo_id, "/".join(rest[1:]))
    if len(rest) >= 2 and rest[0] == "tree" and m == "GET":
        return _tree(h, repo_type, repo_id, rest[1], "/".join(rest[2:]))
    if len(rest) == 2 and rest[0] == "branch" and m == "POST":
        return _create_branch(h, repo_type, repo_id, rest[1])
    if len(rest) == 2 and rest[0] == "paths-info" and m == "POST":
        return _paths_info(h, repo_type, repo_id, rest[1])
    raise HubStoreError(404, "NotFound", f"no route for {m} /api/{'/'.join(parts)}")


# ---- repositories ------------------------------------------------------------------------
def _repo_args(h: _Handler) -> tuple[str, str, dict[str, Any]]:
    body = _json_body(h)
    repo_type = body.get("type") or "model"
    tok = h.token()
    ns = body.get("organization") or (tok.user if tok else "")
    name = body.get("name", "")
    if repo_type not in _PREFIX or not name or "/" in name:
        raise HubStoreError(400, "BadRequest", f"invalid repo name {ns}/{name} or type {repo_type}")
    return repo_type, f"{ns}/{name}", body


def _create_repo(h: _Handler) -> None:
    repo_type, repo_id, body = _repo_args(h)
    h.need_write(repo_id.split("/")[0])
    url = {"url": f"{h.hub.endpoint}/{_PREFIX[repo_type]}{repo_id}"}
    store = h.hub.store
    with store.lock:
        if store.load(repo_type, repo_id) is not None:
            # the client reads "url" from the 409 when exist_ok=True
            h._json({**url, "error": "You already created this repo"}, 409,
                    {"X-Error-Code": "RepoExists", "X-Error-Message": "You already created this repo"})
            return
        private = body.get("visibility") == "private" or bool(body.get("private"))
        store.create(repo_type, repo_id, private)
    h._json(url)


def _delete_repo(h: _Handler) -> None:
    repo_type, repo_id, _ = _repo_args(h)
    h.load_repo(repo_type, repo_id, write=True)
    os.unlink(h.hub.store._repo_file(repo_type, repo_id))
    h._json({})


def _whoami(h: _Handler) -> None:
    tok = h.token()
    if tok is None:
        raise HubStoreError(401, "Unauthorized", "You must be authenticated")
    orgs = sorted((tok.namespaces or frozenset()) - {tok.user})
    h._json({"type": "user", "name": tok.user, "orgs": [{"name": o} for o in orgs],
             "auth": {"accessToken": {"role": "write" if tok.write else "read"}}})


def _repo_info(h: _Handler, repo_type: str, repo_id: str, rev: str) -> None:
    repo = h.load_repo(repo_type, repo_id)
    sha = h.hub.store.resolve_rev(repo, rev)
    files = RepoStore.files(repo, sha)
    h._json({
        "id": repo_id, "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
        "author": repo_id.split("/")[0], "sha": sha, "private": repo["private"],
        "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
        "lastModified": _iso(repo["commits"][sha]["date"]), "createdAt": _iso(repo["created"]),
        "siblings": [{"rfilename": p, "size": e.size} for p, e in sorted(files.items())],
    })


def _create_branch(h: _Handler, repo_type: str, repo_id: str, branch: str) -> None:
    store = h.hub.store
    h.load_repo(repo_type, repo_id, write=True)
    start = _json_body(h).get("startingPoint") or "main"
    with store.lock:
        repo = store.load(repo_type, repo_id)
        assert repo is not None
        if branch in repo["branches"]:
            raise HubStoreError(409, "BranchExists", f"Branch {branch} already exists")
        repo["branches"][branch] = store.resolve_rev(repo, start)
        store.save(repo_type, repo_id, repo)
    h._json({})


def _head(h: _Handler, repo_type: str, repo_id: str, rev: str, *, write: bool = False
          ) -> tuple[dict[str, Any], str, dict[str, FileEntry]]:
    repo = h.load_repo(repo_type, repo_id, write=write)
    sha = h.hub.store.resolve_rev(repo, rev)
    return repo, sha, RepoStore.files(repo, sha)


# ---- commits -----------------------------------------------------------------------------
def _preupload(h: _Handler, repo_type: str, repo_id: str, rev: str) -> None:
    _, _, files = _head(h, repo_type, repo_id, rev, write=True)
    out = []
    for f in _json_body(h).get("files", []):
        sample = base64.b64decode(f.get("sample", ""))
        lfs = wants_lfs(f["path"], int(f["size"]), sample)
        remote = files.get(f["path"])
        oid = None
        if remote is not None and remote.lfs == lfs:
            oid = remote.sha256 if lfs else remote.sha1
        out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False, "oid": oid})
    h._json({"files": out})


def _commit(h: _Handler, repo_type: str, repo_id: str, branch: str) -> None:
    h.load_repo(repo_type, repo_id, write=True)
    lines = [json.loads(line) for line in h._body().splitlines() if line.strip()]
    if not lines or lines[0].get("key") != "header":
        raise HubStoreError(400, "BadRequest", "commit payload must start with a header line")
    header = lines[0]["value"]
    ops = [(ln["key"], ln["value"]) for ln in lines[1:]]
    sha = h.hub.store.commit(repo_type, repo_id, branch, header.get("parentCommit"), ops,
                             header.get("summary") or "")
    url = f"{h.hub.endpoint}/{_PREFIX[repo_type]}{repo_id}/commit/{sha}"
    h._json({"commitOid": sha, "commitUrl": url, "success": True})


# ---- listing -----------------------------------------------------------------------------
def _tree(h: _Handler, repo_type: str, repo_id: str, rev: str, path: str) -> None:
    _, _, files = _head(h, repo_type, repo_id, rev)
    q = _query(h)
    recursive = q.get("recursive", ["false"])[0].lower() == "true"
    entries = list_tree(files, path, recursive)
    start = int(q.get("cursor", ["0"])[0])
    page = entries[start:start + h.hub.page_size]
    headers = {}
    if start + h.hub.page_size < len(entries):
        base = h._split.path
        nxt = f"{h.hub.endpoint}{base}?recursive={str(recursive).lower()}&expand=false" \
              f"&cursor={start + h.hub.page_size}"
        headers["Link"] = f'<{nxt}>; rel="next"'
    h._json(page, headers=headers)


def _paths_info(h: _Handler, repo_type: str, repo_id: str, rev: str) -> None:
    _, _, files = _head(h, repo_type, repo_id, rev)
    form = parse_qs(h._body().decode())
    out: list[dict[str, Any]] = []
    for p in form.get("paths", []):
        p = p.strip("/")
        if p in files:
            out.append(files[p].tree_json())
        elif any(f.startswith(p + "/") for f in files):
            out.append(dir_json(p))
    h._json(out)


# ---- LFS ---------------------------------------------------------------------------------
def _lfs_batch(h: _Handler, repo_type: str, repo_id: str) -> None:
    repo = h.load_repo(repo_type, repo_id, write=True)
    known = set(repo.get("lfs", []))
    body = _json_body(h)
    hub, store = h.hub, h.hub.store
    verify = {"href": f"{hub.endpoint}/lfs-verify/{repo_type}/{repo_id}",
              "header": {"Authorization": h.headers.get("Authorization", "")}}
    use_multipart = "multipart" in body.get("transfers", ["basic"])
    objects, transfer = [], "basic"
    for o in body.get("objects", []):
        oid, size = str(o["oid"]), int(o["size"])
        store.blob_path(oid)  # validates the oid
        if oid in known and store.has_blob(oid, size):
            objects.append({"oid": oid, "size": size})  # no actions: already stored
            continue
        if use_multipart and size > hub.multipart_threshold:
            transfer = "multipart"
            n = math.ceil(size / hub.chunk_size)
            parts = {str(i): f"{hub.endpoint}/lfs-part/{oid}/{size}/{i}?sig={hub.sign(oid, size, i)}"
                     for i in range(1, n + 1)}
            upload = {"href": f"{hub.endpoint}/lfs-complete/{oid}/{size}?sig={hub.sign(oid, size, 'c')}",
                      "header": {"chunk_size": str(hub.chunk_size), **parts}}
        else:
            upload = {"href": f"{hub.endpoint}/lfs-upload/{oid}/{size}?sig={hub.sign(oid, size)}"}
        objects.append({"oid": oid, "size": size, "actions": {"upload": upload, "verify": verify}})
    h._send(200, json.dumps({"transfer": transfer, "objects": objects}).encode(),
            content_type=_LFS_JSON)


def _stream_to(h: _Handler, path: str) -> int:
    n = int(h.headers.get("Content-Length") or 0)
    left = n
    with open(path, "wb") as f:
        while left:
            chunk = h.rfile.read(min(left, 1 << 20))
            if not chunk:
                raise ConnectionError("client closed the connection mid-upload")
            f.write(chunk)
            left -= len(chunk)
    h._read_body = b""
    return n


def _lfs_transfer(h: _Handler, parts: list[str]) -> None:
    hub, store = h.hub, h.hub.store
    sig = _query(h).get("sig", [""])[0]
    kind = parts[0]
    if kind == "lfs-verify":
        repo_type, repo_id = parts[1], f"{parts[2]}/{parts[3]}"
        h.load_repo(repo_type, repo_id, write=True)
        body = _json_body(h)
        if not store.has_blob(str(body.get("oid")), int(body.get("size", -1))):
            raise HubStoreError(404, "ObjectMissing", f"LFS object {body.get('oid')} not stored")
        store.add_lfs_object(repo_type, repo_id, str(body["oid"]))
        return h._json({"success": True})
    oid, size = parts[1], int(parts[2])
    if kind in ("lfs-upload", "lfs-part") and h.command == "PUT":
        hub.upload_count += 1
        fault = hub._fault("upload", h._split.path)
        if fault is not None:
            h._body()
            raise HubStoreError(fault.status, "InjectedFault", "injected upload failure")
    if kind == "lfs-upload" and h.command == "PUT":
        hub.check_sig(sig, oid, size)
        tmp = store.tmp_path()
        _stream_to(h, tmp)
        store.put_blob_file(tmp, oid, size)
        return h._json({})
    if kind == "lfs-part" and h.command == "PUT":
        part = int(parts[3])
        hub.check_sig(sig, oid, size, part)
        dest = os.path.join(store.root, "uploads", f"{oid}.part{part}")
        _stream_to(h, dest)
        etag = hashlib.md5(open(dest, "rb").read(), usedforsecurity=False).hexdigest()
        return h._send(200, b"", {"ETag": f'"{etag}"'})
    if kind == "lfs-complete" and h.command == "POST":
        hub.check_sig(sig, oid, size, "c")
        return _complete_multipart(h, oid, size)
    raise HubStoreError(404, "NotFound", f"no route for {h.command} {h._split.path}")


def _complete_multipart(h: _Handler, oid: str, size: int) -> None:
    store = h.hub.store
    numbers = sorted(int(p["partNumber"]) for p in _json_body(h).get("parts", []))
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
    h._json({})


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


def _resolve(h: _Handler, repo_type: str, repo_id: str, rev: str, path: str) -> None:
    repo, sha, files = _head(h, repo_type, repo_id, rev)
    entry = files.get(path)
    if entry is None:
        raise_with = {"X-Repo-Commit": sha}
        err = HubStoreError(404, "EntryNotFound", f"{path} does not exist at {rev}")
        return h._error(err, raise_with)
    headers = {"X-Repo-Commit": sha, "ETag": f'"{entry.etag}"', "Accept-Ranges": "bytes"}
    if entry.lfs:
        headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
    start, end, status = 0, entry.size - 1, 200
    rng = h.headers.get("Range")
    if rng and h.command == "GET":
        parsed = _parse_range(rng, entry.size)
        if parsed is None:
            err = HubStoreError(416, "RangeNotSatisfiable", f"range {rng} outside {entry.size} bytes")
            return h._error(err, {"Content-Range": f"bytes */{entry.size}"})
        (start, end), status = parsed, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
    _send_file(h, status, headers, h.hub.store.blob_path(entry.sha256), start, end - start + 1,
               repo_id, path)


def _send_file(h: _Handler, status: int, headers: dict[str, str], blob: str, start: int,
               length: int, repo_id: str, path: str) -> None:
    h._body()
    h.send_response(status)
    h.send_header("Content-Type", "application/octet-stream")
    h.send_header("Content-Length", str(length))
    for k, v in headers.items():
        h.send_header(k, v)
    h.end_headers()
    h.hub.requests.append((h.command, h.path, status))
    if h.command == "HEAD":
        return
    drop = h.hub._fault("drop", h._split.path)
    limit = length // 2 if drop else length
    sent = 0
    with open(blob, "rb") as f:
        f.seek(start)
        while sent < limit:
            chunk = f.read(min(1 << 20, limit - sent))
            if not chunk:
                break
            h.hub._count(repo_id, path, len(chunk))  # before the bytes leave: no race with tests
            h.wfile.write(chunk)
            sent += len(chunk)
    if drop:
        h._cut()


