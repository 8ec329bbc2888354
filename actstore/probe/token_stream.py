"""Token-level training (``train_pooling="all"``) in bounded memory.

Every real token of every row is a training sample, so the token matrix (tokens x layers x
dim) is the largest thing a probe ever sees; holding it (and the pipeline's copies of it)
is what this module avoids. Rows are read in batches of about ``_BATCH_TOKENS`` tokens
(:func:`.tokens.iter_token_batches`, the same reads as the in-memory path), and:

* ridge, LDA and mass-mean probes are fitted from per-class sufficient statistics (count,
  mean, scatter: :mod:`.streaming_stats`; LDA's fourth moments too) by the heads of
  :mod:`.streaming_heads`, in ONE pass; memory ``O(batch + classes * (layers * dim)**2)``.
* logistic regression keeps only the standardisation (a mean and a variance per feature)
  and writes the raw tokens once to an unlinked temporary file; scikit-learn's objective is
  then minimised by L-BFGS with each loss and gradient summed over chunks read back from
  that file (:mod:`.streaming_logistic`'s terms). Memory ``O(chunk + tokens * 4 bytes)``
  (one class code per token); the file takes the token matrix's size on disk.

The head is built on the raw concatenated layers and then expressed on the inputs the probe
reads (each layer scaled by its ``layer_scale_``), so the fitted probe is laid out exactly as
one fitted in memory; the standardisation makes the per-layer scale irrelevant to the fit.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .classifiers import DEFAULT_CLASSIFIER
from .streaming_heads import heads, scaler
from .streaming_stats import Moments, block_moments, empty
from .tokens import iter_token_batches

__all__ = ["TokenHead", "bounded_classifier", "fit_token_head"]

#: Classifiers the bounded path fits, and the ``classifier_kwargs`` each accepts there.
BOUNDED = {"logistic_regression": {"C", "tol", "max_iter"}, "ridge": {"alpha"},
           "ridge_regression": {"alpha"}, "lda": set(), "mass_mean": set()}
_CHUNK_BYTES = 1 << 22  # float32 bytes per batch read, and per chunk of the L-BFGS passes


@dataclass
class TokenHead:
    """A token-level fit: the affine head on the probe's (per-layer scaled) inputs.

    ``W`` is ``(layers * dim, out)`` and ``b`` ``(out,)``, as :class:`~.head.LinearHead`
    takes them; ``kind`` is ``"proba"``, ``"margin"`` or ``"regression"``.
    """

    W: np.ndarray
    b: np.ndarray
    kind: str
    classes: np.ndarray | None
    layer_scale: np.ndarray
    n_tokens: int


def bounded_classifier(params: Mapping[str, Any], weighted: bool) -> str | None:
    """The built-in classifier name the bounded path fits for these ``Probe`` parameters,
    or None when it cannot (the in-memory path then fits them).

    It can for ``logistic_regression``, ``ridge``, ``ridge_regression``, ``lda`` and
    ``mass_mean`` with the standard scaling (``normalize=True``/``"per_neuron"``), no
    ``preprocessing``, no ``mass_mean_augment``, no ``sample_weight``, and only the options
    in :data:`BOUNDED`.

    Examples
    --------
    >>> bounded_classifier({"classifier": None, "task": "classification", "normalize": True}, False)
    'logistic_regression'
    >>> bounded_classifier({"classifier": "svm", "task": "classification", "normalize": True}, False) is None
    True
    """
    task = params.get("task", "classification")
    name = params.get("classifier")
    if name is None:
        name = DEFAULT_CLASSIFIER.get(task)
    if weighted or not isinstance(name, str) or name not in BOUNDED:
        return None
    if params.get("normalize", True) not in (True, "per_neuron") or params.get("preprocessing"):
        return None
    if params.get("mass_mean_augment") or set(params.get("classifier_kwargs") or {}) - BOUNDED[name]:
        return None
    fits = ("ridge", "ridge_regression") if task == "regression" else ("logistic_regression", "ridge",
                                                                       "lda", "mass_mean")
    if name not in fits:
        return None
    return "ridge" if name == "ridge_regression" else name


def _chunk_tokens(width: int) -> int:
    """Tokens per batch read and per L-BFGS chunk: about ``_CHUNK_BYTES`` of float32."""
    return max(1, _CHUNK_BYTES // (4 * width))


def _batches(ds: Any, layers: Sequence[int | str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(tokens (T, layers, dim) float32, row of each token)`` batch by batch, rows in order."""
    start = 0
    for toks, counts in iter_token_batches(ds, layers, _chunk_tokens(len(layers) * int(ds.info.dim))):
        rows = np.repeat(np.arange(start, start + len(counts)), counts)
        start += len(counts)
        yield toks, rows


def fit_token_head(ds: Any, layers: Sequence[int | str], y_rows: np.ndarray, classifier: str,
                   task: str, kwargs: Mapping[str, Any] | None) -> TokenHead:
    """Fit ``classifier`` on every real token of ``ds`` (labels per row), in bounded memory.

    Parameters
    ----------
    ds : Dataset
        A full-sequence dataset (checked by the caller).
    layers : sequence
        The resolved layers, concatenated per token in this order.
    y_rows : numpy.ndarray
        One checked label (or target) per row; every token of a row takes it.
    classifier : str
        A name :func:`bounded_classifier` returned.
    task : {"classification", "regression"}
    kwargs : mapping, optional
        The classifier's options (those of :data:`BOUNDED`).

    Returns
    -------
    TokenHead
    """
    k, d = len(layers), int(ds.info.dim)
    n_tokens = int(ds.num_tokens_total)
    if task == "regression":
        classes, code = None, np.zeros(len(ds), dtype=np.int32)
    else:
        classes, code = np.unique(y_rows, return_inverse=True)
        code = code.astype(np.int32)
    K = 1 if classes is None else classes.size
    opts = dict(kwargs or {})
    if classifier == "logistic_regression":
        W, b, norms, seen = _logistic(ds, layers, code, K, opts, n_tokens)
        kind = "proba"
    else:
        W, b, norms, seen = _one_pass(ds, layers, code, K, classifier, task, opts,
                                      None if classes is None else classes,
                                      np.asarray(y_rows, dtype=np.float64) if classes is None else None)
        kind = "regression" if task == "regression" else ("margin" if classifier == "ridge" else "proba")
    layer_scale = np.ones(1) if k == 1 else np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 1.0)
    # the head read the raw layers; the probe reads each layer times layer_scale
    W = W / np.repeat(layer_scale, d)[:, None]
    return TokenHead(W, b, kind, classes, layer_scale, seen)


def _norm_sums(toks: np.ndarray, k: int, d: int) -> np.ndarray:
    """Per layer, the sum over these tokens of the token's norm (for ``layer_scale_``)."""
    return np.linalg.norm(toks.reshape(toks.shape[0], k, d), axis=2).sum(0, dtype=np.float64)


def _one_pass(ds: Any, layers: Sequence[int | str], code: np.ndarray, K: int, classifier: str, task: str,
              opts: dict[str, Any], classes: np.ndarray | None,
              target: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Ridge, LDA or mass-mean from one pass of per-class statistics of the raw tokens."""
    k, d = len(layers), int(ds.info.dim)
    width = k * d + (target is not None)
    fourth = classifier == "lda"
    stats = [empty(width, fourth) for _ in range(K)]
    norms, seen = np.zeros(k), 0
    for toks, rows in _batches(ds, layers):
        flat = toks.reshape(toks.shape[0], k * d)
        norms += _norm_sums(flat, k, d)
        seen += flat.shape[0]
        codes = code[rows]
        for c in range(K):
            idx = np.flatnonzero(codes == c)
            if not idx.size:
                continue
            X = np.empty((idx.size, width))
            X[:, : k * d] = flat[idx]  # widened to float64 one class at a time
            if target is not None:
                X[:, k * d] = target[rows[idx]]
            m = stats[c]
            ref = (m.ref if m.n else X.mean(0)) if fourth else None
            m.merge(block_moments(X, ref, overwrite=True))
            del X
    _check_classes(stats, classes, classifier)
    kw = {"ridge": {"alpha": float(opts.get("alpha", 1.0))}} if classifier == "ridge" else {}
    W, b = heads(stats, [classifier], task, kw)[classifier]
    return W, b, norms / max(seen, 1), seen


def _check_classes(stats: list[Moments], classes: np.ndarray | None, classifier: str) -> None:
    """Refuse a class with no token (or one token, for LDA): its rows had none."""
    if classes is None:
        return
    least = 2 if classifier == "lda" else 1
    for c, m in zip(classes.tolist(), stats):
        if m.n < least:
            raise InvalidArgumentError(
                f"Class {c!r} has {m.n} training token(s); {classifier} needs at least {least} "
                "per class. Check the labels of the rows, or the rows you selected.")


class _Moments1:
    """Count, mean and sum of squared deviations per feature (Chan et al.'s merge)."""

    def __init__(self, width: int) -> None:
        self.n, self.mean, self.m2 = 0, np.zeros(width), np.zeros(width)

    def add(self, X: np.ndarray) -> None:
        nb = X.shape[0]
        mb = X.mean(0, dtype=np.float64)
        D = X - mb.astype(X.dtype)
        np.square(D, out=D)
        m2b = D.sum(0, dtype=np.float64)
        del D
        n = self.n + nb
        delta = mb - self.mean
        self.m2 += m2b + delta**2 * (self.n * nb / n)
        self.mean += delta * (nb / n)
        self.n = n


def _logistic(ds: Any, layers: Sequence[int | str], code: np.ndarray, K: int, opts: dict[str, Any],
              n_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Logistic regression by L-BFGS over the tokens spilled once to a temporary file."""
    from scipy.optimize import minimize

    from .streaming_logistic import _binary_terms, _softmax_terms

    k, d = len(layers), int(ds.info.dim)
    width = k * d
    C = float(opts.get("C", 1.0))
    if not C > 0:
        raise InvalidArgumentError(f"logistic_regression's C must be > 0; got {C!r}.")
    token_code = np.empty(n_tokens, dtype=np.int32)  # 4 bytes a token: the only per-token state
    moments, norms, seen = _Moments1(width), np.zeros(k), 0
    with tempfile.TemporaryFile(prefix="actstore-tokens-") as spill:
        for toks, rows in _batches(ds, layers):
            flat = np.ascontiguousarray(toks.reshape(toks.shape[0], width))
            if seen + flat.shape[0] > n_tokens:
                raise InvalidArgumentError(
                    f"The dataset yields more tokens than its index counts ({n_tokens}); it is damaged.")
            moments.add(flat)
            norms += _norm_sums(flat, k, d)
            token_code[seen : seen + flat.shape[0]] = code[rows]
            seen += flat.shape[0]
            spill.write(memoryview(flat).cast("B"))
            del toks, flat
        token_code = token_code[:seen]
        counts = np.bincount(token_code, minlength=K)
        if counts.min() == 0:
            raise InvalidArgumentError(
                f"Class number {int(counts.argmin())} has no training token; every class needs "
                "tokens. Check the labels of the rows, or the rows you selected.")
        mu = moments.mean
        sigma = scaler(seen, mu, moments.m2 / seen)
        out = 1 if K == 2 else K
        terms = _binary_terms if K == 2 else _softmax_terms
        chunk = min(_chunk_tokens(width), max(seen, 1))
        buf = np.empty((chunk, width), dtype=np.float32)

        def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[: out * width].reshape(out, width), theta[out * width :]
            # the standardisation folded into the weights: Z @ w + b == X @ v + c, and
            # Z.T @ r == (X.T @ r - mu * sum(r)) / sigma, so no standardised copy is made
            v = w / sigma
            c = b - v @ mu
            loss, gx, gb = 0.0, np.zeros((out, width)), np.zeros(out)
            spill.seek(0)
            for start in range(0, seen, chunk):
                m = min(chunk, seen - start)
                view = buf[:m]
                if spill.readinto(memoryview(view).cast("B")) != view.nbytes:
                    raise InvalidArgumentError("The temporary token file was cut short (disk full?).")
                t = token_code[start : start + m]
                lo, g, h = terms(view.astype(np.float64), t.astype(np.float64) if K == 2 else t, v, c)
                loss, gx, gb = loss + lo, gx + g, gb + h
            gw = (gx - np.outer(gb, mu)) / sigma
            # scikit-learn's objective divided by C * n (its own scaling): same minimiser
            f = loss / seen + 0.5 / (C * seen) * float((w * w).sum())
            return f, np.concatenate([(gw / seen + w / (C * seen)).ravel(), gb / seen])

        max_iter = int(opts.get("max_iter", 1000))
        res = minimize(loss_grad, np.zeros(out * (width + 1)), jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "maxls": 50, "gtol": float(opts.get("tol", 1e-4)),
                                "ftol": 64 * np.finfo(float).eps})
    if not res.success and res.nit >= max_iter:
        from sklearn.exceptions import ConvergenceWarning

        warnings.warn(f"Token-level logistic regression did not converge in {res.nit} iterations; "
                      "raise classifier_kwargs['max_iter'].", ConvergenceWarning, stacklevel=4)
    w, b = res.x[: out * width].reshape(out, width), res.x[out * width :]
    if out > 1:
        b = b - b.mean()  # the unpenalised softmax intercepts are defined up to a constant
    return (w / sigma).T, b - (w / sigma) @ mu, norms / max(seen, 1), seen
