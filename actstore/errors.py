"""The one exception tree of actstore.

Every error actstore raises on purpose derives from :class:`ActstoreError` and also
from the builtin a caller would naturally catch, so ``except ValueError`` keeps
working for code that does not know actstore::

    ActstoreError
    ├── InvalidArgumentError   (ValueError)         bad argument from the caller
    │   └── ConfigMismatchError                      rerun with a different configuration
    ├── FormatError            (ValueError)         a dataset's bytes or metadata are malformed
    │   ├── UnsupportedVersionError                  format version newer than this reader
    │   ├── UnsafePathError                          a path in metadata escapes the dataset root
    │   └── IntegrityError                           size or sha256 disagrees with the metadata
    │       └── DatasetChangedError                  a file changed after the dataset was opened
    ├── LayerNotFoundError     (LookupError)        layer or view the dataset does not hold
    ├── DatasetNotFoundError   (FileNotFoundError)  no dataset (index) at that URL / repo / revision
    ├── DatasetExistsError     (FileExistsError)    refusing to overwrite an existing dataset
    │   └── ConcurrentWriteError                     another writer holds the dataset's lock
    ├── WriteError             (OSError)            a write failed (disk full, size limit); nothing committed
    ├── MissingDependencyError (ImportError)        an optional extra is not installed
    ├── NotFittedError         (ValueError, AttributeError)  probe used before ``fit``
    ├── HubError               (RuntimeError)       the Hub refused or failed a request
    │   └── HubAuthError       (PermissionError)    missing, wrong or read-only token
    ├── CredentialsError       (PermissionError)    a store (S3, GCS) found no credentials
    ├── OfflineError           (ConnectionError)    offline mode and the bytes are not cached
    └── CacheError             (RuntimeError)       the cache cannot serve or store an entry

Messages say what was given, what was expected, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ActstoreError",
    "CacheError",
    "ConcurrentWriteError",
    "ConfigMismatchError",
    "CredentialsError",
    "DatasetChangedError",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "FormatError",
    "HubAuthError",
    "HubError",
    "IntegrityError",
    "InvalidArgumentError",
    "LayerNotFoundError",
    "MissingDependencyError",
    "NotFittedError",
    "OfflineError",
    "UnsafePathError",
    "UnsupportedVersionError",
    "WriteError",
]


class ActstoreError(Exception):
    """Base class of every error actstore raises on purpose.

    Examples
    --------
    >>> import actstore
    >>> try:
    ...     actstore.open_dataset("no/such/dataset")
    ... except actstore.ActstoreError as err:   # every error actstore raises on purpose
    ...     print(type(err).__name__)
    DatasetNotFoundError
    """


class InvalidArgumentError(ActstoreError, ValueError):
    """An argument given by the caller has the wrong value, type or shape.

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.InvalidArgumentError, ValueError)
    True
    """


class ConfigMismatchError(InvalidArgumentError):
    """A rerun into existing output uses a configuration that differs from the recorded one.

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.ConfigMismatchError, actstore.InvalidArgumentError)
    True
    """


class FormatError(ActstoreError, ValueError):
    """A dataset's files or metadata do not follow ``specs/format-v2.md``.

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.FormatError, ValueError)
    True
    """


class UnsupportedVersionError(FormatError):
    """The dataset's format version is newer than this reader understands.

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.UnsupportedVersionError, actstore.FormatError)
    True
    """


class UnsafePathError(FormatError):
    """A path taken from metadata is absolute or escapes the dataset root.

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.UnsafePathError, actstore.FormatError)   # refused before any read
    True
    """


class IntegrityError(FormatError):
    """A file's size, header or sha256 disagrees with what the metadata records.

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.IntegrityError, actstore.FormatError)
    True
    """


class DatasetChangedError(IntegrityError):
    """A dataset file was replaced or modified after the dataset was opened (reopen it).

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.DatasetChangedError, actstore.IntegrityError)
    True
    """


class LayerNotFoundError(ActstoreError, LookupError):
    """A requested layer, view or tensor is not stored in the dataset.

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.LayerNotFoundError, LookupError)   # ``except KeyError`` does not catch it
    True
    """


class DatasetNotFoundError(ActstoreError, FileNotFoundError):
    """No dataset exists at the given location, repository or revision.

    Examples
    --------
    >>> import actstore
    >>> try:
    ...     actstore.open_dataset("no/such/dataset")
    ... except FileNotFoundError:                 # the builtin a caller would catch
    ...     print("not there")
    not there
    """

    repo_id: str | None = None  # the Hub repo, when it is about one
    status: int | None = None  # the Hub's HTTP status, when it answered


class DatasetExistsError(ActstoreError, FileExistsError):
    """The output location already holds a dataset and overwriting was not asked for.

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.DatasetExistsError, FileExistsError)
    True
    """


class ConcurrentWriteError(DatasetExistsError):
    """Another writer is writing the same dataset location (it holds the write lock).

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.ConcurrentWriteError, actstore.DatasetExistsError)
    True
    """


class WriteError(ActstoreError, OSError):
    """Writing a dataset file failed or came out short; nothing was committed.

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.WriteError, OSError)
    True
    """


class MissingDependencyError(ActstoreError, ImportError):
    """An optional dependency is needed; the message names the extra to install.

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.MissingDependencyError, ImportError)
    True
    """


class NotFittedError(ActstoreError, ValueError, AttributeError):
    """A probe was used before ``fit`` was called.

    Examples
    --------
    >>> import actstore
    >>> try:
    ...     actstore.Probe().predict([[0.0, 1.0]])
    ... except actstore.NotFittedError:
    ...     print("fit it first")
    fit it first
    """


class HubError(ActstoreError, RuntimeError):
    """The Hub refused or failed a request.

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.HubError, RuntimeError)
    True
    """

    repo_id: str | None = None  # the repo the request was about
    status: int | None = None  # the HTTP status (None: a network error, no answer)


class HubAuthError(HubError, PermissionError):
    """The Hub token is missing, invalid, or lacks write access.

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.HubAuthError, PermissionError)
    True
    """


class CredentialsError(ActstoreError, PermissionError):
    """A remote store (S3, GCS, ...) needs credentials and none were found.

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.CredentialsError, PermissionError)
    True
    """


class OfflineError(ActstoreError, ConnectionError):
    """Offline mode is on and the requested bytes are not in the local cache.

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.OfflineError, ConnectionError)
    True
    """


class CacheError(ActstoreError, RuntimeError):
    """The cache cannot serve or store an entry.

    Examples
    --------
    >>> import actstore
    >>> issubclass(actstore.CacheError, RuntimeError)
    True
    """


def require(module: str, extra: str) -> object:
    """Import an optional dependency or raise :class:`MissingDependencyError`.

    Parameters
    ----------
    module : str
        Importable module name, e.g. ``"torch"``.
    extra : str
        The actstore extra that installs it, e.g. ``"extract"``.

    Returns
    -------
    module
        The imported module.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError(
            f"This feature needs the optional dependency {module!r}, which is not installed; "
            f'install it with: pip install "actstore[{extra}]"'
        ) from exc
