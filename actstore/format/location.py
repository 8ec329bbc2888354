"""Where a dataset lives: a URL or path parsed once into what every layer routes on.

Every part of actstore that takes a dataset location — ``open_dataset``, the byte sources,
the writer's target, the extraction run folder, the cache — asks :func:`resolve` once and
routes on the answer, instead of sniffing ``"://"`` again (the habit of zarr's
``storage/_common.py::make_store``: parse the URL once, route on it). A filesystem object is
described by :func:`fs_protocols` / :func:`fs_is_local` / :func:`fs_is_http`, the one place
that knows fsspec's ``protocol`` attribute may be a string or a tuple.

It lives in ``format/`` (not the cache) because the reader's byte sources and the writer's
target need it, and ``format`` must not import the storage layer above it.

Examples
--------
>>> loc = resolve("hf://datasets/org/name@v1/sub")
>>> loc.protocol, loc.repo, loc.revision, loc.is_local
('hf', 'org/name', 'v1', False)
>>> resolve("/data/ds").is_local, resolve("file:///data/ds").path
(True, '/data/ds')
>>> resolve("hf://datasets/org/name", revision="main").url
'hf://datasets/org/name@main'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError

if TYPE_CHECKING:  # fsspec is imported only when a filesystem is really needed
    from fsspec import AbstractFileSystem

__all__ = ["IN_PROCESS", "Location", "fs_is_http", "fs_is_local", "fs_protocols", "resolve"]

#: Protocols read in this process without a network (no cache in front of them).
IN_PROCESS = frozenset({"file", "local", "memory"})


@dataclass(frozen=True)
class Location:
    """A dataset location, parsed once.

    Attributes
    ----------
    url : str
        The location as text, with a Hub revision spliced in when one was given apart.
    protocol : str
        The scheme of the innermost URL (``"file"`` for a plain path).
    protocols : tuple of str
        Every scheme of a chained URL (``simplecache::s3://b/ds`` -> ``("simplecache", "s3")``).
    path : str
        For a local location the folder on disk (``file://`` removed); else ``url``.
    is_local : bool
        A folder on this machine, read and written with plain OS calls.
    repo, revision : str or None
        For ``hf://`` URLs: the repo id (``org/name``) and the revision pinned in the URL.
    """

    url: str
    protocol: str
    protocols: tuple[str, ...]
    path: str
    is_local: bool
    repo: str | None = None
    revision: str | None = None

    @property
    def in_process(self) -> bool:
        """Read without a network (a local folder, ``local://``, ``memory://``): no cache."""
        return self.protocol in IN_PROCESS

    def filesystem(self, storage_options: dict[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
        """``(fsspec filesystem, root path on it)`` for this location (imports fsspec)."""
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.path if self.is_local else self.url,
                                         **(storage_options or {}))
        return fs, root


def _scheme(part: str) -> str:
    return part.split("://", 1)[0].lower() if "://" in part else part.lower()


def resolve(url: str | os.PathLike[str], *, revision: str | None = None) -> Location:
    """Parse a local path or fsspec URL into a :class:`Location`.

    Parameters
    ----------
    url : str or path
        ``/data/ds``, ``file:///data/ds``, ``s3://bucket/ds``, ``hf://datasets/org/name@rev``...
    revision : str, optional
        Hub revision for an ``hf://`` URL (spliced in as ``@rev``).

    Raises
    ------
    InvalidArgumentError
        ``revision`` for a URL that is not ``hf://``, or one that disagrees with the URL's.
    """
    text = os.fspath(url)
    parts = text.split("::")  # chained URLs: "simplecache::s3://bucket/ds"
    last = parts[-1]
    protocol = _scheme(last) if "://" in last else "file"
    protocols = tuple(_scheme(p) for p in parts[:-1]) + (protocol,)
    is_local = len(parts) == 1 and protocol == "file"
    if revision is not None:
        if protocol != "hf" or len(parts) != 1:
            raise InvalidArgumentError(
                f"revision= applies to hf:// URLs only; got {text!r}. Pin other stores by path."
            )
        text = _with_revision(text, revision)
    repo, rev = _hf_parts(text) if protocol == "hf" and len(parts) == 1 else (None, None)
    path = text.removeprefix("file://") if is_local else text
    return Location(text, protocol, protocols, path, is_local, repo, rev)


def _hf_split(url: str) -> tuple[str, str, str, str]:
    """``hf://datasets/org/name@rev/sub`` -> ``("datasets", "org", "name@rev", "sub")``."""
    head, _, rest = url[len("hf://"):].partition("/")
    if head not in ("datasets", "spaces", "models"):  # "hf://org/name" is a model repo
        head, rest = "", url[len("hf://"):]
    org, _, tail = rest.partition("/")
    name, _, sub = tail.partition("/")
    return head, org, name, sub


def _hf_parts(url: str) -> tuple[str, str | None]:
    """``hf://datasets/org/name@rev/...`` -> ``("org/name", "rev")``."""
    _, org, name, _ = _hf_split(url)
    name, _, rev = name.partition("@")
    return f"{org}/{name}", (rev or None)


def _with_revision(url: str, revision: str) -> str:
    """Pin an ``hf://`` URL to ``revision`` (``hf://datasets/org/name@rev/...``)."""
    head, org, name, sub = _hf_split(url)
    if "@" in name:
        pinned = name.split("@", 1)[1]
        if pinned != revision:
            raise InvalidArgumentError(
                f"The URL {url!r} already pins revision {pinned!r} but revision={revision!r} "
                "was given; give one of them."
            )
        return url
    prefix = f"hf://{head}/" if head else "hf://"
    return f"{prefix}{org}/{name}@{revision}" + (f"/{sub}" if sub else "")


def fs_protocols(fs: AbstractFileSystem) -> tuple[str, ...]:
    """The protocol names of an fsspec filesystem (its ``protocol`` is a str or a tuple)."""
    protocol = getattr(fs, "protocol", ())
    return tuple(protocol) if isinstance(protocol, (tuple, list)) else (str(protocol),)


def fs_is_local(fs: AbstractFileSystem) -> bool:
    """Whether ``fs`` is the local disk (paths on it can be opened with ``os.open``)."""
    return any(p in ("file", "local") for p in fs_protocols(fs))


def fs_is_http(fs: AbstractFileSystem) -> bool:
    """Whether ``fs`` is fsspec's HTTP filesystem (range GETs on its aiohttp session)."""
    return any(p in ("http", "https") for p in fs_protocols(fs))
