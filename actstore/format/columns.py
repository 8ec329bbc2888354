"""Per-row columns of the index: labels and user metadata, typed and validated."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import InvalidArgumentError

__all__ = ["label_array", "normalize_labels", "normalize_metadata"]

_INT32 = (-(2**31), 2**31 - 1)


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def normalize_labels(labels: Any, n: int) -> list[Any]:
    """Check a batch of labels and return them as plain Python values."""
    values = [_scalar(v) for v in (labels.tolist() if isinstance(labels, np.ndarray) else list(labels))]
    if len(values) != n:
        raise InvalidArgumentError(
            f"labels has {len(values)} entries but texts has {n}; pass one label per text."
        )
    return values


def label_kind(values: Sequence[Any]) -> str | None:
    """``"bool"``, ``"int"``, ``"float"``, ``"str"`` or None (all null); mixed kinds are refused."""
    kinds = set()
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, bool):
            kinds.add("bool")
        elif isinstance(v, int):
            kinds.add("int")
        elif isinstance(v, float):
            kinds.add("float")
        elif isinstance(v, str):
            kinds.add("str")
        else:
            raise InvalidArgumentError(
                f"Labels must be int, bool, float or str; got {type(v).__name__} ({v!r})."
            )
    if kinds == {"int", "float"}:
        return "float"
    if len(kinds) > 1:
        raise InvalidArgumentError(
            f"Labels mix kinds {sorted(kinds)}; use one kind (int, bool, float or str) for all rows."
        )
    return kinds.pop() if kinds else None


def label_array(values: Sequence[Any]) -> tuple[pa.Array, str | None]:
    """The ``label`` column (int32 like lmprobe when it fits) and the label kind."""
    kind = label_kind(values)
    if kind == "int":
        lo, hi = min(v for v in values if v is not None), max(v for v in values if v is not None)
        typ = pa.int32() if _INT32[0] <= lo and hi <= _INT32[1] else pa.int64()
        return pa.array(values, type=typ), kind
    if kind == "float":
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64()), kind
    if kind == "bool":
        return pa.array(values, type=pa.bool_()), kind
    if kind == "str":
        return pa.array(values, type=pa.string()), kind
    return pa.array(values, type=pa.int32()), kind


def normalize_metadata(metadata: Any, n: int) -> dict[str, list[Any]]:
    """Accept a list of per-row dicts or a dict of columns; return columns of length ``n``."""
    if isinstance(metadata, Mapping):
        cols = {}
        for name, values in metadata.items():
            vals = values.tolist() if isinstance(values, np.ndarray) else list(values)
            if len(vals) != n:
                raise InvalidArgumentError(
                    f"metadata column {name!r} has {len(vals)} values but texts has {n}."
                )
            cols[str(name)] = [_scalar(v) for v in vals]
        return cols
    rows = list(metadata)
    if len(rows) != n:
        raise InvalidArgumentError(
            f"metadata has {len(rows)} rows but texts has {n}; pass one dict per text."
        )
    names: dict[str, None] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidArgumentError(f"metadata[{i}] must be a dict; got {type(row).__name__}.")
        names.update(dict.fromkeys(map(str, row)))
    return {name: [_scalar(row.get(name)) for row in rows] for name in names}
