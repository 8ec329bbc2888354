"""Minimum description length probing with the online code (Voita & Titov, 2020).

The labels are sent in blocks: the first block with a fixed code, each later block with a
probe trained on all earlier blocks. A representation that makes the labels easy to predict
gives a short code; ``compression = baseline codelength / online codelength``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .data import FeatureSource, LabelSource, labels_for, load_features
from .estimator import Probe, check_targets
from .layers import LayerSpec
from .sweep import layers_keyword

__all__ = ["DEFAULT_FRACTIONS", "MDLResult", "mdl_probe"]

#: Block boundaries as fractions of the data (0.1 % ... 100 %), as in Voita & Titov.
DEFAULT_FRACTIONS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)
_LOG2_2PI_E = 0.5 * np.log2(2 * np.pi)


@dataclass
class MDLResult:
    """Codelengths in bits; ``compression`` > 1 means the probe found structure."""

    codelength: float
    uniform_codelength: float
    compression: float
    block_losses: list[float] = field(default_factory=list)
    block_ends: list[int] = field(default_factory=list)
    task: str = "classification"

    def to_dict(self) -> dict[str, float | list[float] | list[int] | str]:
        return dict(self.__dict__)


def _boundaries(n: int, fractions: tuple[float, ...], minimum: int) -> list[int]:
    ends = sorted({min(n, max(minimum, int(round(f * n)))) for f in fractions} | {n})
    return [e for e in ends if e > 0]


def _gauss_bits(y: np.ndarray, mean: np.ndarray | float, var: float, eps: float) -> float:
    var = max(var, 1e-12)
    nll = 0.5 * np.log2(var) + _LOG2_2PI_E + (y - mean) ** 2 / (2 * var * np.log(2))
    return float(np.sum(nll - np.log2(eps)))


def _switch(model_bits: float, baseline_bits: float) -> float:
    """Send a block with whichever code is shorter, plus one bit saying which (a valid code:
    an overfitted early probe can then never cost more than the baseline + 1 bit)."""
    return min(model_bits, baseline_bits) + 1.0


def mdl_probe(
    data: FeatureSource,
    y: LabelSource = None,
    *,
    layers: LayerSpec = -1,
    task: str = "classification",
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS,
    classifier: str = "logistic_regression",
    precision: float = 1e-3,
    random_state: int = 0,
    view: str | None = None,
    layer: LayerSpec | None = None,
    **probe_params: Any,
) -> MDLResult:
    """Online-code MDL of the labels given one layer's activations.

    Classification: the first block is sent with a uniform code over the ``K`` classes
    (``log2 K`` bits per label); later blocks cost ``-log2 p(y|x)`` under a probe trained on
    all earlier blocks. The baseline (``uniform_codelength``) is ``n log2 K``. Each later
    block is sent with the shorter of the probe's code and the baseline code plus a one-bit
    flag, so labels without structure compress to about 1, never far below.

    Regression: targets are standardised, then every value is sent at a fixed ``precision``
    (in standard deviations) under a Gaussian code: the first block under ``N(0, 1)``, later
    blocks under ``N(ŷ, s²)`` with ``ŷ`` from a ridge probe trained on earlier blocks and
    ``s²`` its training residual variance (smoothed towards 1 by one pseudo-observation). The baseline sends every block under
    ``N(mean, var)`` of the earlier targets (the same code without the features), so both
    codelengths are in bits at the same precision and ``compression`` is their ratio.

    ``layers`` names the layer(s), as in :func:`control_task` and :func:`cross_validate`
    (default: the deepest stored block); ``layer=`` is its deprecated old name.

    Examples
    --------
    >>> import actstore
    >>> ds = actstore.open_dataset("acts/minilm")               # doctest: +SKIP
    >>> result = actstore.mdl_probe(ds, "label", layers=3)      # doctest: +SKIP
    >>> result.codelength, result.compression                # doctest: +SKIP
    """
    layers = layers_keyword("mdl_probe", layers, layer)
    pooled = [k for k in ("train_pooling", "inference_pooling") if probe_params.get(k) is not None]
    if pooled:
        raise InvalidArgumentError(
            f"mdl_probe reads pooled views; it does not take {pooled} (token pooling). Pool by "
            "hand with ds.tokens, or fit Probe(train_pooling=...) directly.")
    X, _ = load_features(data, layers, view)
    X = X.reshape(X.shape[0], -1)
    yv = labels_for(data, y, X.shape[0])
    check_targets(yv, task)
    order = np.random.default_rng(random_state).permutation(len(yv))
    X, yv = X[order], yv[order]
    if task == "regression":
        return _mdl_regression(X, yv.astype(np.float64), fractions, precision, random_state, probe_params)
    classes = np.unique(yv)
    k = len(classes)
    ends = _boundaries(len(yv), fractions, k)
    losses = [ends[0] * np.log2(k)]
    for start, end in zip(ends[:-1], ends[1:]):
        seen = yv[:start]
        if len(np.unique(seen)) < 2:
            p = np.full((end - start, k), 1.0 / k)
        else:
            probe = Probe(layers=0, classifier=classifier, random_state=random_state, **probe_params)
            probe.fit(X[:start], seen)
            p = np.zeros((end - start, k))
            cols = np.searchsorted(classes, probe.classes_)
            p[:, cols] = probe.predict_proba(X[start:end])
        p = (1 - 1e-6) * p + 1e-6 / k  # classes unseen so far keep a tiny probability
        idx = np.searchsorted(classes, yv[start:end])
        bits = float(-np.log2(p[np.arange(end - start), idx]).sum())
        losses.append(_switch(bits, (end - start) * np.log2(k)))
    total, uniform = float(sum(losses)), float(len(yv) * np.log2(k))
    return MDLResult(total, uniform, uniform / total, [float(v) for v in losses], ends, "classification")


def _mdl_regression(X: np.ndarray, y: np.ndarray, fractions: tuple[float, ...], eps: float,
                    seed: int, probe_params: dict[str, Any]) -> MDLResult:
    sd = y.std()
    if sd == 0:
        raise InvalidArgumentError("Regression targets are constant; MDL needs varying targets.")
    y = (y - y.mean()) / sd
    ends = _boundaries(len(y), fractions, 2)
    model = [_gauss_bits(y[: ends[0]], 0.0, 1.0, eps)]
    base = list(model)
    for start, end in zip(ends[:-1], ends[1:]):
        seen = y[:start]
        baseline_bits = _gauss_bits(y[start:end], seen.mean(), (seen.var() * start + 1) / (start + 1), eps)
        base.append(baseline_bits)
        probe = Probe(layers=0, classifier="ridge", task="regression", random_state=seed, **probe_params)
        probe.fit(X[:start], seen)
        resid = seen - probe.predict(X[:start])
        var = (float(resid @ resid) + 1.0) / (start + 1)
        model.append(_switch(_gauss_bits(y[start:end], probe.predict(X[start:end]), var, eps), baseline_bits))
    total, baseline = float(sum(model)), float(sum(base))
    return MDLResult(total, baseline, baseline / total, [float(v) for v in model], ends, "regression")
