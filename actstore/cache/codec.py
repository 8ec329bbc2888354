"""Entry codecs: raw bytes, or zstd after a byte shuffle.

A byte shuffle groups byte 0 of every value, then byte 1, ...; the exponent bytes of
hidden states vary little, so zstd finds them. On large blocks that gives 1.2-1.5x, but a
cache entry is one prompt's pooled vector (a few KB), where zstd-1 measured only 1.04x
(float32), 0.99x (float16) and 1.14x (bfloat16) smaller on real MiniLM hidden states, and
cut warm-read throughput several-fold (``benchmarks/results/cache.md``). So the default is
``"none"``; ``"zstd"`` is there for caches where space matters more than time.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..errors import CacheError, InvalidArgumentError

__all__ = ["COMPRESSION_CHOICES", "decode_array", "encode_array"]

COMPRESSION_CHOICES = ("none", "zstd")
_LEVEL = 1  # higher levels gain almost nothing on hidden states and cost up to 10x the time


def _shuffle(raw: np.ndarray) -> bytes:
    b = raw.view(np.uint8).reshape(-1, raw.dtype.itemsize)
    return np.ascontiguousarray(b.T).tobytes()


def _unshuffle(data: bytes, itemsize: int) -> np.ndarray:
    b = np.frombuffer(data, dtype=np.uint8).reshape(itemsize, -1)
    return np.ascontiguousarray(b.T).reshape(-1)


_LOCAL = threading.local()


def _zstd(decompress: bool = False) -> Any:
    """This thread's (de)compressor: building one per entry costs more than the work."""
    name = "d" if decompress else "c"
    obj = getattr(_LOCAL, name, None)
    if obj is None:
        import zstandard

        obj = zstandard.ZstdDecompressor() if decompress else zstandard.ZstdCompressor(level=_LEVEL)
        setattr(_LOCAL, name, obj)
    return obj


def _wants_zstd(compression: str, dtype: str) -> bool:
    if compression not in COMPRESSION_CHOICES:
        raise InvalidArgumentError(
            f"compression must be one of {COMPRESSION_CHOICES}; got {compression!r}."
        )
    return compression == "zstd"


def encode_array(raw: np.ndarray, dtype: str, compression: str = "none") -> tuple[bytes, str]:
    """Encode the stored-dtype array ``raw`` (uint16 bits for bfloat16) -> (bytes, codec).

    Examples
    --------
    >>> data, codec = encode_array(np.ones(4, np.float32), "float32", "zstd")
    >>> codec
    'zstd-shuffle'
    """
    raw = np.ascontiguousarray(raw)
    if not _wants_zstd(compression, dtype):
        return raw.tobytes(), "raw"
    return _zstd().compress(_shuffle(raw)), "zstd-shuffle"


def decode_array(data: bytes, codec: str, storage: np.dtype) -> np.ndarray:
    """Inverse of :func:`encode_array`: a flat array of ``storage`` dtype."""
    if codec == "raw":
        return np.frombuffer(data, dtype=storage)
    if codec == "zstd-shuffle":
        plain = _zstd(decompress=True).decompress(data)
        return _unshuffle(plain, storage.itemsize).view(storage)
    raise CacheError(f"Unknown cache codec {codec!r}; the entry was written by a newer actstore.")
