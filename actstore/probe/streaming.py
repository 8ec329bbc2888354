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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .layers import LayerSpec, request, resolve_layers
from .streaming_blocks import blocks, check_memory, memory_needed
from .streaming_heads import heads
from .streaming_stats import Moments, block_moments, empty

__all__ = ["StreamingFit", "StreamingStatistics", "accumulate_statistics", "fit_streaming"]

STREAMING_CLASSIFIERS = ("ridge", "lda", "mass_mean", "logistic_regression")
_ONE_PASS = ("ridge", "lda", "mass_mean")
_KWARGS = {"ridge": {"alpha"}, "lda": set(), "mass_mean": set(), "logistic_regression": {"C", "tol", "max_iter"}}
_FORMAT = "actstore-streaming-statistics/1"


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


def _layer_key(L: int | str) -> int | str:
    return L if isinstance(L, str) else int(L)


class StreamingStatistics:
    """Mergeable sufficient statistics of a streaming pass over some of a dataset's rows.

    Made by :func:`accumulate_statistics`; statistics of disjoint row ranges (one per worker)
    combine exactly with :meth:`merge` or ``+``, and :meth:`finish` fits the probes.

    Attributes
    ----------
    covered : ndarray of bool
        Which rows of the dataset these statistics hold.
    config : dict
        What every worker must agree on (layers, classifiers, labels' digest, folds, ...);
        statistics with different configs refuse to merge.
    """

    def __init__(self, ds: Any, y: Any, config: dict[str, Any], chosen: list[int | str], code: np.ndarray,
                 target: np.ndarray | None, fold_of: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                 classes: np.ndarray | None) -> None:
        self._ds, self._y, self.config, self._layers = ds, y, config, chosen
        self._code, self._target, self._fold_of, self.folds, self.classes = code, target, fold_of, folds, classes
        self.covered = np.zeros(code.size, dtype=bool)
        K, F = config["n_groups"]
        width = config["dim"] + (1 if target is not None else 0)
        self._stats = [[[empty(width, config["fourth"]) for _ in range(K)] for _ in range(F)] for _ in chosen]

    # -- accumulating -------------------------------------------------------------------
    def _accumulate(self, rows: np.ndarray) -> None:
        K, F = self.config["n_groups"]
        fourth, d = self.config["fourth"], self.config["dim"]
        for here, block in blocks(self._ds, rows, self._layers, self.config["view"], self.config["block_rows"]):
            fold, code = self._fold_of[here], self._code[here]
            groups = [(f, c, idx) for f in range(F) for c in range(K)
                      if (idx := np.flatnonzero((fold == f) & (code == c))).size]
            for j in range(len(self._layers)):
                for f, c, idx in groups:
                    X = np.empty((idx.size, d + (self._target is not None)))
                    X[:, :d] = block[idx, j]  # widened to float64 one class at a time
                    if self._target is not None:
                        X[:, d] = self._target[here[idx]]
                    m = self._stats[j][f][c]
                    ref = (m.ref if m.n else X.mean(0)) if fourth else None
                    m.merge(block_moments(X, ref, overwrite=True))
                    del X
            del block
        self.covered[rows] = True

    # -- combining ----------------------------------------------------------------------
    def merge(self, other: StreamingStatistics) -> StreamingStatistics:
        """Add ``other``'s rows (a disjoint set) to these statistics, in place; returns self.

        Raises
        ------
        InvalidArgumentError
            When the two were made with different settings, labels or datasets, or share rows
            (counting a row twice would silently bias the fit).
        """
        if not isinstance(other, StreamingStatistics):
            raise InvalidArgumentError(f"Only StreamingStatistics merge; got {type(other).__name__}.")
        diff = sorted(k for k in set(self.config) | set(other.config) if self.config.get(k) != other.config.get(k))
        if diff:
            raise InvalidArgumentError(
                f"These statistics differ in {diff} ({[self.config.get(k) for k in diff]} vs "
                f"{[other.config.get(k) for k in diff]}); every worker must call "
                "accumulate_statistics with the same dataset, labels and settings (only rows= differ)."
            )
        both = self.covered & other.covered
        if both.any():
            raise InvalidArgumentError(
                f"Both statistics hold row {int(np.argmax(both))} ({int(both.sum())} shared rows); "
                "workers must cover disjoint rows (rank=/world_size=, or non-overlapping rows=)."
            )
        for mine, theirs in zip(self._stats, other._stats):
            for fm, ft in zip(mine, theirs):
                for a, b in zip(fm, ft):
                    a.merge(b)
        self.covered |= other.covered
        return self

    def __iadd__(self, other: StreamingStatistics) -> StreamingStatistics:
        return self.merge(other)

    def __add__(self, other: StreamingStatistics) -> StreamingStatistics:
        out = self._like()
        out.merge(self)
        return out.merge(other)

    def _like(self) -> StreamingStatistics:
        return StreamingStatistics(self._ds, self._y, self.config, self._layers, self._code, self._target,
                                   self._fold_of, self.folds, self.classes)

    def all_reduce(self, group: Any = None) -> StreamingStatistics:
        """Combine every ``torch.distributed`` rank's statistics, in place (each rank ends
        with the same merged statistics, merged in rank order); returns self.

        Works with any backend that gathers float64 CPU tensors (``gloo``).
        """
        import torch
        import torch.distributed as dist

        world = dist.get_world_size(group)
        digest = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).digest()
        mine = torch.frombuffer(bytearray(digest), dtype=torch.uint8)
        seen = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(seen, mine, group=group)
        if any(not torch.equal(s, mine) for s in seen):
            raise InvalidArgumentError(
                "The ranks' statistics were made with different settings or labels; every rank "
                "must call accumulate_statistics with the same arguments (only rows differ)."
            )
        flat = torch.from_numpy(np.concatenate([a.ravel() for a in self._arrays().values()]))
        parts = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(parts, flat, group=group)
        merged = self._like()
        for part in parts:
            merged.merge(self._from_flat(part.numpy()))
        self.covered, self._stats = merged.covered, merged._stats
        return self

    # -- saving (no pickle) -------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"covered": self.covered.astype(np.float64)}
        for j, per_fold in enumerate(self._stats):
            flat = [m for groups in per_fold for m in groups]
            out[f"{j}.n"] = np.array([m.n for m in flat], dtype=np.float64)
            out[f"{j}.mean"] = np.stack([m.mean for m in flat])
            out[f"{j}.M"] = np.stack([m.M for m in flat])
            if self.config["fourth"]:
                out[f"{j}.ref"] = np.stack([m.ref for m in flat])  # type: ignore[misc]
                out[f"{j}.A21"] = np.stack([m.A21 for m in flat])  # type: ignore[misc]
                out[f"{j}.A22"] = np.stack([m.A22 for m in flat])  # type: ignore[misc]
        return out

    def _from_arrays(self, arrays: Mapping[str, np.ndarray]) -> StreamingStatistics:
        out = self._like()
        K, _ = self.config["n_groups"]
        out.covered = np.asarray(arrays["covered"]) > 0.5
        for j, per_fold in enumerate(out._stats):
            for f, groups in enumerate(per_fold):
                for c, m in enumerate(groups):
                    i = f * K + c
                    m.n, m.mean, m.M = int(arrays[f"{j}.n"][i]), arrays[f"{j}.mean"][i].copy(), arrays[f"{j}.M"][i].copy()
                    if self.config["fourth"]:
                        m.ref, m.A21, m.A22 = (arrays[f"{j}.{k}"][i].copy() for k in ("ref", "A21", "A22"))
        return out

    def _from_flat(self, flat: np.ndarray) -> StreamingStatistics:
        arrays, at = {}, 0
        for key, a in self._arrays().items():
            arrays[key] = flat[at : at + a.size].reshape(a.shape)
            at += a.size
        return self._from_arrays(arrays)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics to ``path`` (a ``.npz`` of float64 arrays and a JSON config;
        read back with :meth:`load`, no pickle)."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        config = np.frombuffer(json.dumps({"format": _FORMAT, **self.config}).encode(), dtype=np.uint8)
        with open(tmp, "wb") as f:
            np.savez(f, config=config, **self._arrays())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], ds: Any, y: Any = None) -> StreamingStatistics:
        """Statistics saved by :meth:`save`, for dataset ``ds`` (and the same ``y``).

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
        if config.pop("format", None) != _FORMAT:
            raise InvalidArgumentError(f"{os.fspath(path)!r} is not in the {_FORMAT} format.")
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

    # -- fitting ------------------------------------------------------------------------
    def finish(self, *, allow_partial: bool = False) -> StreamingFit:
        """Fit every layer's probes from the statistics (logistic regression streams the
        covered rows again).

        Parameters
        ----------
        allow_partial : bool
            Fit on the covered rows even when they are not all of the dataset's rows (without
            ``cv``); by default statistics that miss rows are refused, since a forgotten
            worker's share would otherwise go unnoticed.
        """
        if not self.covered.all():
            missing = np.flatnonzero(~self.covered)
            if not allow_partial or self.config["arguments"]["cv"] is not None:
                raise InvalidArgumentError(
                    f"These statistics cover {int(self.covered.sum())} of {self.covered.size} rows (row "
                    f"{int(missing[0])} and {missing.size - 1} more missing); merge every worker's "
                    "statistics first" + ("." if self.config["arguments"]["cv"] is not None else
                                          ", or finish(allow_partial=True) to fit on these rows only.")
                )
        args = self.config["arguments"]
        names, task, kw = args["classifiers"], args["task"], args["classifier_kwargs"] or {}
        result = StreamingFit(probes={}, folds=self.folds)
        F = len(self.folds)
        for j, L in enumerate(self._layers):
            for k in [None, *range(F)]:
                train = _merge_folds(self._stats[j], skip=k)
                if any(g.n == 0 for g in train):
                    where = "The data" if k is None else f"The training set of fold {k}"
                    raise InvalidArgumentError(
                        f"{where} lacks a class (of {self.classes}); every class needs rows in every "
                        "training set. Use fewer folds or drop the rare class."
                    )
                fitted = heads(train, names, task, kw)
                if "logistic_regression" in names:
                    fitted["logistic_regression"] = self._logistic(L, k, train, kw.get("logistic_regression", {}))
                for c in names:
                    probe = _make_probe(self._ds, self._y, args["view"], L, c, task, kw.get(c), *fitted[c],
                                        self.classes, self.config["dim"])
                    if k is None:
                        result.probes[request(L), c] = probe
                    else:
                        result.fold_probes.setdefault((request(L), c), []).append(probe)
        return result

    def _logistic(self, layer: int | str, skip: int | None, train: list[Moments],
                  opts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        from .streaming_logistic import fit_logistic

        keep = self.covered if skip is None else self.covered & (self._fold_of != skip)
        rows = np.flatnonzero(keep)
        view, block_rows = self.config["view"], self.config["block_rows"]

        def stream() -> Any:
            return ((r, X[:, 0]) for r, X in blocks(self._ds, rows, [layer], view, block_rows))

        return fit_logistic(stream, self._code, train, opts, layer)


def _merge_folds(per_fold: list[list[Moments]], *, skip: int | None) -> list[Moments]:
    """Per class, the statistics of every fold but ``skip`` (all folds for None), merged."""
    if skip is None and len(per_fold) == 1:
        return per_fold[0]  # read only from here on: no d x d copies at the memory peak
    out = []
    for c in range(len(per_fold[0])):
        m = empty(per_fold[0][c].mean.size, per_fold[0][c].fourth)
        for f, groups in enumerate(per_fold):
            if f != skip:
                m.merge(groups[c])
        out.append(m)
    return out

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
        from .sweep import make_folds

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
        "arguments": {"layers": [_layer_key(L) for L in chosen], "classifiers": names, "task": task,
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
