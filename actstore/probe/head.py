"""A fitted linear probe collapsed into one affine map, for saving and for loaded probes.

Every supported pipeline (per-layer scaling → standardisation → PCA → linear model) is an
affine function of the input, so it can be stored as ``W`` and ``b`` plus how scores turn
into labels and probabilities. A loaded probe predicts through this head.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import (
    LogisticRegression,
    LogisticRegressionCV,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC, LinearSVR
from sklearn.utils.metaestimators import available_if

from ..errors import InvalidArgumentError
from .classifiers import MassMeanProbe

__all__ = ["LinearHead", "affine_steps", "collapse_pipeline"]

_PROBA = (LogisticRegression, LogisticRegressionCV, LinearDiscriminantAnalysis, MassMeanProbe)
# SVC's probabilities come from a separate Platt fit (and may disagree with its predictions),
# SGD's multiclass ones from one-vs-rest normalisation: stored, they predict by margin only
_MARGIN = (LinearSVC, RidgeClassifier, SVC, SGDClassifier)
_REGRESSION = (Ridge, LinearSVR, SGDRegressor)


class LinearHead:
    """Scores ``x @ W + b``; ``kind`` is ``"proba"``, ``"margin"`` or ``"regression"``."""

    def __init__(self, W: np.ndarray, b: np.ndarray, kind: str, classes: np.ndarray | None) -> None:
        self.W, self.b, self.kind, self.classes_ = W, b, kind, classes

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        s = np.asarray(X, dtype=np.float64) @ self.W + self.b
        return s[:, 0] if s.shape[1] == 1 else s

    def predict(self, X: np.ndarray) -> np.ndarray:
        s = self.decision_function(X)
        if self.kind == "regression":
            return s
        assert self.classes_ is not None
        return self.classes_[(s > 0).astype(int)] if s.ndim == 1 else self.classes_[s.argmax(1)]

    # only a "proba" head has probabilities: hasattr(head, "predict_proba") must say so, as a
    # fitted pipeline of a margin classifier does, or callers asking first would call it
    @available_if(lambda self: self.kind == "proba")
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.kind != "proba":
            raise AttributeError("This probe's classifier gives no probabilities; use decision_function.")
        s = self.decision_function(X)
        if s.ndim == 1:
            p = 1.0 / (1.0 + np.exp(-np.clip(s, -500, 500)))
            return np.stack([1 - p, p], axis=1)
        e = np.exp(s - s.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


def affine_steps(steps: Sequence[BaseEstimator], n_features: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Preprocessing steps as one affine map ``x -> x @ M + b``: ``(diag, W, b)`` where ``M``
    is ``diag(diag)`` while ``W`` is None (only diagonal steps so far), else ``W``.

    Standard and per-layer scaling are diagonal; PCA (without whitening) is dense.
    """
    from .preprocess import PerLayerScaler

    # x -> x @ W + b, with W kept as a diagonal vector until a dense step (PCA) appears
    diag = np.ones(n_features)
    W: np.ndarray | None = None
    b = np.zeros(diag.size)
    for step in steps:
        if isinstance(step, (StandardScaler, PerLayerScaler)):
            scale = np.ones(b.size) if step.scale_ is None else step.scale_
            mean = np.zeros(b.size) if step.mean_ is None else step.mean_
            if W is None:
                diag = diag / scale
            else:
                W = W / scale
            b = (b - mean) / scale
        elif isinstance(step, PCA) and not step.whiten:
            C = step.components_.T
            W = diag[:, None] * C if W is None else W @ C
            b = (b - step.mean_) @ C
        else:
            raise InvalidArgumentError(
                f"Pipeline step {type(step).__name__} cannot be saved safely (only standard "
                "or per-layer scaling, PCA without whitening and the mass-mean augmentation "
                "are stored)."
            )
    return diag, W, b


def collapse_pipeline(steps: Sequence[BaseEstimator], estimator: BaseEstimator, n_features: int) -> LinearHead:
    """Compose preprocessing and a linear model (inputs already scaled per layer) into a :class:`LinearHead`.

    Raises
    ------
    InvalidArgumentError
        For an estimator or step that is not one of the linear models actstore knows how to
        store without pickle.
    """
    if isinstance(estimator, SVC) and estimator.kernel != "linear":
        raise InvalidArgumentError(
            f"An SVC probe with kernel={estimator.kernel!r} is not linear and cannot be stored as "
            "a linear head; use classifier='svm' (linear kernel) or 'linear_svm'.")
    if isinstance(estimator, SGDClassifier) and estimator.loss == "log_loss" and len(estimator.classes_) == 2:
        kind = "proba"  # binary log-loss SGD: the sigmoid of its margin, as scikit-learn computes
    elif isinstance(estimator, _PROBA):
        kind = "proba"
    elif isinstance(estimator, _MARGIN):
        kind = "margin"
    elif isinstance(estimator, _REGRESSION):
        kind = "regression"
    else:
        raise InvalidArgumentError(
            f"A probe with classifier {type(estimator).__name__} cannot be saved safely: only "
            "the built-in linear classifiers are stored (as JSON + safetensors, never pickle). "
            "Use one of them, or keep the estimator yourself."
        )
    from .preprocess import MassMeanAugment

    coef = np.atleast_2d(np.asarray(estimator.coef_, dtype=np.float64))
    intercept = np.atleast_1d(np.asarray(estimator.intercept_, dtype=np.float64))
    steps = list(steps)
    if steps and isinstance(steps[-1], MassMeanAugment):
        # the model reads [inner(x), x @ direction]: fold both into coefficients on x
        aug = steps.pop()
        d_in, W_in, b_in = affine_steps(aug.fitted_steps_, aug.direction_.size)
        inner = coef[:, :-1]
        M = d_in[:, None] * inner.T if W_in is None else W_in @ inner.T
        intercept = intercept + b_in @ inner.T
        coef = (M + aug.direction_[:, None] * coef[:, -1][None, :]).T
    if any(isinstance(s, MassMeanAugment) for s in steps):
        raise InvalidArgumentError("The mass-mean augmentation must be the last step before the model.")
    diag, W, b = affine_steps(steps, n_features)
    W = diag[:, None] * coef.T if W is None else W @ coef.T
    b = b @ coef.T + intercept
    classes = getattr(estimator, "classes_", None)
    return LinearHead(W, b, kind, None if kind == "regression" else np.asarray(classes))
