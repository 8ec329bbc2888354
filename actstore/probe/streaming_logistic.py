"""L2 logistic regression out of core: scikit-learn's objective, minimised by L-BFGS
(``scipy.optimize``) with the loss and gradient summed over streamed blocks.

Binary labels fit one weight vector (scikit-learn's binary ``LogisticRegression``); three or
more classes fit the multinomial (softmax) model with one weight vector per class, as
scikit-learn's ``lbfgs`` solver does. The intercept is unpenalised. The features are
standardised with the mean and scale of the already streamed statistics, so the fit equals
``LogisticRegression(C=C)`` on ``StandardScaler().fit_transform(X)``.

Each evaluation of the objective is one pass over the layer's training rows (typically
10-50 per fit), in the same bounded memory as the statistics pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .layers import request
from .streaming_heads import standardisation
from .streaming_stats import Moments

__all__ = ["fit_logistic"]

Blocks = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]


def _binary_terms(Z: np.ndarray, t: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    z = Z @ w[0] + b[0]
    r = 1.0 / (1.0 + np.exp(-z)) - t
    return float(np.sum(np.logaddexp(0.0, z) - t * z)), (Z.T @ r)[None, :], np.array([r.sum()])


def _softmax_terms(Z: np.ndarray, t: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    s = Z @ w.T + b                                    # (rows, K)
    top = s.max(1, keepdims=True)
    e = np.exp(s - top)
    total = e.sum(1, keepdims=True)
    rows = np.arange(t.size)
    loss = float(np.sum(np.log(total[:, 0]) + top[:, 0] - s[rows, t]))
    r = e / total
    r[rows, t] -= 1.0                                  # softmax minus one-hot
    return loss, r.T @ Z, r.sum(0)


def fit_logistic(blocks: Blocks, code: np.ndarray, train: list[Moments], opts: dict[str, Any],
                 layer: int | str) -> tuple[np.ndarray, np.ndarray]:
    """``(W (d, out), b (out,))`` on raw features; ``out`` is 1 for two classes, else K.

    ``blocks()`` starts a pass over the training rows and yields ``(rows, X)`` with ``X``
    float32 ``(len(rows), d)``; ``code[rows]`` are their class numbers ``0..K-1``;
    ``train`` their per-class statistics (for the standardisation).
    """
    from scipy.optimize import minimize

    K = len(train)
    total, sigma = standardisation(train)
    n, mu, d = total.n, total.mean, total.mean.size
    C = float(opts.get("C", 1.0))
    if not C > 0:
        raise InvalidArgumentError(f"logistic_regression's C must be > 0; got {C!r}.")
    out = 1 if K == 2 else K
    terms = _binary_terms if K == 2 else _softmax_terms

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: out * d].reshape(out, d), theta[out * d :]
        loss, gw, gb = 0.0, np.zeros((out, d)), np.zeros(out)
        for rows, X in blocks():
            Z = (X - mu) / sigma
            t = code[rows]
            lo, g, h = terms(Z, t.astype(np.float64) if K == 2 else t, w, b)
            loss, gw, gb = loss + lo, gw + g, gb + h
        # scikit-learn's objective divided by C * n (its own scaling): same minimiser
        f = loss / n + 0.5 / (C * n) * float((w * w).sum())
        return f, np.concatenate([(gw / n + w / (C * n)).ravel(), gb / n])

    max_iter = int(opts.get("max_iter", 1000))
    res = minimize(loss_grad, np.zeros(out * (d + 1)), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "maxls": 50, "gtol": float(opts.get("tol", 1e-8)),
                            "ftol": 1e-15})
    if not res.success and res.nit >= max_iter:
        from sklearn.exceptions import ConvergenceWarning

        warnings.warn(f"Streamed logistic regression on layer {request(layer)} did not converge in "
                      f"{res.nit} iterations; raise classifier_kwargs['logistic_regression']['max_iter'].",
                      ConvergenceWarning, stacklevel=4)
    w, b = res.x[: out * d].reshape(out, d), res.x[out * d :]
    if out > 1:
        b = b - b.mean()  # the unpenalised softmax intercepts are defined up to a constant
    return (w / sigma).T, b - (w / sigma) @ mu
