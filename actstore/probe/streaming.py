"""Fitting linear probes on every layer in one streaming pass, in bounded memory.

Ridge, LDA and mass-mean probes are determined by small *sufficient statistics*: per class
the row count, the mean and the centred scatter matrix (``d x d``), plus, for LDA's
Ledoit-Wolf shrinkage, two more ``d x d`` moment matrices (:mod:`.streaming_stats`). They are
accumulated block by block in float64 from ``ds.get(rows, layers=...)``
(:mod:`.streaming_blocks`), so the rows are read once for all layers and the memory used does
not grow with the number of rows. Logistic regression is fitted after the pass by L-BFGS over
streamed blocks (:mod:`.streaming_logistic`).

The statistics add up: :func:`accumulate_statistics` covers a range of rows (one worker's
share, ``rank=`` of ``world_size=``), :meth:`StreamingStatistics.merge` (or ``+``) combines
workers' statistics (saved with :meth:`~StreamingStatistics.save`, no pickle, or gathered
with :meth:`~StreamingStatistics.all_reduce` under ``torch.distributed``), and
:meth:`~StreamingStatistics.finish` fits the probes. :func:`fit_streaming` is all three in
one process.

The result is made of ordinary :class:`~actstore.Probe` objects: their fitted head (the
standard scaling folded into one affine map, as a saved probe stores it) equals what
``Probe(classifier=c, layers=[L]).fit(ds, y)`` fits in memory, with the same defaults.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .layers import LayerSpec, resolve_layers
from .streaming_blocks import check_memory, memory_needed
from .streaming_statistics import FORMAT as STATS_FORMAT
from .streaming_statistics import StreamingFit, StreamingStatistics, layer_key

__all__ = ["StreamingFit", "StreamingStatistics", "accumulate_statistics", "fit_streaming"]

STREAMING_CLASSIFIERS = ("ridge", "lda", "mass_mean", "logistic_regression")
_ONE_PASS = ("ridge", "lda", "mass_mean")
_KWARGS = {"ridge": {"alpha"}, "lda": set(), "mass_mean": set(), "logistic_regression": {"C", "tol", "max_iter"}}


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


def _rows_for(rows: Any, rank: int | None, world_size: int | None, n: int) -> np.ndarray:
    """The dataset positions a worker covers: ``rows=``, or its contiguous share of ``rank``."""
    if rank is not None or world_size is not None:
        if rows is not None:
            raise InvalidArgumentError("Pass rows= or rank=/world_size=, not both.")
        if not (isinstance(rank, (int, np.integer)) and isinstance(world_size, (int, np.integer))
                and 0 <= rank < world_size):
            raise InvalidArgumentError(
                f"rank and world_size must be ints with 0 <= rank < world_size; got rank={rank!r}, "
                f"world_size={world_size!r}."
            )
        bounds = np.linspace(0, n, int(world_size) + 1).round().astype(np.int64)
        return np.arange(bounds[rank], bounds[rank + 1])
    if rows is None:
        return np.arange(n)
    if isinstance(rows, slice):
        return np.arange(n)[rows]
    out = np.asarray(rows)
    if out.ndim != 1 or (out.size and out.dtype.kind not in "iu"):
        raise InvalidArgumentError(f"rows must be a slice, a range or 1-D integer positions; got {out.dtype} "
                                   f"of shape {out.shape}.")
    out = out.astype(np.int64)
    if out.size and (out.min() < 0 or out.max() >= n):
        raise InvalidArgumentError(f"rows must be positions 0..{n - 1}; got values from {out.min()} to {out.max()}.")
    uniq = np.unique(out)
    if uniq.size != out.size:
        raise InvalidArgumentError("rows names a row twice; each row is counted once.")
    return uniq


def _plain(label: Any) -> Any:
    """A numpy scalar label as the Python value it prints as."""
    return label.item() if isinstance(label, np.generic) else label


def _check_groups(names: list[str], code: np.ndarray, fold_of: np.ndarray, F: int, K: int, classes: Any) -> None:
    """Refuse, before reading, classes too small for the fit or absent from a training set."""
    counts = np.bincount(code, minlength=K)
    if "lda" in names and counts.min() < 2:
        raise InvalidArgumentError(
            f"Class {_plain(classes[int(counts.argmin())])!r} has {int(counts.min())} row(s); LDA needs at least "
            "two rows per class. Drop the class, collect more rows, or leave 'lda' out."
        )
    for k in range(F if F > 1 else 0):
        present = np.bincount(code[fold_of != k], minlength=K)
        if present.min() == 0:
            raise InvalidArgumentError(
                f"Class {_plain(classes[int(present.argmin())])!r} has {int(counts[present.argmin()])} row(s), all in "
                f"fold {k}, so that fold's training set lacks it; every class needs rows in every "
                "training set. Use fewer folds, or drop the rare class."
            )


def accumulate_statistics(ds: Any, y: Any = None, *, layers: LayerSpec = "all",
                          classifiers: Sequence[str] | str = _ONE_PASS, task: str = "classification",
                          view: str | None = None, block_rows: int = 2048, cv: int | None = None,
                          seed: int = 0, classifier_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                          rows: Any = None, rank: int | None = None, world_size: int | None = None,
                          memory_budget: int | str | None = None) -> StreamingStatistics:
    """One streaming pass over some rows: the mergeable statistics every probe is fitted from.

    The arguments are those of :func:`fit_streaming`, plus which rows this call covers, so
    that workers (processes or machines) each take a share and combine them::

        stats = accumulate_statistics(ds, layers="all", rank=rank, world_size=world)
        stats.all_reduce()              # under torch.distributed (gloo); or save + merge
        fit = stats.finish()

    Parameters
    ----------
    rows : slice, range or array of int, optional
        Dataset positions to read (default all).
    rank, world_size : int, optional
        Instead of ``rows``: the ``rank``-th of ``world_size`` contiguous shares.
    memory_budget : int or str, optional
        Bytes (``"2G"``) the pass may use; a pass that needs more is refused before reading.

    Returns
    -------
    StreamingStatistics
        Merge with the other workers' (:meth:`~StreamingStatistics.merge`, ``+``,
        :meth:`~StreamingStatistics.all_reduce`), then :meth:`~StreamingStatistics.finish`.

    Examples
    --------
    >>> a = accumulate_statistics(ds, rank=0, world_size=2)     # doctest: +SKIP
    >>> b = accumulate_statistics(ds, rank=1, world_size=2)     # doctest: +SKIP
    >>> fit = (a + b).finish()                                   # doctest: +SKIP
    """
    from ..config import parse_bytes
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
    mine = _rows_for(rows, rank, world_size, n)
    yv = labels_for(ds, y, n)
    check_targets(yv, task)
    d = int(ds.info.dim)
    target = None
    if task == "regression":
        classes, code, K = None, np.zeros(n, dtype=np.int32), 1
        target = np.asarray(yv, dtype=np.float64)
    else:
        classes, code = np.unique(yv, return_inverse=True)
        code = code.astype(np.int32)  # 4 bytes a row: with the fold numbers, the only per-row state
        K = classes.size
    folds: list[tuple[np.ndarray, np.ndarray]] = []
    fold_of = np.zeros(n, dtype=np.int32)
    if cv is not None:
        from .folds import make_folds

        folds = make_folds(np.asarray(yv), cv, task, seed, None)
        for k, (_, va) in enumerate(folds):
            fold_of[va] = k
    F = max(len(folds), 1)
    if task != "regression":
        _check_groups(names, code, fold_of, len(folds), K, classes)
    fourth = "lda" in names
    budget = None if memory_budget is None else parse_bytes(memory_budget)
    shape = {"dim": d, "n_layers": len(chosen), "n_groups": K * F, "fourth": fourth, "block_rows": int(block_rows)}
    check_memory(budget, memory_needed(**shape, width=d + (target is not None)), **shape)
    digest = hashlib.sha256(memoryview(code))
    digest.update(memoryview(fold_of))
    if target is not None:
        digest.update(memoryview(target))
    config = {
        "arguments": {"layers": [layer_key(L) for L in chosen], "classifiers": names, "task": task,
                      "view": view, "block_rows": int(block_rows), "cv": cv, "seed": int(seed),
                      "classifier_kwargs": kw or None, "label_column": y if isinstance(y, str) else None},
        "dim": d, "rows": n, "model": ds.info.model, "n_groups": [K, F], "fourth": fourth, "view": view,
        "block_rows": int(block_rows), "labels": digest.hexdigest(),
        "classes": None if classes is None else [str(c) for c in classes.tolist()],
    }
    stats = StreamingStatistics(ds, y, config, chosen, code, target, fold_of, folds, classes)
    stats._accumulate(mine)
    return stats


def fit_streaming(ds: Any, y: Any = None, *, layers: LayerSpec = "all",
                  classifiers: Sequence[str] | str = _ONE_PASS,
                  task: str = "classification", view: str | None = None, block_rows: int = 2048,
                  cv: int | None = None, seed: int = 0,
                  classifier_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                  memory_budget: int | str | None = None) -> StreamingFit:
    """Fit ridge, LDA and mass-mean probes on several layers in ONE pass over the rows.

    (Logistic regression too, with more passes: see ``classifiers``.)

    Each block of ``block_rows`` rows is read once, for every requested layer
    (``ds.get(rows, layers=...)``, the next block read in a thread while this one is
    computed), and folded into float64 sufficient statistics; memory is
    ``O(block_rows * n_layers * dim + n_layers * n_classes * folds * dim**2)``, independent of
    the number of rows. The probes equal ``Probe(classifier=c, layers=[L]).fit(ds, y)``
    (standardised features, the same classifier defaults) up to rounding. To split the pass
    across processes see :func:`accumulate_statistics`.

    Parameters
    ----------
    ds : Dataset
        The dataset (any URL the reader opens: local, ``s3://``, ``https://``, ``hf://``).
    y : str or array, optional
        A label column name or one label per row (default: the dataset's labels).
    layers : int, str or list
        Layers to fit, resolved by :mod:`actstore.format.layersel` (default every block).
    classifiers : sequence of {"ridge", "lda", "mass_mean", "logistic_regression"}
        The first three come from the one pass. ``"logistic_regression"`` (binary, or
        multinomial for three or more classes) is fitted after it by L-BFGS on scikit-learn's
        objective (same ``C``, intercept unpenalised, standardisation from the streamed
        statistics), each loss and gradient summed over streamed blocks: one more pass over
        the layer per evaluation (typically 10-50), in the same bounded memory; options
        ``C``, ``tol`` (gradient tolerance, default 1e-8), ``max_iter``.
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
    memory_budget : int or str, optional
        Bytes (``"1.5G"``) the fit may hold; one whose statistics need more (``dim`` too
        large for ``dim x dim`` matrices) is refused before anything is read.

    Returns
    -------
    StreamingFit
        ``result[layer, classifier]`` is a fitted Probe; ``fold_probes`` and ``folds`` with ``cv``.

    Raises
    ------
    InvalidArgumentError
        For an unsupported classifier or option, missing or bad labels, a class with too few
        rows, a pass over ``memory_budget``, or a block holding NaN or infinite values (the
        first such row and its layer are named).

    Examples
    --------
    >>> fit = fit_streaming(open_dataset("s3://bucket/acts"), layers="all")  # doctest: +SKIP
    >>> fit[12, "lda"].score(test_ds)                                        # doctest: +SKIP
    """
    return accumulate_statistics(ds, y, layers=layers, classifiers=classifiers, task=task, view=view,
                                 block_rows=block_rows, cv=cv, seed=seed, classifier_kwargs=classifier_kwargs,
                                 memory_budget=memory_budget).finish()


def load_statistics(path: str | os.PathLike[str], ds: Any, y: Any = None) -> StreamingStatistics:
    """Statistics saved by :meth:`StreamingStatistics.save`, for dataset ``ds`` (and the same ``y``).

    Raises
    ------
    InvalidArgumentError
        When the file is not a statistics file, or was made for other data or labels.
    """
    try:
        with np.load(os.fspath(path), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        config = json.loads(arrays.pop("config").tobytes().decode())
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidArgumentError(f"{os.fspath(path)!r} is not a statistics file written by "
                                   f"StreamingStatistics.save ({exc}).") from None
    if config.pop("format", None) != STATS_FORMAT:
        raise InvalidArgumentError(f"{os.fspath(path)!r} is not in the {STATS_FORMAT} format.")
    opts = config["arguments"]
    if y is None and isinstance(opts.get("label_column"), str):
        y = opts["label_column"]
    like = accumulate_statistics(ds, y, rows=np.zeros(0, dtype=np.int64), layers=opts["layers"],
                                 classifiers=opts["classifiers"], task=opts["task"], view=opts["view"],
                                 block_rows=opts["block_rows"], cv=opts["cv"], seed=opts["seed"],
                                 classifier_kwargs=opts["classifier_kwargs"])
    if like.config != config:
        diff = sorted(k for k in config if like.config.get(k) != config[k])
        raise InvalidArgumentError(f"{os.fspath(path)!r} holds statistics of other data or settings "
                                   f"(differing: {diff}); load it with the dataset and labels it was made from.")
    try:
        return like._from_arrays(arrays)
    except (KeyError, IndexError, ValueError) as exc:
        raise InvalidArgumentError(f"{os.fspath(path)!r} is damaged ({exc}).") from None
