"""Probe preprocessing: lmprobe's grammar (``"standard+pca:8"``, lists), its per-layer scaler
and its mass-mean augmentation, as scikit-learn steps that are all affine (so a fitted
pipeline still collapses into one linear head and saves without pickle)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from ..errors import InvalidArgumentError

__all__ = ["MassMeanAugment", "PerLayerScaler", "check_normalize", "parse_preprocessing", "preprocessing_steps"]

NORMALIZE = (True, False, "per_neuron", "per_layer")


def check_normalize(value: object) -> str | None:
    """``normalize`` as ``"per_neuron"``, ``"per_layer"`` or None (no scaling)."""
    if isinstance(value, (bool, np.bool_)):
        return "per_neuron" if value else None
    if value in ("per_neuron", "per_layer"):
        return str(value)
    raise InvalidArgumentError(
        f"normalize must be True (or 'per_neuron': one mean/std per feature), 'per_layer' (one "
        f"mean/std per layer, lmprobe's PerLayerScaler) or False; got {value!r}.")


def parse_preprocessing(spec: str | Sequence[str] | None, pca_components: int | None) -> list[tuple[str, int | None]]:
    """lmprobe's preprocessing grammar as steps ``("standard", None)`` / ``("pca", n)``.

    A string is split on ``"+"``; a list holds one step per item. ``"standard"`` and
    ``"standard_scaler"`` standardise; ``"pca"`` keeps ``pca_components`` components (all
    when None), ``"pca:N"`` keeps ``N``.

    Examples
    --------
    >>> parse_preprocessing("standard+pca:8", None)
    [('standard', None), ('pca', 8)]
    >>> parse_preprocessing(["pca"], 4)
    [('pca', 4)]
    """
    if spec is None:
        return []
    items = [s.strip() for s in spec.split("+")] if isinstance(spec, str) else list(spec)
    out: list[tuple[str, int | None]] = []
    for item in items:
        if item in ("standard", "standard_scaler"):
            out.append(("standard", None))
            continue
        if isinstance(item, str) and item == "pca":
            out.append(("pca", pca_components))
            continue
        head, sep, tail = item.partition(":") if isinstance(item, str) else ("", "", "")
        if head == "pca" and sep and tail.isdigit() and int(tail) > 0:
            out.append(("pca", int(tail)))
            continue
        raise InvalidArgumentError(
            f"preprocessing step {item!r} is not understood; use None, 'standard' (or "
            "'standard_scaler'), 'pca', 'pca:N' (N >= 1), joined by '+' (e.g. 'standard+pca:8') "
            f"or as a list; got preprocessing={spec!r}.")
    return out


class PerLayerScaler(TransformerMixin, BaseEstimator):
    """One mean and one standard deviation per layer (lmprobe's ``normalize_layers="per_layer"``).

    The input is ``(n, n_layers * dim)`` (layers concatenated). ``mean_`` and ``scale_`` are
    per feature (each layer's value repeated over its ``dim`` features), like a
    :class:`~sklearn.preprocessing.StandardScaler`'s, so the step is the same affine map.
    """

    def __init__(self, n_layers: int = 1) -> None:
        self.n_layers = n_layers

    def fit(self, X: np.ndarray, y: object = None, sample_weight: np.ndarray | None = None) -> PerLayerScaler:
        X = np.asarray(X, dtype=np.float64)
        if X.shape[1] % self.n_layers:
            raise InvalidArgumentError(
                f"PerLayerScaler: {X.shape[1]} features do not split into {self.n_layers} layers.")
        dim = X.shape[1] // self.n_layers
        w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        means, stds = np.empty(self.n_layers), np.empty(self.n_layers)
        for k in range(self.n_layers):
            block = X[:, k * dim:(k + 1) * dim]
            mean = float(w @ block.sum(1)) / (w.sum() * dim)
            var = float(w @ ((block - mean) ** 2).sum(1)) / (w.sum() * dim)
            means[k], stds[k] = mean, np.sqrt(var)
        stds = np.where(stds == 0, 1.0, stds)
        self.mean_, self.scale_ = np.repeat(means, dim), np.repeat(stds, dim)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_).astype(np.asarray(X).dtype, copy=False)


class MassMeanAugment(TransformerMixin, BaseEstimator):
    """lmprobe's ``mass_mean_augment``: ``steps`` applied, plus one column, the projection of
    the input on the unit mass-mean direction ``(mu_1 - mu_0) / |mu_1 - mu_0|``.

    The direction is learnt on this step's input (after the probe's normalisation, before
    ``steps`` such as PCA), as lmprobe does; binary classification only.
    """

    def __init__(self, steps: Sequence[tuple[str, Any]] = ()) -> None:
        self.steps = steps

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> MassMeanAugment:
        from sklearn.utils.validation import has_fit_parameter

        X64 = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        classes = np.unique(y)
        if classes.size != 2:
            raise InvalidArgumentError(
                f"mass_mean_augment needs a binary classification (two classes); got "
                f"{classes.size} classes. Set mass_mean_augment=False.")
        w = np.ones(len(X64)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        pos = y == classes[1]
        direction = w[pos] @ X64[pos] / w[pos].sum() - w[~pos] @ X64[~pos] / w[~pos].sum()
        norm = np.linalg.norm(direction)
        self.direction_ = direction / norm if norm > 0 else direction
        self.fitted_steps_ = []
        Z = X
        for name, step in self.steps:
            step = clone(step)
            if sample_weight is not None:
                if not has_fit_parameter(step, "sample_weight"):
                    raise InvalidArgumentError(
                        f"preprocessing step {name!r} ({type(step).__name__}) does not take "
                        "sample_weight; fit without preprocessing='pca' to use weights.")
                Z = step.fit(Z, sample_weight=sample_weight).transform(Z)
            else:
                Z = step.fit_transform(Z)
            self.fitted_steps_.append(step)
        self.n_features_in_ = X64.shape[1]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        Z = X
        for step in self.fitted_steps_:
            Z = step.transform(Z)
        proj = np.asarray(X, dtype=np.float64) @ self.direction_
        return np.column_stack([Z, proj.astype(np.asarray(Z).dtype, copy=False)])


def preprocessing_steps(normalize: object, preprocessing: str | Sequence[str] | None,
                        pca_components: int | None, n_layers: int, mass_mean_augment: bool,
                        random_state: int | None) -> list[tuple[str, Any]]:
    """The scikit-learn steps before the classifier.

    The normalisation comes first (a per-neuron one and a first ``"standard"`` step are one
    standardisation), then the preprocessing steps in order; with ``mass_mean_augment``
    those steps run inside one :class:`MassMeanAugment`, whose direction is learnt after
    the normalisation.
    """
    scaling = check_normalize(normalize)
    parsed = parse_preprocessing(preprocessing, pca_components)
    steps: list[tuple[str, Any]] = []
    if scaling == "per_neuron" and parsed and parsed[0][0] == "standard":
        parsed = parsed[1:]  # the normalisation is that standardisation already
    if scaling is not None:
        steps.append(("scale", StandardScaler() if scaling == "per_neuron" else PerLayerScaler(n_layers)))
    pre: list[tuple[str, Any]] = []
    for i, (kind, n) in enumerate(parsed):
        names = {"standard": "scale", "pca": "pca"}
        name = names[kind] if not any(s[0] == names[kind] for s in steps + pre) else f"{names[kind]}_{i}"
        pre.append((name, StandardScaler() if kind == "standard" else PCA(n_components=n, random_state=random_state)))
    if mass_mean_augment:
        return [*steps, ("augment", MassMeanAugment(pre))]
    return [*steps, *pre]
