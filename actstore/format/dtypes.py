"""Conversions between caller arrays and the bytes stored in shards.

numpy has no bfloat16, so bfloat16 shards are handled as raw ``uint16`` bit patterns:
float32 → bfloat16 rounds to nearest even, bfloat16 → float32 is exact (a 16-bit shift).
bfloat16 inputs (torch tensors, ``ml_dtypes`` numpy arrays) are stored bit for bit.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .parallel import in_pieces, piece_count
from .spec import FLOAT_DTYPES, ST_CODES, ST_DTYPES

__all__ = [
    "bf16_bits", "bf16_bits_to_f32", "f32_to_bf16_bits", "little_endian", "numpy_storage_dtype", "to_storage",
]

#: Roundings of at least this many bytes of float32 are split across threads.
PARALLEL_BYTES = 16 << 20


def numpy_storage_dtype(name: str) -> np.dtype:
    """The numpy dtype whose bytes equal the stored bytes of dtype ``name`` (``<u2`` for
    bfloat16), from the one table, :data:`~.spec.ST_DTYPES`.

    Raises :class:`~actstore.errors.InvalidArgumentError` for a name the format does not store.
    """
    code = ST_CODES.get(name)
    if code is None:
        raise InvalidArgumentError(f"dtype {name!r} is not a storage dtype; expected one of {sorted(ST_CODES)}.")
    return np.dtype(ST_DTYPES[code].storage)


def little_endian(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous array of little-endian values, the byte order safetensors
    stores whatever the host (a copy only for big-endian data: ``>f4`` input, or any
    native array on a big-endian host)."""
    order = a.dtype.byteorder
    if order == ">" or (order == "=" and sys.byteorder == "big"):
        a = a.astype(a.dtype.newbyteorder("<"))
    return np.ascontiguousarray(a)


def f32_to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest even) and return their bit patterns.

    Works through the array in cache-sized blocks with in-place operations, so it needs no
    full-size temporaries; large arrays are rounded on parallel threads.
    """
    src = np.ascontiguousarray(a, dtype=np.float32)
    flat = src.reshape(-1).view(np.uint32)
    out = np.empty(flat.shape, dtype=np.uint16)
    step = 1 << 18

    def piece(lo: int, hi: int) -> None:
        tmp = np.empty(min(step, hi - lo), dtype=np.uint32)
        for start in range(lo, hi, step):
            u = flat[start : min(hi, start + step)]
            t = tmp[: u.size]
            np.right_shift(u, 16, out=t)
            np.bitwise_and(t, 1, out=t)
            t += 0x7FFF
            t += u  # rounding bias: 0x7FFF plus the lowest kept bit (ties to even)
            np.right_shift(t, 16, out=t)
            out[start : start + u.size] = t

    in_pieces(piece, flat.size, piece_count(flat.size, flat.nbytes, PARALLEL_BYTES))
    return out.reshape(src.shape)


def bf16_bits(a: np.ndarray) -> np.ndarray | None:
    """The bit patterns of a numpy bfloat16 array (``ml_dtypes.bfloat16``, as JAX makes), or
    None for any other dtype. ml_dtypes is recognised by name, never imported."""
    if a.dtype.name == "bfloat16" and a.dtype.itemsize == 2:
        return a.view(np.uint16)
    return None


def bf16_bits_to_f32(bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Widen bfloat16 bit patterns to float32 exactly, optionally into ``out``."""
    if out is None:
        out = np.empty(bits.shape, dtype=np.float32)
    np.left_shift(bits, 16, out=out.view(np.uint32), dtype=np.uint32)
    return out


def _is_torch(x: Any) -> bool:
    return "torch" in sys.modules and type(x).__module__.startswith("torch")


def to_storage(x: Any, dtype: str, *, what: str) -> np.ndarray:
    """Convert caller data to the contiguous array whose bytes are stored as ``dtype``.

    Parameters
    ----------
    x : array-like
        numpy array, nested list or torch tensor with float values.
    dtype : {"float32", "float16", "bfloat16"}
        Storage dtype.
    what : str
        Name used in error messages (e.g. ``"hidden[3]"``).
    """
    if dtype not in FLOAT_DTYPES:
        raise InvalidArgumentError(
            f"dtype must be one of {sorted(FLOAT_DTYPES)}; got {dtype!r}."
        )
    if _is_torch(x):
        import torch

        t = x.detach().cpu().contiguous()
        if dtype == "bfloat16" and t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16)
        if t.dtype == torch.bfloat16:
            t = t.float()
        x = t.numpy()
    a = np.asarray(x)
    bits = bf16_bits(a)
    if bits is not None:  # bfloat16 numpy input: keep its bits, or widen them exactly
        if dtype == "bfloat16":
            return np.ascontiguousarray(bits)
        a = bf16_bits_to_f32(bits)
    if a.dtype.kind not in "fiu":
        raise InvalidArgumentError(
            f"{what} must hold numbers; got an array of dtype {a.dtype}."
        )
    with np.errstate(over="ignore"):  # overflow to inf is reported by the writer's finite check
        if dtype == "bfloat16":
            return f32_to_bf16_bits(a)
        return np.ascontiguousarray(a, dtype=dtype)
