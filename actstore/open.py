"""The top-level ``open_dataset``: one entry point for local paths and remote URLs.

Local paths (and in-process ``memory://``) go straight to the format reader. Remote URLs
(``s3://``, ``http(s)://``, ``hf://datasets/org/name@rev``, any other fsspec protocol) read
their index and tensor bytes through :class:`actstore.cache.UnifiedCache`, so a second read
of the same rows is local, and offline mode serves whatever was read before.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .errors import (
    ActstoreError,
    CredentialsError,
    DatasetNotFoundError,
    HubError,
    InvalidArgumentError,
    MissingDependencyError,
)
from .format.location import IN_PROCESS, Location, resolve
from .format.reader import Dataset
from .format.reader import open_dataset as _open_format

if TYPE_CHECKING:  # the cache is imported only for remote URLs
    from .cache import UnifiedCache

__all__ = ["open_dataset"]

# the actstore extra that installs a protocol's filesystem (others: the package fsspec names)
_EXTRA_FOR = {"s3": "s3", "s3a": "s3", "hf": "hub", "http": "http", "https": "http"}
_CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError")
_CREDENTIAL_FIX = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass "
          "storage_options={'anon': True} for a public bucket",
    "gs": "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS, "
          "or pass storage_options={'token': 'anon'} for a public bucket",
}


def check_protocol(url: str | Location) -> None:
    """Refuse a URL whose scheme no filesystem handles, or whose filesystem is not installed.

    Raises
    ------
    InvalidArgumentError
        The scheme is unknown (a typo such as ``htp://``).
    MissingDependencyError
        The scheme is known but its package is missing; the message names what to install.
    """
    loc = url if isinstance(url, Location) else resolve(url)
    for protocol in loc.protocols:
        if protocol not in IN_PROCESS:
            _check_one_protocol(protocol, loc.url)


def _check_one_protocol(protocol: str, url: str) -> None:
    import fsspec
    from fsspec.registry import known_implementations

    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        common = "s3://, gs://, hf://datasets/org/name, https://, memory://"
        raise InvalidArgumentError(
            f"Unknown URL scheme {protocol + '://'!r} in {url!r}; give a local path or a URL "
            f"fsspec knows ({common}, ...)."
        ) from None
    except ImportError:
        extra = _EXTRA_FOR.get(protocol)
        package = known_implementations.get(protocol, {}).get("class", protocol).split(".")[0]
        fix = f'pip install "actstore[{extra}]"' if extra else f"pip install {package}"
        raise MissingDependencyError(
            f"Reading {protocol}:// URLs needs the package {package!r}, which is not installed; "
            f"install it with: {fix}"
        ) from None


def _in_chain(exc: BaseException, names: tuple[str, ...]) -> BaseException | None:
    """The first error named in ``names`` in ``exc``'s cause/context chain, if any.

    The context is followed even where ``raise ... from None`` hid it from tracebacks.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if type(cur).__name__ in names:
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


_CONNECT_ERRORS = ("ConnectError", "ConnectTimeout", "ConnectionRefusedError", "ClientConnectorError")


def _explain(exc: Exception, loc: Location) -> Exception | None:
    """An error that says what really went wrong opening ``loc``, or None to keep ``exc``."""
    protocol, url = loc.protocol, loc.url
    missing = _in_chain(exc, _CREDENTIAL_ERRORS)
    if missing is not None:
        fix = _CREDENTIAL_FIX.get(protocol, "configure credentials for this store")
        return CredentialsError(
            f"No credentials to read {url!r} ({type(missing).__name__}: {missing}); {fix}."
        )
    if protocol != "hf" or (isinstance(exc, ActstoreError)
                            and not isinstance(exc, DatasetNotFoundError)):
        return None
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    repo, rev = loc.repo, loc.revision
    refused = _in_chain(exc, _CONNECT_ERRORS)
    if refused is not None:
        return HubError(
            f"Could not connect to the Hub at {endpoint} to open {url!r} ({refused}); check your "
            "network and HF_ENDPOINT, or set ACTSTORE_OFFLINE=1 to read what is cached."
        )
    if _in_chain(exc, ("RevisionNotFoundError",)) is not None:
        return DatasetNotFoundError(
            f"Revision {rev!r} does not exist in dataset repo {repo!r}; pass a branch, tag or "
            "commit sha the repo has (see its commit history)."
        )
    if _in_chain(exc, ("RepositoryNotFoundError",)) is not None:
        return DatasetNotFoundError(
            f"Dataset repo {repo!r} was not found on the Hub ({endpoint}), or it is private and "
            "no token can read it; check the name, or log in (hf auth login / HF_TOKEN)."
        )
    return None


def open_dataset(
    url: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    cache: UnifiedCache | str | os.PathLike[str] | bool | None = None,
    revision: str | None = None,
    verify_checksums: bool = False,
) -> Dataset:
    """Open a v2 activation dataset from a local path or any fsspec URL.

    Only the index is read; tensor rows are fetched on demand by byte ranges. Remote bytes
    are kept in the cache, keyed by where they came from (URL, endpoint, validator), so
    repeated reads are local and another dataset can never be served them.

    Parameters
    ----------
    url : str or path
        Local folder, ``s3://bucket/ds``, ``https://host/ds``, ``hf://datasets/org/name``.
    storage_options : dict, optional
        fsspec options for the dataset's filesystem (e.g. S3 ``endpoint_url``).
    cache : UnifiedCache, str, path, bool or None
        The cache for remote bytes: a cache, a cache location, or False for none; None or
        True mean the default ``UnifiedCache()`` (``ACTSTORE_CACHE_DIR`` or
        ``~/.cache/actstore``).
    revision : str, optional
        Hub revision (branch, tag or commit) for ``hf://`` URLs.
    verify_checksums : bool
        Hash each tensor file against its recorded sha256 before first use.

    Examples
    --------
    >>> import actstore
    >>> ds = actstore.open_dataset("s3://team-bucket/llama-acts")   # doctest: +SKIP
    >>> X = ds.get(range(0, 1000, 10), layers=[16])                 # doctest: +SKIP
    """
    loc = resolve(url, revision=revision)
    check_protocol(loc)
    text = loc.url
    try:
        if loc.in_process or cache is False:
            return _open_format(text, storage_options=storage_options,
                                verify_checksums=verify_checksums)
        from .cache import UnifiedCache
        from .cache.opening import open_remote

        if not isinstance(cache, UnifiedCache):
            cache = UnifiedCache(None if cache is True else cache)
        return open_remote(text, cache, storage_options=storage_options,
                           verify_checksums=verify_checksums)
    except Exception as exc:
        better = _explain(exc, loc)
        if better is None:
            raise
        raise better from exc
