"""Paths taken from metadata are data from strangers: resolve them safely under the root."""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

from ..errors import UnsafePathError

__all__ = ["safe_relpath"]

_DRIVE = re.compile(r"^[A-Za-z]:")
#: Longest path accepted from metadata (a longer one only fails later as "name too long").
MAX_PATH_CHARS = 1024


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
        For a non-string, empty, overlong, absolute, drive-letter, URL-like path, one holding
        a ``..`` segment (raw or percent-encoded), ``?`` or ``#``.

    Examples
    --------
    >>> safe_relpath("tensors/a.safetensors", field="file")
    'tensors/a.safetensors'
    """
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS or any(
        ord(c) < 32 for c in path
    ):
        raise UnsafePathError(
            f"{field} must be a non-empty relative path of at most {MAX_PATH_CHARS} printable "
            f"characters; got {path[:80] if isinstance(path, str) else path!r}."
        )
    # a remote server decodes %2e%2e to "..": check the decoded form too
    for text in dict.fromkeys((path.replace("\\", "/"), unquote(path).replace("\\", "/"))):
        if text.startswith("/") or _DRIVE.match(text) or "://" in text or "\x00" in text:
            raise UnsafePathError(
                f"{field} is an absolute path or URL ({path!r}); dataset files must be relative "
                "to the dataset root."
            )
        # any ".." is refused, even one that stays inside lexically: "a/link/../x" resolves
        # through the link on disk, and the lexical answer would be wrong
        if ".." in text.split("/") or posixpath.normpath(text) in (".", ".."):
            raise UnsafePathError(
                f"{field} escapes the dataset root ({path!r}): '..' segments (also "
                "percent-encoded) are refused; refusing to read outside the dataset."
            )
        if "?" in text or "#" in text:
            raise UnsafePathError(
                f"{field} holds '?' or '#' ({path!r}), which a URL would read as a query or "
                "fragment; dataset file names must not."
            )
    return posixpath.normpath(path.replace("\\", "/"))
