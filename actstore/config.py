"""Settings read from ``ACTSTORE_*`` environment variables when needed, never at import.

Precedence: an explicit argument beats the environment variable, which beats the default.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InvalidArgumentError

__all__ = ["MIN_MAX_SPAN", "cache_dir", "cache_max_bytes", "debug", "index_cache_whole_bytes", "offline",
           "parse_bytes", "range_policy"]

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


#: The smallest ``max_span`` a coalescing setting accepts: a merged read shorter than this
#: would split single rows of wide layers (a 16 k-dim float32 row is 64 KiB).
MIN_MAX_SPAN = 64 << 10


def range_policy(kind: str, gap: int | str | None = None, max_span: int | str | None = None, *,
                 default_gap: int, default_max_span: int) -> tuple[int, int]:
    """``(gap, max_span)`` of one kind of remote read: the arguments, else
    ``ACTSTORE_<KIND>_GAP`` / ``ACTSTORE_<KIND>_MAX_SPAN``, else the defaults.

    Parameters
    ----------
    kind : str
        ``"hub"`` (``hf://``) or ``"remote"`` (S3, HTTP and other stores); names the variables.
    gap, max_span : int or str, optional
        Byte counts (``"4M"`` style accepted): ranges at most ``gap`` apart are one request,
        a merged request at most ``max_span`` long.
    default_gap, default_max_span : int
        Used when neither an argument nor the variable is set.

    Raises
    ------
    InvalidArgumentError
        A value that is not a byte count, is negative, or a ``max_span`` below
        :data:`MIN_MAX_SPAN`; the message names the variable, the value and the fix.

    Examples
    --------
    >>> range_policy("hub", "1M", 8 << 20, default_gap=0, default_max_span=1 << 20)
    (1048576, 8388608)
    """
    out = []
    for name, arg, default in (("GAP", gap, default_gap), ("MAX_SPAN", max_span, default_max_span)):
        var = f"ACTSTORE_{kind.upper()}_{name}"
        raw: int | str | None = arg if arg is not None else os.environ.get(var) or None
        if raw is None:
            out.append(default)
            continue
        where = f"{name.lower()}=" if arg is not None else var
        try:
            value = parse_bytes(raw) if not isinstance(raw, bool) else -1
        except InvalidArgumentError:
            value = -1
        if value < 0:
            raise InvalidArgumentError(
                f"{where} {raw!r} is not a byte count; expected a non-negative integer with an "
                f"optional unit K, M or G (e.g. '4M'). Fix {where.rstrip('=')} or unset it for the "
                f"default ({default} bytes).")
        if name == "MAX_SPAN" and value < MIN_MAX_SPAN:
            raise InvalidArgumentError(
                f"{where} {raw!r} is {value} bytes, below the smallest merged read "
                f"{MIN_MAX_SPAN} bytes (64K); set it to at least '64K' (default {default}).")
        out.append(value)
    return out[0], out[1]
