"""Paths taken from metadata are data from strangers: resolve them safely under the root."""

from __future__ import annotations

import posixpath
import re

from ..errors import UnsafePathError

__all__ = ["safe_relpath"]

_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_relpath(path: object, *, field: str) -> str:
    """Check that ``path`` is a relative POSIX path that stays inside the dataset root.

    Parameters
    ----------
    path : object
        The value read from metadata.
    field : str
        Which metadata field it came from, for the error message.

    Returns
    -------
    str
        The normalised relative path.

    Raises
    ------
    UnsafePathError
        For a non-string, empty, absolute, drive-letter, URL-like or ``..``-escaping path.

    Examples
    --------
    >>> safe_relpath("tensors/a.safetensors", field="file")
    'tensors/a.safetensors'
    """
    if not isinstance(path, str) or not path or "\x00" in path:
        raise UnsafePathError(f"{field} must be a non-empty relative path; got {path!r}.")
    text = path.replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text) or "://" in text:
        raise UnsafePathError(
            f"{field} is an absolute path or URL ({path!r}); dataset files must be relative "
            "to the dataset root."
        )
    norm = posixpath.normpath(text)
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise UnsafePathError(
            f"{field} escapes the dataset root ({path!r}); refusing to read outside the dataset."
        )
    return norm
