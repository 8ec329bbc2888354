"""safetensors headers, parsed and built by hand so reads can target exact byte ranges.

The safetensors layout (its README, "Format"): 8 bytes little-endian header length ``N``,
``N`` bytes of JSON (may be right-padded with spaces), then the tensor data; each tensor's
``data_offsets`` are relative to the end of the header. Every header read here is checked
against the file size before any data is trusted.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

from ..errors import IntegrityError
from .metadata import bounded_json
from .spec import MAX_HEADER_BYTES, ST_DTYPES

__all__ = ["HEADER_PROBE_BYTES", "TensorEntry", "build_header", "check_layout", "header_length", "parse_header"]

#: First read of a file: enough for any header actstore or lmprobe writes.
HEADER_PROBE_BYTES = 64 * 1024


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes lie in its file (absolute offsets)."""

    key: str
    dtype: str  # safetensors code, e.g. "F32"
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def itemsize(self) -> int:
        return ST_DTYPES[self.dtype][1]

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.itemsize


def header_length(prefix: bytes, *, path: str, size: int) -> int:
    """Read the 8-byte header length and check it against the file size."""
    if size < 8 or len(prefix) < 8:
        raise IntegrityError(
            f"{path}: file is {size} bytes, too short to hold a safetensors header; "
            "the file is truncated or not safetensors."
        )
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise IntegrityError(
            f"{path}: safetensors header claims {n} bytes but the file is {size} bytes; "
            "the file is truncated or corrupt."
        )
    return int(n)


def parse_header(raw: bytes, *, path: str, size: int) -> dict[str, TensorEntry]:
    """Parse a header (8-byte length + JSON) and validate every entry against ``size``.

    Parameters
    ----------
    raw : bytes
        At least the first ``8 + N`` bytes of the file.
    path : str
        File name for error messages.
    size : int
        The file's true size in bytes.

    Returns
    -------
    dict of str to TensorEntry
        Tensors by key (``__metadata__`` is dropped).
    """
    n = header_length(raw, path=path, size=size)
    doc = bounded_json(raw[8 : 8 + n], where=f"{path}: safetensors header", error=IntegrityError,
                       limit=MAX_HEADER_BYTES)
    if not isinstance(doc, dict):
        raise IntegrityError(f"{path}: safetensors header must be a JSON object.")
    base = 8 + n
    entries: dict[str, TensorEntry] = {}
    if len(doc) > 100_000:
        raise IntegrityError(f"{path}: safetensors header lists {len(doc)} tensors; at most 100000.")
    for key, spec in doc.items():
        if key == "__metadata__":
            continue
        entries[key] = _entry(key, spec, base=base, path=path, size=size)
    check_layout(entries, base=base, path=path, size=size)
    return entries


def check_layout(entries: dict[str, TensorEntry], *, base: int, path: str, size: int) -> None:
    """Enforce the safetensors layout rule: the tensors, in offset order, cover the data
    section exactly, from data offset 0 to the end of the file, with no hole and no overlap.

    Each entry alone was already checked against the file size; this checks them together
    (``safetensors/src/tensor.rs::validate`` does the same), so two tensors sharing bytes, a
    gap of unexplained bytes, or trailing bytes after the last tensor are refused.
    """
    at, prev = base, None  # where the next tensor must start, and the tensor ending there
    for e in sorted(entries.values(), key=lambda t: (t.start, t.end)):
        if e.start != at:
            before = f"tensor {prev!r}" if prev is not None else "the header"
            what = (f"the two overlap by {at - e.start} bytes" if e.start < at
                    else f"a hole of {e.start - at} bytes lies between them")
            raise IntegrityError(
                f"{path}: tensor {e.key!r} starts at data offset {e.start - base} but {before} "
                f"ends at {at - base}: {what}. safetensors tensors must lie back to back from "
                "offset 0 (the file is corrupt or was not written by safetensors)."
            )
        at, prev = e.end, e.key
    if at != size:
        raise IntegrityError(
            f"{path}: the tensors end at byte {at} but the file is {size} bytes; safetensors "
            "files hold nothing after their last tensor (the file is corrupt or was appended to)."
        )


def _entry(key: str, spec: object, *, base: int, path: str, size: int) -> TensorEntry:
    dtype = spec.get("dtype") if isinstance(spec, dict) else None
    shape = spec.get("shape") if isinstance(spec, dict) else None
    offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
    if (
        not isinstance(dtype, str)
        or not _int_list(shape)
        or not _int_list(offsets)
        or len(offsets) != 2  # type: ignore[arg-type]
    ):
        raise IntegrityError(
            f"{path}: header entry {key!r} lacks a valid dtype, shape or data_offsets "
            "(a string and lists of non-negative integers)."
        )
    if dtype not in ST_DTYPES:
        raise IntegrityError(
            f"{path}: tensor {key!r} has dtype {dtype[:20]!r}; expected one of {sorted(ST_DTYPES)}."
        )
    shape_t = tuple(shape)  # type: ignore[arg-type]
    begin, end = offsets  # type: ignore[misc]
    if len(shape_t) > 8 or any(d > size for d in shape_t):
        raise IntegrityError(f"{path}: tensor {key!r} claims shape {list(shape_t)[:9]}, impossible "
                             f"for a file of {size} bytes.")
    expected = math.prod(shape_t) * ST_DTYPES[dtype][1]
    if end - begin != expected:
        raise IntegrityError(
            f"{path}: tensor {key!r} claims shape {list(shape_t)} {dtype} ({expected} bytes) "
            f"but data_offsets span {end - begin} bytes."
        )
    if base + end > size:
        raise IntegrityError(
            f"{path}: tensor {key!r} ends at byte {base + end} but the file is {size} bytes; "
            "the file is truncated."
        )
    return TensorEntry(key, dtype, shape_t, base + begin, base + end)


def _int_list(value: object) -> bool:
    """A JSON list of non-negative integers (no bools, no floats such as 2.0, no huge values)."""
    return isinstance(value, list) and len(value) <= 8 and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 62 for v in value
    )


def build_header(
    tensors: list[tuple[str, str, tuple[int, ...]]],
    *,
    metadata: dict[str, str] | None = None,
    reserve: int = 0,
) -> bytes:
    """Build ``8-byte length + JSON`` for tensors laid out back to back in the given order.

    Parameters
    ----------
    tensors : list of (key, dtype code, shape)
    metadata : dict, optional
        String-to-string ``__metadata__``.
    reserve : int
        Pad the JSON with spaces to at least this many bytes, so a later header for
        a different row count can be written over it in place.
    """
    doc: dict[str, object] = {}
    if metadata:
        doc["__metadata__"] = metadata
    offset = 0
    for key, dtype, shape in tensors:
        nbytes = math.prod(shape) * ST_DTYPES[dtype][1]
        doc[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    body = json.dumps(doc, separators=(",", ":")).encode()
    width = max(len(body), reserve)
    width += -width % 8  # keep tensor data 8-byte aligned, as safetensors does
    return struct.pack("<Q", width) + body.ljust(width, b" ")
