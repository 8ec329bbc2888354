"""Test kit: a Hub-compatible server on loopback for testing code that uses ``huggingface_hub``.

:class:`HubServer` is driven by the real client (huggingface_hub 2.4.0, hf_xet 1.8.0), in
one of two modes chosen by the server: ``xet=True`` speaks Xet as the Hub does, for a client
with Xet on (its default); ``xet=False`` speaks classic LFS only, for a client with
``HF_HUB_DISABLE_XET=1`` (the client decides the upload protocol by itself and has no
fallback, so the two must agree). Token rules and fault injection work in both.

Endpoints, as the client was seen to send them (``{t}`` = ``models``/``datasets``/``spaces``,
``{tp}`` = ``""``/``datasets/``/``spaces/``, ``{repo}`` = ``ns/name``, ``{rev}`` = a branch
or a 40-hex commit, URL-quoted):

===========================================================  ==========================================
request                                                      answer
===========================================================  ==========================================
``POST /api/repos/create``                                   ``{"url"}``; 409 with ``url`` if it exists
``DELETE /api/repos/delete``                                 ``{}``
``GET /api/whoami-v2``                                       user, orgs, token role
``POST /api/validate-yaml``                                  ``{"errors": [], "warnings": []}``
``GET /api/{t}/{repo}[/revision/{rev}]``                     repo info: ``sha``, ``siblings``, ...
``POST /api/{t}/{repo}/preupload/{rev}``                     per file ``uploadMode`` ``lfs``/``regular``,
                                                             ``shouldIgnore``, remote ``oid``. With Xet
                                                             on, the client sends every ``lfs`` file
                                                             to Xet
``GET /api/{t}/{repo}/xet-write-token/{rev}``                (Xet) ``{"accessToken", "exp", "casUrl"}``
                                                             (``casUrl`` = ``local://<root>/xet-cas``)
                                                             and ``X-Xet-Cas-Url``,
                                                             ``X-Xet-Access-Token``,
                                                             ``X-Xet-Token-Expiration``; write access.
                                                             One per upload session (commit); then
                                                             ``hf_xet`` writes into the CAS folder
``GET /api/{t}/{repo}/xet-read-token/{rev}``                 (Xet) the same, read access
``POST /api/{t}/{repo}/commit/{rev}``                        NDJSON: header, ``file`` (base64),
                                                             ``lfsFile`` (sha256 oid: an LFS object,
                                                             or a Xet file found by sha256 in the
                                                             CAS shards), ``deletedFile``/``Folder``
``POST /api/{t}/{repo}/branch/{name}``                       ``{}``
``GET /api/{t}/{repo}/tree/{rev}[/{path}]``                  entries with directories; ``lfs``; with
                                                             Xet, ``xetHash``; ``Link: rel="next"``
``POST /api/{t}/{repo}/paths-info/{rev}``                    form ``paths=``; entries as ``tree``
``POST /{tp}{repo}.git/info/lfs/objects/batch``              (LFS) basic or multipart actions,
                                                             none for stored objects
``PUT /lfs-upload/...``, ``PUT /lfs-part/...``,              (LFS) HMAC-signed URLs (the client
``POST /lfs-complete/...``, ``POST /lfs-verify/...``         sends no token there)
``HEAD|GET /{tp}{repo}/resolve/{rev}/{path}``                ``X-Repo-Commit``, content ``ETag``,
                                                             ``X-Linked-*``; with Xet, ``X-Xet-Hash``
                                                             and ``Link: <.../xet-read-token/{sha}>;
                                                             rel="xet-auth"``, so ``hf_hub_download``
                                                             reads through ``hf_xet``. GET serves the
                                                             bytes with ``Range`` (206, clamped; 416
                                                             past the end): the "LFS bridge" that
                                                             ``HfFileSystem.open`` reads, also for
                                                             Xet files (materialised from the CAS)
===========================================================  ==========================================

What goes where with Xet on: ``hf_hub_download`` HEADs ``resolve``, gets a read token, and
reads the CAS; ``snapshot_download`` takes ``xetHash`` from ``tree`` and skips the HEAD;
``HfFileSystem.open().read()`` always uses ``resolve`` with ``Range``. :meth:`HubServer.bytes_served`
counts HTTP bytes only, so it is 0 for what ``hf_xet`` reads.

Examples
--------
>>> from actstore.testing import HubServer
>>> with HubServer("/tmp/hub", tokens={"hf_write": "write"}, xet=True) as hub:   # doctest: +SKIP
...     print(hub.endpoint, hub.cas_url)
"""

from __future__ import annotations

from .hub_server import HubServer, TokenInfo

__all__ = ["HubServer", "TokenInfo"]
