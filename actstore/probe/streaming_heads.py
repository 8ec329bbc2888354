"""The fitted heads of ridge, LDA and mass-mean probes, from streamed statistics.

Each classifier's fit is a function of the per-class :class:`~.streaming_stats.Moments`
only, reproducing scikit-learn's defaults as :class:`~actstore.Probe` uses them
(``StandardScaler``, then ``RidgeClassifier(alpha=1.0)`` / ``Ridge``,
``LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")``, the mass-mean direction), and
returns the head with the standard scaling folded in: ``(W (d, out), b (out,))`` on raw features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .streaming_stats import Moments, empty

__all__ = ["heads", "pooled", "scaler", "standardisation"]


def pooled(groups: list[Moments]) -> Moments:
    """Every group's rows together (count, mean, scatter)."""
    total = empty(groups[0].mean.size, False)
    for g in groups:
        total.merge(g.second())
    return total


def standardisation(groups: list[Moments]) -> tuple[Moments, np.ndarray]:
    """The pooled statistics and StandardScaler's ``scale_`` for them."""
    total = pooled(groups)
    return total, scaler(total.n, total.mean, np.diag(total.M) / total.n)


def scaler(n: int, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """StandardScaler's ``scale_`` for these statistics (constant features get scale 1)."""
    from sklearn.preprocessing._data import _is_constant_feature

    scale = np.sqrt(var)
    scale[_is_constant_feature(var, mean, n)] = 1.0
    return scale


def _beta(m: Moments, w: np.ndarray) -> float:
    """``sum_n (sum_i w_i (x_ni - mean_i)**2)**2`` from the moments of ``x - m.ref``."""
    assert m.ref is not None and m.A21 is not None and m.A22 is not None
    delta = m.mean - m.ref
    A11 = m.M + m.n * np.outer(delta, delta)  # sum u u^T
    S = m.n * delta                            # sum u
    P = np.diag(A11)                           # sum u**2
    a, q = w * delta, w * delta**2
    sq = q.sum()
    return float(w @ m.A22 @ w - 4 * (w @ m.A21 @ a) + 2 * (w @ P) * sq + 4 * (a @ A11 @ a)
                 - 4 * (a @ S) * sq + m.n * sq**2)


def _lda_head(groups: list[Moments], mu: np.ndarray, sigma: np.ndarray,
              n: int) -> tuple[np.ndarray, np.ndarray]:
    """coef (out, d) and intercept (out,) of LinearDiscriminantAnalysis(lsqr, auto) in Z space."""
    from scipy import linalg

    d = mu.size
    priors = np.array([g.n for g in groups], dtype=np.float64) / n
    means = np.stack([(g.mean - mu) / sigma for g in groups])
    cov = np.zeros((d, d))
    for g, p, mz in zip(groups, priors, means):
        Mz = g.M / np.outer(sigma, sigma)
        sz = scaler(g.n, mz, np.diag(Mz) / g.n)
        R = Mz / (g.n * np.outer(sz, sz))
        if d == 1:
            shrink = 0.0
        else:
            tr = np.diag(R)
            mu_s = tr.sum() / d
            delta_ = float((R * R).sum())
            beta_ = _beta(g, 1.0 / (sigma * sz) ** 2)
            beta = (beta_ / g.n - delta_) / (d * g.n)
            delta = (delta_ - 2.0 * mu_s * tr.sum() + d * mu_s**2) / d
            beta = min(beta, delta)
            shrink = 0.0 if beta == 0 else beta / delta
        shrunk = (1.0 - shrink) * R
        shrunk.flat[:: d + 1] += shrink * np.trace(R) / d
        cov += p * (np.outer(sz, sz) * shrunk)
    coef = linalg.lstsq(cov, means.T)[0].T
    intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
    if len(groups) == 2:
        coef, intercept = (coef[1] - coef[0])[None, :], np.array([intercept[1] - intercept[0]])
    return coef, intercept


def heads(groups: list[Moments], classifiers: list[str], task: str,
          kwargs: dict[str, dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``classifier -> (W (d, out), b (out,))`` in the raw feature space, from the statistics."""
    from scipy import linalg

    total = pooled(groups)
    n = total.n
    d = total.mean.size - (1 if task == "regression" else 0)
    mu, S = total.mean[:d], total.M[:d, :d]
    sigma = scaler(n, mu, np.diag(S) / n)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for c in classifiers:
        if c == "logistic_regression":
            continue  # fitted by .streaming_logistic, with more passes
        if c == "ridge":
            alpha = float(kwargs.get("ridge", {}).get("alpha", 1.0))
            if task == "regression":
                xy, ybar = total.M[:d, d:], total.mean[d:]
            else:
                T = np.where(np.eye(len(groups)) > 0, 1.0, -1.0)
                if len(groups) == 2:
                    T = T[:, 1:]
                counts = np.array([g.n for g in groups], dtype=np.float64)
                ybar = counts @ T / n
                xy = sum(g.n * np.outer(g.mean - mu, t) for g, t in zip(groups, T))
            G = S / np.outer(sigma, sigma)
            G.flat[:: d + 1] += alpha
            coef = linalg.solve(G, xy / sigma[:, None], assume_a="pos").T  # (out, d)
            intercept = np.asarray(ybar, dtype=np.float64)
        elif c == "mass_mean":
            if len(groups) != 2:
                raise InvalidArgumentError(
                    "Only binary classification is supported by mass_mean probes; got "
                    f"{len(groups)} classes. Use 'lda' for several classes."
                )
            m0, m1 = ((g.mean - mu) / sigma for g in groups)
            direction = m1 - m0
            coef, intercept = direction[None, :], np.array([-0.5 * direction @ (m0 + m1)])
        else:
            coef, intercept = _lda_head(groups, mu, sigma, n)
        W = coef.T / sigma[:, None]
        out[c] = (W, intercept - (mu / sigma) @ coef.T)
    return out
