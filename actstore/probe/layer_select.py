"""Which layers a probe should use: group lasso over candidate layers, or coefficient importance.

Two selectors, with lmprobe 0.10.3's names:

- ``"auto"``: a group lasso over the candidate layers (one group per layer, every neuron
  standardised), which zeroes whole layers; the layers whose group survives are kept.
- ``"fast_auto"``: one ordinary fit on all candidates, then the ``top_k`` layers by the
  norm of their coefficient block.

The group lasso is solved here by accelerated proximal gradient (FISTA, Beck & Teboulle 2009)
in numpy. We tried skglm's ``GroupProxNewton`` first (the maintained scikit-learn-contrib
solver); on this project's 2-core machines its numba JIT costs ~13 s to import and ~60-90 s to
compile per process, for a problem with a handful of groups that FISTA solves in well under a
second. The ``group-lasso`` package has had no release since 2021.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InvalidArgumentError

__all__ = ["IMPORTANCE_METRICS", "group_lasso_layers", "layer_importance", "top_k_layers"]

IMPORTANCE_METRICS = ("l2", "l1", "mean_abs", "max_abs")


def layer_importance(coef: np.ndarray, n_layers: int, metric: str = "l2",
                     normalize: bool = True) -> np.ndarray:
    """One importance per layer from a linear model's coefficients on stacked layers.

    Parameters
    ----------
    coef : array (n_outputs, n_layers * dim) or (n_layers * dim,)
        Coefficients on standardised features, layer blocks side by side.
    n_layers : int
    metric : {"l2", "l1", "mean_abs", "max_abs"}
        How a layer's block is summarised (over every output).
    normalize : bool
        Divide by the sum, so the importances add up to 1.

    Examples
    --------
    >>> layer_importance(np.array([3.0, 4.0, 0.0, 1.0]), 2, "l2", normalize=False)
    array([5., 1.])
    """
    if metric not in IMPORTANCE_METRICS:
        raise InvalidArgumentError(f"metric must be one of {IMPORTANCE_METRICS}; got {metric!r}.")
    W = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    if W.shape[1] % n_layers:
        raise InvalidArgumentError(
            f"{W.shape[1]} coefficients do not split into {n_layers} equal layer blocks.")
    blocks = np.abs(W.reshape(W.shape[0], n_layers, -1))  # (outputs, layers, dim)
    if metric == "l2":
        imp = np.sqrt((blocks ** 2).sum(axis=(0, 2)))
    elif metric == "l1":
        imp = blocks.sum(axis=(0, 2))
    elif metric == "mean_abs":
        imp = blocks.mean(axis=(0, 2))
    else:
        imp = blocks.max(axis=(0, 2))
    total = imp.sum()
    return imp / total if normalize and total > 0 else imp


def top_k_layers(importance: np.ndarray, k: int | None) -> list[int]:
    """Positions of the ``k`` most important layers, in layer order (default: half, at least 1)."""
    n = len(importance)
    k = max(1, n // 2) if k is None else k
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise InvalidArgumentError(f"fast_auto_top_k must be a positive int; got {k!r}.")
    return sorted(int(i) for i in np.argsort(-np.asarray(importance), kind="stable")[: min(k, n)])


def group_lasso_layers(X: np.ndarray, y: np.ndarray, *, alpha: float = 0.01,
                       task: str = "classification", max_iter: int = 2000,
                       tol: float = 1e-6) -> tuple[np.ndarray, list[int]]:
    """Group-lasso norms per layer, and the layers whose group is not zero.

    Minimises ``loss(X w + b, y) + alpha * sum_l ||w_l||_2`` over standardised features, with
    the mean logistic loss (classification; one-vs-rest for several classes, a layer's norm
    then pooled over the classes) or half the mean squared error (regression).

    Parameters
    ----------
    X : array (n, n_layers, dim)
    y : array (n,)
    alpha : float
        Penalty strength: larger keeps fewer layers. ``alpha`` at or above
        ``max_l ||grad_l(0)||`` keeps none.

    Returns
    -------
    norms : array (n_layers,)
        Each layer's coefficient norm at the solution.
    selected : list of int
        Positions of the layers with a non-zero norm.
    """
    if not np.isfinite(alpha) or alpha < 0:
        raise InvalidArgumentError(f"auto_alpha must be a finite number >= 0; got {alpha!r}.")
    n, L, d = X.shape
    Z = X.reshape(n, L * d).astype(np.float64)
    Z = (Z - Z.mean(0)) / np.where(Z.std(0) > 0, Z.std(0), 1.0)
    if task == "regression":
        targets = [np.asarray(y, dtype=np.float64)]
    else:
        classes = np.unique(y)
        targets = [(y == c).astype(np.float64) for c in (classes[1:] if len(classes) == 2 else classes)]
    step = 1.0 / _lipschitz(Z, task)
    norms = np.zeros(L)
    for t in targets:
        w = _fista(Z, t, L, alpha, step, task, max_iter, tol)
        norms += (w.reshape(L, d) ** 2).sum(1)
    norms = np.sqrt(norms)
    return norms, [int(i) for i in np.flatnonzero(norms > 0)]


def _lipschitz(Z: np.ndarray, task: str) -> float:
    """An upper bound of the loss gradient's Lipschitz constant, by power iteration."""
    v = np.random.default_rng(0).standard_normal(Z.shape[1])
    for _ in range(50):
        v = Z.T @ (Z @ v)
        v /= np.linalg.norm(v) or 1.0
    sigma2 = float(np.linalg.norm(Z @ v) ** 2) * 1.05  # 5 % margin over the estimate
    n = Z.shape[0]
    return max(sigma2 / n * (0.25 if task != "regression" else 1.0), 1e-12)


def _grad(Z: np.ndarray, t: np.ndarray, w: np.ndarray, b: float, task: str) -> tuple[np.ndarray, float]:
    z = Z @ w + b
    r = z - t if task == "regression" else 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500))) - t
    return Z.T @ r / len(t), float(r.mean())


def _fista(Z: np.ndarray, t: np.ndarray, L: int, alpha: float, step: float, task: str,
           max_iter: int, tol: float) -> np.ndarray:
    p = Z.shape[1]
    w = np.zeros(p)
    b = float(t.mean()) if task == "regression" else float(np.log(max(t.mean(), 1e-12) / max(1 - t.mean(), 1e-12)))
    vw, vb, momentum = w.copy(), b, 1.0
    for _ in range(max_iter):
        gw, gb = _grad(Z, t, vw, vb, task)
        new_w = _block_soft(vw - step * gw, L, step * alpha)
        new_b = vb - step * gb  # the intercept is not penalised
        nxt = (1 + np.sqrt(1 + 4 * momentum ** 2)) / 2
        vw = new_w + (momentum - 1) / nxt * (new_w - w)
        vb = new_b + (momentum - 1) / nxt * (new_b - b)
        change = np.linalg.norm(new_w - w) / max(np.linalg.norm(w), 1.0)
        w, b, momentum = new_w, new_b, nxt
        if change < tol:
            break
    return w


def _block_soft(w: np.ndarray, L: int, threshold: float) -> np.ndarray:
    """The group lasso's proximal map: shrink each layer block's norm by ``threshold``."""
    W = w.reshape(L, -1)
    norms = np.linalg.norm(W, axis=1, keepdims=True)
    scale = np.maximum(0.0, 1.0 - threshold / np.where(norms > 0, norms, 1.0))
    return (W * scale).reshape(-1)


def candidate_positions(n_blocks: int, candidates: Sequence[float | int] | None) -> list[int]:
    """lmprobe's candidate grammar: block numbers, or fractions of the depth (default 1/4, 1/2, 3/4)."""
    items = [0.25, 0.5, 0.75] if candidates is None else list(candidates)
    out = []
    for c in items:
        if isinstance(c, float) and 0.0 <= c <= 1.0:
            out.append(min(n_blocks - 1, int(round(c * (n_blocks - 1)))))
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            out.append(int(c))
        else:
            raise InvalidArgumentError(
                f"auto_candidates holds block numbers (int) or fractions of the depth in [0, 1] "
                f"(float); got {c!r}.")
    return sorted(set(out))
