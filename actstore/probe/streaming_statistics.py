"""The mergeable statistics of a streaming pass, and the probes fitted from them.

:class:`StreamingStatistics` holds, per layer, fold and class, the :class:`.streaming_stats.Moments`
of the rows it covers (a bit per dataset row says which). Two of them merge exactly when they
were made with the same settings and labels and cover disjoint rows; they travel between
processes as a ``.npz`` of float64 arrays plus a JSON config (no pickle), or through
``torch.distributed``'s all-gather. :meth:`StreamingStatistics.finish` turns them into
:class:`~actstore.Probe` objects.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .layers import request
from .streaming_blocks import blocks
from .streaming_heads import heads
from .streaming_stats import Moments, block_moments, empty

__all__ = ["StreamingFit", "StreamingStatistics", "layer_key"]

FORMAT = "actstore-streaming-statistics/1"


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


def layer_key(L: int | str) -> int | str:
    """A resolved layer as JSON keeps it (``"embeddings"`` by name, blocks as ints)."""
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
        for here, block in blocks(self._ds, rows, self._layers, self.config["view"], self.config["block_rows"]):
            self._fold(here, block)
            del block
        self.covered[rows] = True

    def _fold(self, here: np.ndarray, block: Any) -> None:
        """Add rows ``here``: ``block[j]`` (or ``block[:, j]``) is layer ``j``'s ``(n, d)``."""
        K, F = self.config["n_groups"]
        fourth, d = self.config["fourth"], self.config["dim"]
        fold, code = self._fold_of[here], self._code[here]
        groups = [(f, c, idx) for f in range(F) for c in range(K)
                  if (idx := np.flatnonzero((fold == f) & (code == c))).size]
        for j in range(len(self._layers)):
            layer = block[j] if isinstance(block, list) else block[:, j]
            for f, c, idx in groups:
                X = np.empty((idx.size, d + (self._target is not None)))
                X[:, :d] = layer[idx]  # widened to float64 one class at a time
                if self._target is not None:
                    X[:, d] = self._target[here[idx]]
                m = self._stats[j][f][c]
                ref = (m.ref if m.n else X.mean(0)) if fourth else None
                m.merge(block_moments(X, ref, overwrite=True))
                del X

    def update(self, data: Any) -> StreamingStatistics:
        """Add the rows of a row-mode stream (or of one of its batches), in any order; returns self.

        This is how a training loop's stream feeds a probe batch-wise: the statistics do not
        depend on the order rows arrive in, so a shuffled, rank-split
        ``actstore.stream(ds, tokens=False)`` gives the same probes as the one pass of
        :func:`~actstore.probe.streaming.fit_streaming` (up to float64 rounding).

        Parameters
        ----------
        data : Stream or dict
            A :class:`~actstore.loader.Stream` over the same dataset and view as these
            statistics (every one of their layers among its layers), or one batch of such a
            stream (``{"row": ..., "layer_<L>": ...}``, numpy arrays or torch tensors).

        Raises
        ------
        InvalidArgumentError
            For a stream over other data, in token mode, or without a layer of these
            statistics; a batch naming a row already added (for instance a rank's padding
            when ``world_size`` does not divide the rows: use ``drop_last=True`` and
            ``finish(allow_partial=True)``), out-of-range rows, or NaN/infinite values.

        Examples
        --------
        >>> stats = accumulate_statistics(ds, layers=[3], rows=[])             # doctest: +SKIP
        >>> stats.update(actstore.stream(ds, layers=[3], batch_size=512, seed=0))  # doctest: +SKIP
        >>> probe = stats.finish()[3, "ridge"]                                 # doctest: +SKIP
        """
        from ..loader import Stream

        if isinstance(data, Stream):
            self._check_stream(data)
            for batch in data:
                self._add_batch(batch)
        else:
            self._add_batch(data)
        return self

    def _check_stream(self, s: Any) -> None:
        from ..format.locations import view_layout
        from ..loader.samples import RowSpace, fingerprint

        view = view_layout(self._ds, self.config["view"]).name
        if s.tokens or s.fingerprint != fingerprint(self._ds, RowSpace(self._ds), view):
            raise InvalidArgumentError(
                "The stream reads other samples than these statistics' rows (another dataset, "
                "row selection or view" + (", or token mode" if s.tokens else "") + "); make it "
                f"with actstore.stream(ds, tokens=False, view={self.config['view']!r}) over the "
                "dataset the statistics were made from."
            )

    def _add_batch(self, batch: Any) -> None:
        if not isinstance(batch, Mapping) or "row" not in batch:
            raise InvalidArgumentError(
                f"update() takes a stream or one of its batches (a dict with 'row' and 'layer_<L>' "
                f"keys); got {type(batch).__name__}."
            )
        rows = _host(batch["row"]).astype(np.int64, copy=False).reshape(-1)
        n, d = self.covered.size, self.config["dim"]
        if rows.size == 0:
            return
        if rows.min() < 0 or rows.max() >= n:
            raise InvalidArgumentError(
                f"The batch names row {int(rows.max() if rows.max() >= n else rows.min())}; the dataset "
                f"has rows 0..{n - 1}. Stream the dataset the statistics were made from."
            )
        seen = self.covered[rows]
        if seen.any() or np.unique(rows).size != rows.size:
            r = int(rows[np.argmax(seen)]) if seen.any() else int(rows[np.argmax(np.bincount(rows))])
            raise InvalidArgumentError(
                f"Row {r} was already added; each row is counted once (a rank's padding repeats "
                "rows when world_size does not divide them: stream with drop_last=True and "
                "finish(allow_partial=True), or add each epoch to fresh statistics)."
            )
        layers = []
        for L in self._layers:
            key = f"layer_{request(L)}"
            if key not in batch:
                raise InvalidArgumentError(
                    f"The batch has no {key!r} (keys {sorted(batch)}); stream every layer of these "
                    f"statistics: layers={[request(x) for x in self._layers]}."
                )
            X = _host(batch[key])
            if X.shape != (rows.size, d):
                raise InvalidArgumentError(f"The batch's {key!r} has shape {X.shape}; expected ({rows.size}, {d}).")
            X = X.astype(np.float32, copy=False)
            finite = np.isfinite(X).all(axis=1)
            if not finite.all():
                raise InvalidArgumentError(
                    f"Row {int(rows[np.argmin(finite)])} holds NaN or infinite activations (layer "
                    f"{request(L)}); probes need finite values: drop or repair that row."
                )
            layers.append(X)
        self._fold(rows, layers)
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

        Works with any backend that gathers float64 CPU tensors (``gloo``). One group (layer,
        fold, class) is gathered at a time, so the extra memory is ``world_size`` groups, not
        ``world_size`` copies of the statistics.
        """
        import torch
        import torch.distributed as dist

        world = dist.get_world_size(group)

        def gather(a: np.ndarray) -> list[np.ndarray]:
            mine = torch.from_numpy(np.ascontiguousarray(a))
            parts = [torch.empty_like(mine) for _ in range(world)]
            dist.all_gather(parts, mine, group=group)
            return [p.numpy() for p in parts]

        digest = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).digest()
        if any(d.tobytes() != digest for d in gather(np.frombuffer(digest, dtype=np.uint8).copy())):
            raise InvalidArgumentError(
                "The ranks' statistics were made with different settings or labels; every rank "
                "must call accumulate_statistics with the same arguments (only rows differ)."
            )
        covered = gather(self.covered.astype(np.uint8))
        both = np.sum(covered, axis=0) > 1
        if both.any():
            raise InvalidArgumentError(
                f"Several ranks hold row {int(np.argmax(both))}; ranks must cover disjoint rows "
                "(rank=/world_size=, or non-overlapping rows=)."
            )
        for per_fold in self._stats:
            for groups in per_fold:
                for c, m in enumerate(groups):
                    merged = empty(m.mean.size, m.fourth)
                    for flat in gather(_flatten(m)):
                        merged.merge(_unflatten(flat, m.mean.size, m.fourth))
                    groups[c] = merged
        self.covered = np.logical_or.reduce(covered, axis=0).astype(bool)
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

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics to ``path`` (a ``.npz`` of float64 arrays and a JSON config;
        read back with :meth:`load`, no pickle)."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        config = np.frombuffer(json.dumps({"format": FORMAT, **self.config}).encode(), dtype=np.uint8)
        with open(tmp, "wb") as f:
            np.savez(f, config=config, **self._arrays())
        os.replace(tmp, path)

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


def _host(x: Any) -> np.ndarray:
    """A batch entry (numpy array or torch tensor, bfloat16 included) as a numpy array."""
    if isinstance(x, np.ndarray):
        return x.astype(np.float32) if x.dtype.kind == "V" or x.dtype.name == "bfloat16" else x
    if hasattr(x, "detach"):  # a torch tensor: numpy has no bfloat16, widen it
        t = x.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    return np.asarray(x)


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


def _flatten(m: Moments) -> np.ndarray:
    """One group's statistics as one float64 vector (count, mean, scatter[, ref, A21, A22])."""
    parts = [np.array([float(m.n)]), m.mean, m.M.ravel()]
    if m.fourth:
        assert m.ref is not None and m.A21 is not None and m.A22 is not None
        parts += [m.ref, m.A21.ravel(), m.A22.ravel()]
    return np.concatenate(parts)


def _unflatten(flat: np.ndarray, d: int, fourth: bool) -> Moments:
    sq = d * d
    m = Moments(int(flat[0]), flat[1 : 1 + d].copy(), flat[1 + d : 1 + d + sq].reshape(d, d).copy())
    if fourth:
        at = 1 + d + sq
        m.ref = flat[at : at + d].copy()
        m.A21 = flat[at + d : at + d + sq].reshape(d, d).copy()
        m.A22 = flat[at + d + sq : at + d + 2 * sq].reshape(d, d).copy()
    return m
