"""Layer selection: group lasso (FISTA) over layers, coefficient importance, lmprobe's candidates."""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore.probe.layer_select import (
    candidate_positions,
    group_lasso_layers,
    layer_importance,
    top_k_layers,
)


def _planted(n=400, L=5, d=12, layer=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.standard_normal((n, L, d))
    X[:, layer, :3] += 1.5 * y[:, None]
    return X, y


def test_group_lasso_keeps_the_informative_layer_and_zeroes_the_rest():
    X, y = _planted()
    norms, selected = group_lasso_layers(X, y, alpha=0.1)
    assert selected == [3] and norms[3] > 0 and np.all(norms[[0, 1, 2, 4]] == 0)


def test_group_lasso_alpha_orders_the_selection():
    X, y = _planted()
    sizes = [len(group_lasso_layers(X, y, alpha=a)[1]) for a in (0.001, 0.03, 0.1, 10.0)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 5 and sizes[-1] == 0


def test_group_lasso_solution_is_optimal():
    """KKT: a zero layer's gradient norm is <= alpha; a kept layer's gradient is -alpha w/|w|."""
    X, y = _planted(n=300, L=4, d=6)
    alpha = 0.05
    from actstore.probe import layer_select as ls

    n, L, d = X.shape
    Z = X.reshape(n, -1)
    Z = (Z - Z.mean(0)) / Z.std(0)
    w = ls._fista(Z, y.astype(float), L, alpha, 1 / ls._lipschitz(Z, "classification"),
                  "classification", 20000, 1e-12)
    b = np.log(y.mean() / (1 - y.mean()))
    for _ in range(200):  # the intercept at its optimum for this w
        p = 1 / (1 + np.exp(-(Z @ w + b)))
        b -= (p - y).mean() / max((p * (1 - p)).mean(), 1e-9)
    g = (Z.T @ (1 / (1 + np.exp(-(Z @ w + b))) - y) / n).reshape(L, d)
    W = w.reshape(L, d)
    for layer in range(L):
        if np.linalg.norm(W[layer]) == 0:
            assert np.linalg.norm(g[layer]) <= alpha * 1.01
        else:
            np.testing.assert_allclose(g[layer], -alpha * W[layer] / np.linalg.norm(W[layer]), atol=2e-3)


def test_group_lasso_regression_and_multiclass():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 4, 8))
    target = X[:, 1, 0] * 2 + 0.1 * rng.standard_normal(300)
    assert group_lasso_layers(X, target, alpha=0.2, task="regression")[1] == [1]
    y3 = rng.integers(0, 3, 300)
    X[:, 2, :3] += 2.0 * np.eye(3)[y3]
    assert group_lasso_layers(X, y3, alpha=0.1)[1] == [2]


def test_layer_importance_metrics():
    coef = np.array([[3.0, -4.0, 0.0, 1.0, 0.5, -0.5]])
    np.testing.assert_allclose(layer_importance(coef, 3, "l2", normalize=False), [5.0, 1.0, np.sqrt(0.5)])
    np.testing.assert_allclose(layer_importance(coef, 3, "l1", normalize=False), [7.0, 1.0, 1.0])
    np.testing.assert_allclose(layer_importance(coef, 3, "mean_abs", normalize=False), [3.5, 0.5, 0.5])
    np.testing.assert_allclose(layer_importance(coef, 3, "max_abs", normalize=False), [4.0, 1.0, 0.5])
    assert layer_importance(coef, 3).sum() == pytest.approx(1.0)
    with pytest.raises(actstore.InvalidArgumentError, match="metric must be one of"):
        layer_importance(coef, 3, "l3")
    with pytest.raises(actstore.InvalidArgumentError, match="equal layer blocks"):
        layer_importance(coef, 4)


def test_top_k_and_candidates():
    assert top_k_layers(np.array([0.1, 0.5, 0.2, 0.9]), 2) == [1, 3]
    assert top_k_layers(np.array([0.1, 0.5, 0.2, 0.9]), None) == [1, 3]   # half by default
    assert candidate_positions(13, None) == [3, 6, 9]
    assert candidate_positions(13, [2, 0.5, 2]) == [2, 6]
    with pytest.raises(actstore.InvalidArgumentError, match="auto_candidates"):
        candidate_positions(13, ["mid"])
    with pytest.raises(actstore.InvalidArgumentError, match="fast_auto_top_k"):
        top_k_layers(np.ones(3), 0)
    with pytest.raises(actstore.InvalidArgumentError, match="auto_alpha"):
        group_lasso_layers(*_planted(), alpha=float("nan"))
