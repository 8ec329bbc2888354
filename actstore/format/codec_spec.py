"""What a compact storage codec is (spec section 2b): its code format, scale granularity and
descriptor — the description only, parsed from metadata and checked for writers. The
encoding, decoding and scale files are :mod:`actstore.format.codecs`; this module stays a
leaf of ``format`` so that metadata parsing can use it without importing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import FormatError, InvalidArgumentError
from . import spec

__all__ = ["CODECS", "DEFAULT_SCALE", "SCALES", "Codec", "CodecSpec", "check_codec", "float_dtype",
           "parse_codec"]

#: Scale granularities: one scale per channel per shard file, one per row, or one scale and
#: one offset per channel per shard file (``x = code * scale + offset``).
SCALES = ("per_channel", "per_row", "per_channel_affine")
#: The default granularity, for both codecs (measured: see specs/format-v2.md section 2b; on a
#: model whose channels ride on large offsets only the affine scales keep the probe metric
#: within bfloat16's seed-to-seed spread).
DEFAULT_SCALE = "per_channel_affine"

@dataclass(frozen=True)
class Codec:
    """A one-byte code format: its name, safetensors code and largest magnitude."""

    name: str
    code: str
    qmax: float


CODECS = {
    "int8": Codec("int8", "I8", 127.0),
    "fp8_e4m3": Codec("fp8_e4m3", "F8_E4M3", 448.0),
}


@dataclass(frozen=True)
class CodecSpec:
    """The codec of one view: code format and scale granularity."""

    codec: Codec
    scale: str

    def descriptor(self) -> dict[str, str]:
        """The descriptor's ``codec`` field."""
        return {"name": self.codec.name, "scale": self.scale, "scale_dtype": "float32"}

    @property
    def per_channel(self) -> bool:
        """One scale per channel of a shard file (``per_channel`` and ``per_channel_affine``)."""
        return self.scale != "per_row"

    @property
    def affine(self) -> bool:
        """Each channel also has an offset: ``x = code * scale + offset`` (spec section 2b)."""
        return self.scale == "per_channel_affine"

    def scale_shape(self, rows: int, dim: int) -> tuple[int]:
        """Shape of a shard file's scale tensor (and of its offset tensor, when affine)."""
        return (dim,) if self.per_channel else (rows,)


def float_dtype(dtype: str) -> str:
    """The float dtype rows are handled in before encoding: float32 for a codec."""
    return "float32" if dtype in CODECS else dtype


def check_codec(dtype: str, scale: str | None, *, what: str) -> CodecSpec | None:
    """The codec a writer was asked for, or None for a float dtype (arguments checked)."""
    if dtype not in CODECS:
        if scale is not None:
            raise InvalidArgumentError(
                f"{what}: scale={scale!r} applies to the codecs {sorted(CODECS)} only; "
                f"dtype {dtype!r} stores floats. Drop scale= or choose a codec dtype."
            )
        return None
    scale = DEFAULT_SCALE if scale is None else scale
    if scale not in SCALES:
        raise InvalidArgumentError(f"{what}: scale must be one of {list(SCALES)}; got {scale!r}.")
    return CodecSpec(CODECS[dtype], scale)


def parse_codec(dtype: str, desc: dict[str, Any], *, where: str) -> CodecSpec | None:
    """The codec of a descriptor read from a dataset, or None for a float view.

    Raises :class:`FormatError` for an unknown codec, a missing or malformed ``codec``
    field, or a key pattern other than the codes key.
    """
    raw = desc.get("codec")
    if dtype not in CODECS:
        if raw is not None:
            raise FormatError(f"{where}.codec is set but dtype {dtype!r} is not a codec {sorted(CODECS)}.")
        return None
    if not isinstance(raw, dict):
        raise FormatError(f"{where}.codec must be an object for dtype {dtype!r}; got {type(raw).__name__}.")
    name, scale = raw.get("name"), raw.get("scale")
    if name != dtype:
        raise FormatError(f"{where}.codec.name is {str(name)[:40]!r}; expected {dtype!r} (the dtype).")
    if scale not in SCALES:
        raise FormatError(f"{where}.codec.scale must be one of {list(SCALES)}; got {str(scale)[:40]!r}.")
    if raw.get("scale_dtype", "float32") != "float32":
        raise FormatError(f"{where}.codec.scale_dtype must be 'float32'; got {str(raw.get('scale_dtype'))[:40]!r}.")
    if desc.get("key_pattern") != spec.CODES_KEY:
        raise FormatError(
            f"{where}.key_pattern must be {spec.CODES_KEY!r} for a codec view; got "
            f"{str(desc.get('key_pattern'))[:60]!r}."
        )
    return CodecSpec(CODECS[dtype], str(scale))
