"""Settings read from ``ACTSTORE_*`` environment variables when needed, never at import.

Precedence: an explicit argument beats the environment variable, which beats the default.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InvalidArgumentError

__all__ = ["cache_dir", "cache_max_bytes", "debug", "index_cache_whole_bytes", "offline", "parse_bytes"]

#: Default of :func:`index_cache_whole_bytes`: 32 MiB, a 10^6 x 128-token compact index (7 MB)
#: or a pooled one of a few million short prompts; a fraction of a second on a first open.
INDEX_CACHE_WHOLE_BYTES = 32 << 20

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(value: int | str) -> int:
    """Parse a byte count such as ``1048576``, ``"512M"`` or ``"50G"`` (binary units).

    Examples
    --------
    >>> parse_bytes("2K")
    2048
    """
    if isinstance(value, int):
        if value < 0:
            raise InvalidArgumentError(f"A byte count must be >= 0; got {value}.")
        return value
    text = str(value).strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in _UNITS else ""
    number = text[: len(text) - len(unit)]
    try:
        result = int(float(number) * _UNITS[unit])
    except ValueError:
        raise InvalidArgumentError(
            f"Cannot read {value!r} as a byte count; expected a number with an optional "
            "unit K, M, G or T, e.g. '50G'."
        ) from None
    if result < 0:
        raise InvalidArgumentError(f"A byte count must be >= 0; got {value!r}.")
    return result


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def offline() -> bool:
    """True when ``ACTSTORE_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to a true value."""
    return _flag("ACTSTORE_OFFLINE") or _flag("HF_HUB_OFFLINE")


def debug() -> bool:
    """True when ``ACTSTORE_DEBUG`` asks the CLI to show full tracebacks."""
    return _flag("ACTSTORE_DEBUG")


def cache_dir(arg: str | os.PathLike[str] | None = None) -> str:
    """The cache location: ``arg``, else ``ACTSTORE_CACHE_DIR``, else ``~/.cache/actstore``."""
    if arg is not None:
        return os.fspath(arg)
    env = os.environ.get("ACTSTORE_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "actstore")


def cache_max_bytes(arg: int | str | None = None) -> int | None:
    """The cache bound: ``arg``, else ``ACTSTORE_CACHE_MAX_BYTES``, else unbounded (None)."""
    if arg is not None:
        return parse_bytes(arg)
    env = os.environ.get("ACTSTORE_CACHE_MAX_BYTES")
    return parse_bytes(env) if env else None


def index_cache_whole_bytes(arg: int | str | None = None) -> int:
    """The largest index an online open through the cache fetches whole into it (texts,
    labels and metadata too, so offline mode reads every column later): ``arg``, else
    ``ACTSTORE_INDEX_CACHE_WHOLE_BYTES``, else :data:`INDEX_CACHE_WHOLE_BYTES` (``0``: never;
    only the columns read online are then cached)."""
    if arg is not None:
        return parse_bytes(arg)
    env = os.environ.get("ACTSTORE_INDEX_CACHE_WHOLE_BYTES")
    return parse_bytes(env) if env else INDEX_CACHE_WHOLE_BYTES
