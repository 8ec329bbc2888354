"""Fitting ridge, LDA and mass-mean probes on every layer in one streaming pass.

These probes are determined by small *sufficient statistics*: per class the row count, the
mean and the centred scatter matrix (``d x d``), plus, for LDA's Ledoit-Wolf shrinkage, two
more ``d x d`` moment matrices. They are accumulated block by block in float64 from
``ds.get(rows, layers=...)``, so the rows are read once for all layers and the memory used
does not grow with the number of rows.

Numerics: each block's statistics are centred on the block's own (per class) mean and merged
with Chan et al.'s pairwise update (``M = Ma + Mb + na nb / n (mb - ma)(mb - ma)^T``), so a
large common offset (activations ``1e4 + N(0, 1)``) costs no precision. The fourth moments LDA
needs are sums of powers of ``x - r``, with ``r`` the class mean of the first block holding
that class (a fixed shift close to the mean), re-centred exactly at the end.

The result is made of ordinary :class:`~actstore.Probe` objects: their fitted head (the
standard scaling folded into one affine map, as a saved probe stores it) equals what
``Probe(classifier=c, layers=[L]).fit(ds, y)`` fits in memory, with the same defaults
(standardisation, ``RidgeClassifier(alpha=1.0)`` / ``Ridge``, ``LinearDiscriminantAnalysis(
solver="lsqr", shrinkage="auto")``, the mass-mean direction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .layers import LayerSpec, request, resolve_layers

__all__ = ["StreamingFit", "fit_streaming"]

STREAMING_CLASSIFIERS = ("ridge", "lda", "mass_mean", "logistic_regression")
_ONE_PASS = ("ridge", "lda", "mass_mean")
_KWARGS = {"ridge": {"alpha"}, "lda": set(), "mass_mean": set(), "logistic_regression": {"C", "tol", "max_iter"}}


@dataclass
class _Moments:
    """Count, mean and centred scatter of one group of rows (+ LDA's shifted 4th moments)."""

    n: int
    mean: np.ndarray
    M: np.ndarray
    A21: np.ndarray | None = None  # sum (u**2)^T u with u = x - ref
    A22: np.ndarray | None = None  # sum (u**2)^T (u**2)

    def merge(self, other: _Moments) -> None:
        """Chan et al.'s pairwise merge, in place."""
        if other.n == 0:
            return
        if self.n == 0:
            self.n, self.mean, self.M = other.n, other.mean.copy(), other.M.copy()
        else:
            n = self.n + other.n
            delta = other.mean - self.mean
            self.M += other.M
            self.M += np.outer(delta, delta) * (self.n * other.n / n)
            self.mean = self.mean + delta * (other.n / n)
            self.n = n
        if other.A21 is not None:
            assert self.A21 is not None and self.A22 is not None and other.A22 is not None
            self.A21 += other.A21
            self.A22 += other.A22

    def copy(self) -> _Moments:
        return _Moments(self.n, self.mean.copy(), self.M.copy(),
                        None if self.A21 is None else self.A21.copy(),
                        None if self.A22 is None else self.A22.copy())


def _empty(d: int, fourth: bool) -> _Moments:
    z = np.zeros((d, d))
    return _Moments(0, np.zeros(d), z.copy(), z.copy() if fourth else None, z.copy() if fourth else None)


@dataclass
class StreamingFit:
    """What :func:`fit_streaming` returns.

    Attributes
    ----------
    probes : dict
        ``(layer, classifier) -> Probe`` fitted on every row (``layer`` as in ``Probe.layers_``,
        ``"embeddings"`` by name).
    fold_probes : dict
        With ``cv``: ``(layer, classifier) -> [Probe, ...]``, the probe of fold ``k`` fitted on
        every row outside fold ``k``; empty without ``cv``.
    folds : list of (train, valid) index arrays
        With ``cv``: the folds (the same as :func:`actstore.cross_validate` draws for this
        ``cv`` and ``seed``); empty without ``cv``.
    """

    probes: dict[tuple[int | str, str], Any]
    fold_probes: dict[tuple[int | str, str], list[Any]] = field(default_factory=dict)
    folds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def __getitem__(self, key: tuple[int | str, str]) -> Any:
        return self.probes[key]


def _check_classifiers(classifiers: Sequence[str] | str, task: str,
                       kwargs: Mapping[str, Mapping[str, Any]] | None) -> tuple[list[str], dict[str, dict[str, Any]]]:
    names = [classifiers] if isinstance(classifiers, str) else list(classifiers)
    if not names:
        raise InvalidArgumentError("classifiers is empty; name at least one of "
                                   f"{STREAMING_CLASSIFIERS}.")
    for c in names:
        if c not in STREAMING_CLASSIFIERS:
            raise InvalidArgumentError(
                f"fit_streaming fits the classifiers {STREAMING_CLASSIFIERS} (their fit is a function "
                f"of streamed statistics); got {c!r}. Fit other classifiers with Probe(...).fit."
            )
        if task == "regression" and c != "ridge":
            raise InvalidArgumentError(
                f"classifier {c!r} does not support task='regression'; use classifiers=('ridge',)."
            )
    kw = {k: dict(v) for k, v in (kwargs or {}).items()}
    for c, opts in kw.items():
        if c not in names:
            raise InvalidArgumentError(f"classifier_kwargs names {c!r}, which is not in classifiers {names}.")
        bad = set(opts) - _KWARGS[c]
        if bad:
            raise InvalidArgumentError(
                f"classifier_kwargs[{c!r}] has unsupported options {sorted(bad)}; supported: "
                f"{sorted(_KWARGS[c]) or 'none'}."
            )
    return list(dict.fromkeys(names)), kw


def _block_moments(X: np.ndarray, ref: np.ndarray | None) -> _Moments:
    """Moments of one block of rows (float64), centred on the block's mean."""
    mean = X.mean(0)
    C = X - mean
    m = _Moments(X.shape[0], mean, C.T @ C)
    if ref is not None:
        U = X - ref
        U2 = U * U
        m.A21, m.A22 = U2.T @ U, U2.T @ U2
    return m


def _scaler(n: int, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """StandardScaler's ``scale_`` for these statistics (constant features get scale 1)."""
    from sklearn.preprocessing._data import _is_constant_feature

    scale = np.sqrt(var)
    scale[_is_constant_feature(var, mean, n)] = 1.0
    return scale


def _beta(m: _Moments, ref: np.ndarray, w: np.ndarray) -> float:
    """``sum_n (sum_i w_i (x_ni - mean_i)**2)**2`` from the shifted moments of ``x - ref``."""
    assert m.A21 is not None and m.A22 is not None
    delta = m.mean - ref
    A11 = m.M + m.n * np.outer(delta, delta)  # sum u u^T
    S = m.n * delta                            # sum u
    P = np.diag(A11)                           # sum u**2
    a, q = w * delta, w * delta**2
    sq = q.sum()
    return float(w @ m.A22 @ w - 4 * (w @ m.A21 @ a) + 2 * (w @ P) * sq + 4 * (a @ A11 @ a)
                 - 4 * (a @ S) * sq + m.n * sq**2)


def _lda_head(groups: list[_Moments], refs: list[np.ndarray], mu: np.ndarray, sigma: np.ndarray,
              n: int) -> tuple[np.ndarray, np.ndarray]:
    """coef (out, d) and intercept (out,) of LinearDiscriminantAnalysis(lsqr, auto) in Z space."""
    from scipy import linalg

    d = mu.size
    priors = np.array([g.n for g in groups], dtype=np.float64) / n
    means = np.stack([(g.mean - mu) / sigma for g in groups])
    cov = np.zeros((d, d))
    for g, ref, p, mz in zip(groups, refs, priors, means):
        Mz = g.M / np.outer(sigma, sigma)
        sz = _scaler(g.n, mz, np.diag(Mz) / g.n)
        R = Mz / (g.n * np.outer(sz, sz))
        if d == 1:
            shrink = 0.0
        else:
            tr = np.diag(R)
            mu_s = tr.sum() / d
            delta_ = float((R * R).sum())
            beta_ = _beta(g, ref, 1.0 / (sigma * sz) ** 2)
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


def _heads(groups: list[_Moments], refs: list[np.ndarray], classifiers: list[str], task: str,
           kwargs: dict[str, dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``classifier -> (W (d, out), b (out,))`` in the raw feature space, from the statistics."""
    from scipy import linalg

    total = _empty(groups[0].mean.size, False)
    for g in groups:
        total.merge(_Moments(g.n, g.mean, g.M))
    n = total.n
    d = total.mean.size - (1 if task == "regression" else 0)
    mu, S = total.mean[:d], total.M[:d, :d]
    sigma = _scaler(n, mu, np.diag(S) / n)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for c in classifiers:
        if c == "logistic_regression":
            continue  # fitted by _logistic, with more passes
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
            coef, intercept = _lda_head(groups, refs, mu, sigma, n)
        W = coef.T / sigma[:, None]
        out[c] = (W, intercept - (mu / sigma) @ coef.T)
    return out


def _make_probe(ds: Any, y: Any, view: str | None, layer: int, classifier: str, task: str,
                kwargs: dict[str, Any] | None, W: np.ndarray, b: np.ndarray,
                classes: np.ndarray | None, d: int) -> Any:
    from .estimator import Probe
    from .head import LinearHead
    from .io import dataset_provenance

    kind = "regression" if task == "regression" else ("margin" if classifier == "ridge" else "proba")
    probe = Probe(layers=[request(layer)], view=view, classifier=classifier, task=task,
                  classifier_kwargs=kwargs or None)
    probe.pipeline_ = LinearHead(W, b, kind, classes)
    probe.layers_, probe.layers_named_ = [request(layer)], True
    probe.layer_scale_, probe.dim_, probe.n_features_in_ = np.ones(1), d, d
    if classes is not None:
        probe.classes_ = classes
    probe.provenance_ = dataset_provenance(ds, y, view, probe.layers_)
    return probe


def fit_streaming(ds: Any, y: Any = None, *, layers: LayerSpec = "all",
                  classifiers: Sequence[str] | str = _ONE_PASS,
                  task: str = "classification", view: str | None = None, block_rows: int = 4096,
                  cv: int | None = None, seed: int = 0,
                  classifier_kwargs: Mapping[str, Mapping[str, Any]] | None = None) -> StreamingFit:
    """Fit ridge, LDA and mass-mean probes on several layers in ONE pass over the rows.

    (Binary logistic regression too, with more passes: see ``classifiers``.)

    Each block of ``block_rows`` rows is read once, for every requested layer
    (``ds.get(rows, layers=...)``), and folded into float64 sufficient statistics; memory is
    ``O(block_rows * n_layers * dim + n_layers * n_classes * folds * dim**2)``, independent of
    the number of rows. The probes equal ``Probe(classifier=c, layers=[L]).fit(ds, y)``
    (standardised features, the same classifier defaults) up to rounding.

    Parameters
    ----------
    ds : Dataset
        The dataset (any URL the reader opens).
    y : str or array, optional
        A label column name or one label per row (default: the dataset's labels).
    layers : int, str or list
        Layers to fit, resolved by :mod:`actstore.format.layersel` (default every block).
    classifiers : sequence of {"ridge", "lda", "mass_mean", "logistic_regression"}
        The first three come from the one pass. ``"logistic_regression"`` (binary) is fitted
        after it by L-BFGS on scikit-learn's objective (same ``C``, intercept unpenalised,
        standardisation from the streamed statistics), each loss and gradient summed over
        streamed blocks: one more pass over the layer per evaluation (typically 10-50), in the
        same bounded memory; options ``C``, ``tol`` (gradient tolerance, default 1e-8),
        ``max_iter``.
    task : {"classification", "regression"}
        Regression fits ``ridge`` only.
    view : str, optional
        Pooled view (default the dataset's primary view).
    block_rows : int
        Rows per block read.
    cv : int, optional
        Also fit one probe per fold (``StratifiedKFold``/``KFold`` as in
        :func:`actstore.cross_validate` with ``seed``), from the same pass: each fold's
        statistics are kept, and fold ``k``'s probe is fitted on the merge of the others'.
        Memory for the statistics grows ``cv`` times.
    seed : int
        Shuffling seed of the folds.
    classifier_kwargs : dict, optional
        Per classifier: ``{"ridge": {"alpha": 10.0}, "logistic_regression": {"C": 0.5}}``.

    Returns
    -------
    StreamingFit
        ``result[layer, classifier]`` is a fitted Probe; ``fold_probes`` and ``folds`` with ``cv``.

    Raises
    ------
    InvalidArgumentError
        For an unsupported classifier or option, bad labels, a class with too few rows, or a
        block holding NaN or infinite values (the first such row is named).

    Examples
    --------
    >>> import actstore
    >>> ds = actstore.open_dataset("s3://team-bucket/acts/big")  # doctest: +SKIP
    >>> fit = actstore.fit_streaming(ds, "label", layers="all", cv=5)   # doctest: +SKIP
    >>> probe = fit[12, "lda"]              # an ordinary fitted Probe       # doctest: +SKIP
    """
    from .data import is_dataset, labels_for
    from .estimator import check_targets

    if not is_dataset(ds):
        raise InvalidArgumentError(
            f"fit_streaming reads a Dataset (actstore.open_dataset(url)); got {type(ds).__name__}. "
            "For arrays in memory use Probe(...).fit(X, y)."
        )
    if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
        raise InvalidArgumentError(f"block_rows must be a positive int; got {block_rows!r}.")
    names, kw = _check_classifiers(classifiers, task, classifier_kwargs)
    chosen = resolve_layers(layers, list(ds.info.layers), where="the dataset")
    n = len(ds)
    if n == 0:
        raise InvalidArgumentError("The data has 0 rows; a probe needs at least one.")
    yv = labels_for(ds, y, n)
    check_targets(yv, task)
    d = int(ds.info.dim)
    if task == "regression":
        classes, code, K = None, np.zeros(n, dtype=np.int32), 1
        target = np.asarray(yv, dtype=np.float64)
    else:
        classes, code = np.unique(yv, return_inverse=True)
        code = code.astype(np.int32)  # 4 bytes a row: the only per-row state besides the labels
        K, target = classes.size, None
        small = np.bincount(code, minlength=K).min()
        if small < 2 and "lda" in names:
            raise InvalidArgumentError(
                f"A class has {small} row(s); LDA needs at least two rows per class. Drop the class "
                "or collect more rows."
            )
    folds: list[tuple[np.ndarray, np.ndarray]] = []
    fold_of = np.zeros(n, dtype=np.int32)
    F = 1
    if cv is not None:
        from .folds import make_folds

        folds = make_folds(np.asarray(yv), cv, task, seed, None)
        F = len(folds)
        for k, (_, va) in enumerate(folds):
            fold_of[va] = k
    fourth = "lda" in names
    width = d + (1 if task == "regression" else 0)
    # stats[layer][fold][class]
    stats = [[[_empty(width, fourth) for _ in range(K)] for _ in range(F)] for _ in chosen]
    refs: list[list[np.ndarray | None]] = [[None] * K for _ in chosen]
    for start in range(0, n, int(block_rows)):
        rows = np.arange(start, min(start + int(block_rows), n))
        block = ds.get(rows, layers=[request(L) for L in chosen], view=view, dtype=np.float32)
        bad = ~np.isfinite(block).all(axis=(1, 2))
        if bad.any():
            raise InvalidArgumentError(
                f"Row {int(rows[np.argmax(bad)])} holds NaN or infinite activations; probes need "
                "finite values (drop or repair that row, e.g. with a row selection)."
            )
        groups = [(f, c, np.flatnonzero((fold_of[rows] == f) & (code[rows] == c)))
                  for f in range(F) for c in range(K)]
        for j in range(len(chosen)):
            X = block[:, j].astype(np.float64)
            if target is not None:
                X = np.concatenate([X, target[rows, None]], axis=1)
            for f, c, idx in groups:
                if idx.size == 0:
                    continue
                Xg = X[idx]
                if fourth and refs[j][c] is None:
                    refs[j][c] = Xg.mean(0)
                stats[j][f][c].merge(_block_moments(Xg, refs[j][c] if fourth else None))
        del block
    result = StreamingFit(probes={}, folds=folds)
    for j, L in enumerate(chosen):
        ref_j = [r if r is not None else np.zeros(width) for r in refs[j]]
        for k in [None, *range(F if cv is not None else 0)]:
            train = _merge_folds(stats[j], skip=k, width=width, fourth=fourth)
            if any(g.n == 0 for g in train):
                where = "The data" if k is None else f"The training set of fold {k}"
                raise InvalidArgumentError(
                    f"{where} lacks a class (of {classes}); every class needs rows in every "
                    "training set. Use fewer folds or drop the rare class."
                )
            heads = _heads(train, ref_j, names, task, kw)
            if "logistic_regression" in names:
                heads["logistic_regression"] = _logistic(ds, L, view, code, fold_of, k, train, int(block_rows),
                                                         kw.get("logistic_regression", {}))
            for c in names:
                probe = _make_probe(ds, y, view, L, c, task, kw.get(c), *heads[c], classes, d)
                if k is None:
                    result.probes[request(L), c] = probe
                else:
                    result.fold_probes.setdefault((request(L), c), []).append(probe)
    return result


def _logistic(ds: Any, layer: int, view: str | None, code: np.ndarray, fold_of: np.ndarray,
              skip: int | None, train: list[_Moments], block_rows: int,
              opts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Binary L2 logistic regression (scikit-learn's objective, intercept unpenalised) by
    L-BFGS on standardised features, each loss and gradient summed over streamed blocks.

    Each evaluation is one pass over the layer's rows (outside fold ``skip``); the
    standardisation comes from the already streamed statistics ``train``.
    """
    from scipy.optimize import minimize

    if len(train) != 2:
        raise InvalidArgumentError(
            f"logistic_regression is streamed for two classes only; got {len(train)}. Use 'lda' or "
            "'ridge' for several classes, or Probe(classifier='logistic_regression').fit in memory."
        )
    total = _empty(train[0].mean.size, False)
    for g in train:
        total.merge(_Moments(g.n, g.mean, g.M))
    n, mu = total.n, total.mean
    sigma = _scaler(n, mu, np.diag(total.M) / n)
    C = float(opts.get("C", 1.0))
    if not C > 0:
        raise InvalidArgumentError(f"logistic_regression's C must be > 0; got {C!r}.")
    d = mu.size
    N = code.size

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        loss, gw, gb = 0.0, np.zeros(d), 0.0
        for start in range(0, N, block_rows):
            rows = np.arange(start, min(start + block_rows, N))
            keep = rows if skip is None else rows[fold_of[rows] != skip]
            if keep.size == 0:
                continue
            Z = (ds.get(keep, layers=[request(layer)], view=view, dtype=np.float32)[:, 0] - mu) / sigma
            t = code[keep].astype(np.float64)
            z = Z @ w + b
            loss += float(np.sum(np.logaddexp(0.0, z) - t * z))
            r = 1.0 / (1.0 + np.exp(-z)) - t
            gw += Z.T @ r
            gb += float(r.sum())
        # scikit-learn's objective divided by C * n: same minimiser, gradients of order one
        f = loss / n + 0.5 / (C * n) * float(w @ w)
        return f, np.concatenate([gw / n + w / (C * n), [gb / n]])

    res = minimize(loss_grad, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                   options={"maxiter": int(opts.get("max_iter", 1000)), "gtol": float(opts.get("tol", 1e-8)),
                            "ftol": 1e-15})
    if not res.success and res.nit >= int(opts.get("max_iter", 1000)):
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        warnings.warn(f"Streamed logistic regression on layer {request(layer)} did not converge in "
                      f"{res.nit} iterations; raise classifier_kwargs['logistic_regression']['max_iter'].",
                      ConvergenceWarning, stacklevel=3)
    w, b = res.x[:d], res.x[d]
    return (w / sigma)[:, None], np.array([b - (mu / sigma) @ w])


def _merge_folds(per_fold: list[list[_Moments]], *, skip: int | None, width: int,
                 fourth: bool) -> list[_Moments]:
    """Per class, the statistics of every fold but ``skip`` (all folds for None), merged."""
    out = []
    for c in range(len(per_fold[0])):
        m = _empty(width, fourth)
        for f, groups in enumerate(per_fold):
            if f != skip:
                m.merge(groups[c])
        out.append(m)
    return out
