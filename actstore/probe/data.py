"""Turning a Dataset or arrays plus labels into the (X, y) a probe fits on."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .layers import LayerSpec, resolve_layers

__all__ = ["is_dataset", "labels_for", "load_features", "stored_layers"]


def is_dataset(data: Any) -> bool:
    """True for an actstore Dataset (anything with ``layer`` and ``info``)."""
    from ..format.reader import Dataset

    return isinstance(data, Dataset)


def stored_layers(data: Any) -> list[int]:
    """Layers available in a Dataset, or positions 0..L-1 of a 3-D array."""
    if is_dataset(data):
        return list(data.info.layers)
    arr = np.asarray(data)
    return list(range(arr.shape[1])) if arr.ndim == 3 else [0]


def load_features(data: Any, layers: LayerSpec, view: str | None = None) -> tuple[np.ndarray, list[int]]:
    """Features for the chosen layers as ``(n, len(layers), dim)`` float32, and the layers."""
    chosen = resolve_layers(layers, stored_layers(data))
    if is_dataset(data):
        dim = data.info.dim
        X = np.empty((len(data), len(chosen), dim), dtype=np.float32)
        for j, L in enumerate(chosen):
            X[:, j] = data.layer(L, view=view, dtype=np.float32)
        return X, chosen
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, None, :]
    if arr.ndim != 3:
        raise InvalidArgumentError(
            f"X must be (n, dim) or (n, n_layers, dim); got an array of shape {arr.shape}."
        )
    return arr[:, chosen], chosen


def labels_for(data: Any, y: Any, n: int) -> np.ndarray:
    """Labels from a column name of a Dataset, or from an array of length ``n``."""
    if isinstance(y, str):
        if not is_dataset(data):
            raise InvalidArgumentError(
                f"y={y!r} names a column, which needs a Dataset; with arrays pass the labels."
            )
        values = data.column(y)
    elif y is None:
        if not is_dataset(data) or data.labels is None:
            raise InvalidArgumentError("No labels: pass y= (an array, or a label column name).")
        values = data.labels
    else:
        values = np.asarray(y)
    if values.ndim != 1 or values.shape[0] != n:
        raise InvalidArgumentError(
            f"Labels have shape {values.shape}; expected ({n},), one label per row."
        )
    if values.dtype == object and any(v is None for v in values):
        raise InvalidArgumentError("Labels contain missing values (None); drop those rows first.")
    if values.dtype.kind == "f" and np.isnan(values).any():
        raise InvalidArgumentError(
            f"Labels contain {int(np.isnan(values).sum())} NaN values; drop those rows first."
        )
    return values
