"""Turning a Dataset or arrays plus labels into the (X, y) a probe fits on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeGuard, Union

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InvalidArgumentError, LayerNotFoundError
from ..format.reader import Dataset
from .layers import EMBEDDINGS, LayerSpec, request, resolve_layers, stored

__all__ = ["FeatureSource", "HeldLayers", "LabelSource", "as_dense", "held_layers", "is_dataset", "labels_for",
           "load_features", "read_layers", "select_held", "stored_layers"]

#: What probes read features from: a Dataset, or an array ``(n, dim)`` / ``(n, n_layers, dim)``.
FeatureSource = Union[Dataset, ArrayLike]  # noqa: UP007 (a runtime alias: numpy's ArrayLike is a Union)
#: Labels: a Dataset column name, one label per row, or None for the Dataset's labels.
LabelSource = Union[str, ArrayLike, None]  # noqa: UP007
#: The layers an array holds along axis 1, as the caller names them.
HeldLayers = Union[int, str, Sequence[Union[int, str]]]  # noqa: UP007


def is_dataset(data: object) -> TypeGuard[Dataset]:
    """True for an actstore :class:`~actstore.Dataset`."""
    return isinstance(data, Dataset)


def as_dense(data: object) -> np.ndarray:
    """``data`` as a float32 ``(n, dim)`` or ``(n, n_layers, dim)`` array, or a clear error."""
    import scipy.sparse

    if scipy.sparse.issparse(data):
        raise InvalidArgumentError(
            "Sparse input is not supported: probes read dense activations; pass X.toarray()."
        )
    arr = np.asarray(data)
    if arr.dtype.kind == "c":
        raise InvalidArgumentError("Complex data not supported: X holds complex values; probes need real-valued activations.")
    if arr.ndim not in (2, 3):
        raise InvalidArgumentError(
            f"X must be (n, dim) or (n, n_layers, dim); got an array of shape {arr.shape}. "
            "Reshape your data: X.reshape(1, -1) for a single row, X.reshape(-1, 1) for one feature."
        )
    return arr.astype(np.float32, copy=False)


def stored_layers(data: FeatureSource) -> list[int]:
    """Layers available in a Dataset, or positions 0..L-1 of a 3-D array."""
    if is_dataset(data):
        return list(data.info.layers)
    arr = np.asarray(data)
    return list(range(arr.shape[1])) if arr.ndim == 3 else [0]


def held_layers(layers: HeldLayers, arr: np.ndarray) -> list[int]:
    """Stored numbers of the layers an array holds along axis 1, as the caller names them.

    Each must be a block number (``>= 0``) or ``"embeddings"``; a negative number is refused,
    because without the dataset it cannot be told which block it counts from (and ``-1`` is
    also lmprobe's stored number of the embeddings).
    """
    items = [layers] if isinstance(layers, (int, str, np.integer)) else list(layers)
    out: list[int] = []
    for item in items:
        if item == EMBEDDINGS:
            out.append(-1)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool) and int(item) >= 0:
            out.append(int(item))
        else:
            raise InvalidArgumentError(
                f"layers= names the layers the array holds; each must be a block number >= 0 or "
                f"'embeddings', got {item!r} (take the numbers from the resolved list, e.g. "
                "probe.layers_, not a relative spec such as -1)."
            )
    if len(set(out)) != len(out):
        raise InvalidArgumentError(f"layers={list(items)} names a layer twice; an array holds each layer once.")
    k = arr.shape[1] if arr.ndim == 3 else 1
    if arr.ndim == 3 and len(out) != k:
        raise InvalidArgumentError(
            f"layers={list(items)} names {len(out)} layers but X holds {k} (shape {arr.shape})."
        )
    return out


def _check_finite(X: np.ndarray) -> None:
    # NaN or inf would pass silently through the mass-mean probe and unscaled pipelines
    if not np.isfinite(X).all():
        raise InvalidArgumentError(
            f"X contains {int(np.size(X) - np.isfinite(X).sum())} NaN or infinite values; "
            "probes need finite activations (drop or repair those rows)."
        )


def load_features(data: FeatureSource, layers: LayerSpec, view: str | None = None, *,
                  held: HeldLayers | None = None) -> tuple[np.ndarray, list[int]]:
    """Features for the chosen layers as ``(n, len(layers), dim)`` float32, and the layers.

    ``layers`` is resolved by :mod:`actstore.format.layersel` against the layers the data
    holds: a Dataset's stored layers; for an array, the layers ``held`` names (see
    :func:`held_layers`) or, without it, the positions ``0..k-1`` along axis 1.
    """
    if is_dataset(data):
        chosen = resolve_layers(layers, stored_layers(data), where="the dataset")
        return read_layers(data, chosen, view), chosen
    arr = as_dense(data)
    if held is None:
        chosen = resolve_layers(layers, stored_layers(arr), where="the array (layers = positions on axis 1)")
        X = arr[:, None, :] if arr.ndim == 2 else arr[:, chosen]
    else:
        ids = held_layers(held, arr)
        chosen = resolve_layers(layers, ids, where=f"the array (holding layers {ids})")
        X = arr[:, None, :] if arr.ndim == 2 else arr[:, [ids.index(L) for L in chosen]]
    _check_finite(X)
    return X, chosen


def read_layers(data: Dataset, layers: Sequence[int | str], view: str | None = None) -> np.ndarray:
    """Stored layers ``layers`` (already resolved) of a Dataset as ``(n, len(layers), dim)`` float32.

    One array is allocated and each layer is read into it (``Dataset.layer(out=)``): a single
    layer straight into place, several through one reused ``(n, dim)`` buffer (a layer's slot
    in ``(n, k, dim)`` is not contiguous). The values are checked finite once.
    """
    X = np.empty((len(data), len(layers), data.info.dim), dtype=np.float32)
    if len(layers) == 1:
        data.layer(request(layers[0]), view=view, out=X[:, 0])
    else:
        buf = np.empty((len(data), data.info.dim), dtype=np.float32)
        for j, L in enumerate(layers):
            X[:, j] = data.layer(request(L), view=view, out=buf)
    _check_finite(X)
    return X


def select_held(arr: np.ndarray, held: list[int], layers: Sequence[int | str]) -> np.ndarray:
    """The columns of ``arr`` (holding the stored layers ``held`` on axis 1) for ``layers``."""
    layers = [stored(L) for L in layers]
    missing = [L for L in layers if L not in held]
    if missing:
        raise LayerNotFoundError(
            f"X holds layers {held} but the probe needs layers {layers} ({missing} missing); pass "
            "activations of the layers the probe was fitted on."
        )
    return arr[:, [held.index(L) for L in layers]]


def labels_for(data: FeatureSource, y: LabelSource, n: int) -> np.ndarray:
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
    if values.ndim == 2 and values.shape[1] == 1:  # a column vector, as scikit-learn accepts
        import warnings

        from sklearn.exceptions import DataConversionWarning

        warnings.warn("A column-vector y was passed when a 1d array was expected; it is read as (n,).",
                      DataConversionWarning, stacklevel=3)
        values = values.ravel()
    if values.ndim != 1 or values.shape[0] != n:
        raise InvalidArgumentError(
            f"Labels have shape {values.shape}; expected ({n},), one label per row."
        )
    if values.dtype == object and any(v is None for v in values):
        raise InvalidArgumentError("Labels contain missing values (None); drop those rows first.")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise InvalidArgumentError(
            f"Labels contain {int((~np.isfinite(values)).sum())} NaN or infinite values; drop "
            "those rows first."
        )
    return values
