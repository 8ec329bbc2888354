"""Named probe estimators, and the mass-mean probe that scikit-learn lacks."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import (
    LogisticRegression,
    LogisticRegressionCV,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.svm import SVC, LinearSVC, LinearSVR

from ..errors import InvalidArgumentError

__all__ = ["CLASSIFIERS", "DEFAULT_CLASSIFIER", "ClassifierSpec", "MassMeanProbe", "builtin_name",
           "make_estimator"]

CLASSIFIERS = ("logistic_regression", "logistic_regression_cv", "ridge", "ridge_regression", "lda",
               "mass_mean", "mass_mean_iid", "linear_svm", "svm", "sgd")
# the classifier a task gets when none is named (lmprobe's defaults)
DEFAULT_CLASSIFIER = {"classification": "logistic_regression", "regression": "ridge"}
#: A built-in name from :data:`CLASSIFIERS`, or a scikit-learn estimator instance.
ClassifierSpec = str | BaseEstimator | None


class MassMeanProbe(ClassifierMixin, BaseEstimator):
    """Difference-of-means probe (Marks & Tegmark 2023), binary.

    The direction is ``mu_1 - mu_0``; with ``covariance=True`` it is corrected by the shared
    within-class covariance (``Sigma^-1 (mu_1 - mu_0)``, shrunk by ``shrinkage``), which is the
    "IID" variant. The threshold sits halfway between the projected class means.
    """

    def __init__(self, covariance: bool = False, shrinkage: float = 1e-3) -> None:
        self.covariance = covariance
        self.shrinkage = shrinkage

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> MassMeanProbe:
        """Class means (weighted by ``sample_weight`` when given) and the direction between them."""
        X = np.asarray(X, dtype=np.float64)
        w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if w.shape != (len(X),) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise InvalidArgumentError(
                f"sample_weight must be {len(X)} finite non-negative numbers (one per row); got "
                f"shape {w.shape}.")
        self.classes_ = np.unique(y)
        if self.classes_.size != 2:
            raise InvalidArgumentError(
                "Only binary classification is supported by mass_mean probes; got "
                f"{self.classes_.size} classes {self.classes_.tolist()}. Use 'lda' for several classes."
            )
        pos = np.asarray(y) == self.classes_[1]
        w0, w1 = w[~pos], w[pos]
        if w0.sum() <= 0 or w1.sum() <= 0:
            raise InvalidArgumentError("sample_weight gives one class a total weight of 0; "
                                       "each class needs some weight.")
        mu0, mu1 = w0 @ X[~pos] / w0.sum(), w1 @ X[pos] / w1.sum()
        direction = mu1 - mu0
        if self.covariance:
            centered = np.concatenate([X[~pos] - mu0, X[pos] - mu1])
            cw = np.concatenate([w0, w1])
            # weighted within-class scatter; with unit weights it is the usual (n - 2) estimate
            cov = (centered * cw[:, None]).T @ centered / max(cw.sum() - 2, 1)
            cov += self.shrinkage * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
            direction = np.linalg.solve(cov, direction)
        self.coef_ = direction[None, :]
        self.intercept_ = np.array([-0.5 * direction @ (mu0 + mu1)])
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-np.clip(self.decision_function(X), -500, 500)))
        return np.stack([1 - p, p], axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(int)]


def make_estimator(classifier: ClassifierSpec, task: str, kwargs: dict[str, Any] | None,
                   random_state: int | None) -> BaseEstimator:
    """Build the estimator named by ``classifier`` (or clone a scikit-learn one)."""
    from sklearn.base import clone

    kw = dict(kwargs or {})
    if classifier is not None and not isinstance(classifier, str):
        if not hasattr(classifier, "fit"):
            raise InvalidArgumentError(
                f"classifier must be one of {CLASSIFIERS} or a scikit-learn estimator; got {classifier!r}."
            )
        est = clone(classifier)
        if kw:
            est.set_params(**kw)
        return est
    regression = task == "regression"
    if classifier is None:
        classifier = DEFAULT_CLASSIFIER.get(task, "logistic_regression")
    if classifier == "logistic_regression" and not regression:
        return LogisticRegression(max_iter=kw.pop("max_iter", 1000), random_state=random_state, **kw)
    if classifier == "logistic_regression_cv" and not regression:
        return LogisticRegressionCV(**{"cv": 5, "max_iter": 1000, "random_state": random_state, **kw})
    if classifier == "ridge":
        return Ridge(**kw) if regression else RidgeClassifier(**kw)
    if classifier == "ridge_regression" and regression:
        return Ridge(**{"alpha": 1.0, **kw})
    if classifier == "svm" and not regression:
        # a linear SVC with Platt-scaled probabilities (lmprobe's "svm")
        return SVC(**{"kernel": "linear", "probability": True, "random_state": random_state, **kw})
    if classifier == "sgd":
        if regression:
            return SGDRegressor(**{"random_state": random_state, **kw})
        return SGDClassifier(**{"loss": "log_loss", "random_state": random_state, **kw})
    if classifier == "lda" and not regression:
        return LinearDiscriminantAnalysis(**{"solver": "lsqr", "shrinkage": "auto", **kw})
    if classifier in ("mass_mean", "mass_mean_iid") and not regression:
        return MassMeanProbe(covariance=classifier == "mass_mean_iid", **kw)
    if classifier == "linear_svm":
        cls = LinearSVR if regression else LinearSVC
        return cls(random_state=random_state, **{"max_iter": 5000, **kw})
    if classifier in CLASSIFIERS:
        raise InvalidArgumentError(
            f"classifier {classifier!r} does not support task={task!r}; for regression use "
            "'ridge', 'ridge_regression', 'sgd' or 'linear_svm' (or leave classifier unset: "
            "regression defaults to 'ridge'); 'ridge_regression' is for task='regression'."
        )
    raise InvalidArgumentError(
        f"Unknown classifier {classifier!r}; expected one of {', '.join(CLASSIFIERS)} or a "
        "scikit-learn estimator instance."
    )


def builtin_name(estimator: BaseEstimator) -> str:
    """The built-in name a saved probe records for an estimator instance (its class name
    when it is none of the built-ins): the fitted head is what predicts, and the instance's
    own hyperparameters apply only to a refit."""
    if isinstance(estimator, MassMeanProbe):
        return "mass_mean_iid" if estimator.covariance else "mass_mean"
    # LogisticRegressionCV subclasses LogisticRegression: it must come first
    names = {LogisticRegressionCV: "logistic_regression_cv", LogisticRegression: "logistic_regression",
             LinearDiscriminantAnalysis: "lda", Ridge: "ridge", RidgeClassifier: "ridge",
             LinearSVC: "linear_svm", LinearSVR: "linear_svm", SVC: "svm", SGDClassifier: "sgd",
             SGDRegressor: "sgd"}
    return next((v for k, v in names.items() if isinstance(estimator, k)), type(estimator).__name__)
