"""Entry codecs: raw bytes, or zstd after a byte shuffle.

A byte shuffle groups byte 0 of every value, then byte 1, ...; the exponent bytes of
hidden states vary little, so zstd finds them. Measured in ``benchmarks/bench_cache.py``
(``benchmarks/results/cache.md``): worth it for bfloat16 (about 1.4x smaller), marginal for
float32/float16 (about 1.1-1.2x) while costing CPU on every warm read, so the default
``"auto"`` compresses bfloat16 entries only.
"""

from __future__ import annotations

import numpy as np

from ..errors import CacheError, InvalidArgumentError

__all__ = ["COMPRESSION_CHOICES", "decode_array", "encode_array"]

COMPRESSION_CHOICES = ("auto", "zstd", "none")
_LEVEL = 1  # higher levels gain almost nothing on hidden states and cost up to 10x the time


def _shuffle(raw: np.ndarray) -> bytes:
    b = raw.view(np.uint8).reshape(-1, raw.dtype.itemsize)
    return np.ascontiguousarray(b.T).tobytes()


def _unshuffle(data: bytes, itemsize: int) -> np.ndarray:
    b = np.frombuffer(data, dtype=np.uint8).reshape(itemsize, -1)
    return np.ascontiguousarray(b.T).reshape(-1)


def _wants_zstd(compression: str, dtype: str) -> bool:
    if compression not in COMPRESSION_CHOICES:
        raise InvalidArgumentError(
            f"compression must be one of {COMPRESSION_CHOICES}; got {compression!r}."
        )
    return compression == "zstd" or (compression == "auto" and dtype == "bfloat16")


def encode_array(raw: np.ndarray, dtype: str, compression: str = "auto") -> tuple[bytes, str]:
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
    import zstandard

    return zstandard.ZstdCompressor(level=_LEVEL).compress(_shuffle(raw)), "zstd-shuffle"


def decode_array(data: bytes, codec: str, storage: np.dtype) -> np.ndarray:
    """Inverse of :func:`encode_array`: a flat array of ``storage`` dtype."""
    if codec == "raw":
        return np.frombuffer(data, dtype=storage)
    if codec == "zstd-shuffle":
        import zstandard

        plain = zstandard.ZstdDecompressor().decompress(data)
        return _unshuffle(plain, storage.itemsize).view(storage)
    raise CacheError(f"Unknown cache codec {codec!r}; the entry was written by a newer actstore.")
