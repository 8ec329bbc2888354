"""Layer sweeps and repeated cross-validation over stored activations.

Each layer is read once; its folds share the array. Folds split by prompt (row), or by a
``groups`` column so related prompts never straddle train and validation. The best layer is
chosen on the validation folds only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from numpy.typing import ArrayLike
from threadpoolctl import threadpool_limits

from ..errors import InvalidArgumentError
from .classifiers import ClassifierSpec
from .data import FeatureSource, LabelSource, is_dataset, labels_for, load_features, stored_layers
from .estimator import Probe, check_sample_weight, check_targets
from .folds import _groups, make_folds, sweep_spec
from .layers import LayerSpec, request, resolve_layers, stored
from .metrics import main_metric

__all__ = ["BestLayer", "SweepResult", "best_layer_value", "cross_validate", "make_folds", "sweep_layers", "sweep_spec"]


def layers_keyword(func: str, layers: LayerSpec, layer: LayerSpec | None, default: LayerSpec = -1) -> LayerSpec:
    """``layers=`` is the keyword everywhere; the old ``layer=`` still works, with a warning.

    Raises
    ------
    InvalidArgumentError
        Both were given (with a ``layers`` other than the default).
    """
    if layer is None:
        return layers
    if not (type(layers) is type(default) and layers == default):
        raise InvalidArgumentError(
            f"{func}() got both layers={layers!r} and layer={layer!r}; pass only layers= "
            "(layer= is the old name of the same argument)."
        )
    import warnings

    warnings.warn(f"{func}(layer=...) is deprecated; pass layers=... (the same value) instead.",
                  DeprecationWarning, stacklevel=3)
    return layer


# Below this many feature values per fit, the Python overhead of a fit dominates and threads
# fight over the GIL: 4 layers at 1,000 x 128 took 0.24 s with 2 threads, 0.16 s with one;
# the two cross at about 2,000 x 384, and at 5,000 x 768 two threads are 1.7x faster.
_PARALLEL_MIN_VALUES = 1_000_000


def _jobs(n_jobs: int | None, n_rows: int, n_features: int) -> int:
    """``n_jobs`` if given, else all cores for large fits and one thread for small ones."""
    if n_jobs is not None:
        return n_jobs
    return -1 if n_rows * n_features >= _PARALLEL_MIN_VALUES else 1


def _dim(data: FeatureSource) -> int:
    return int(data.info.dim) if is_dataset(data) else int(np.asarray(data).shape[-1])


def _fit_folds(X: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
               params: dict[str, Any], layer: int | str, seed: int,
               weights: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Fit and evaluate one probe per fold on ``X`` ``(n, 1, dim)``, read and checked once."""
    rows = []
    for k, (tr, va) in enumerate(folds):
        probe = Probe(layers=0, **{**params, "random_state": seed})._fit_checked(
            X[tr], y[tr], None if weights is None else weights[tr])
        rows.append({"layer": layer, "seed": seed, "fold": k, **probe._evaluate_checked(X[va], y[va])})
    return rows


_TOKEN_PARAMS = ("train_pooling", "inference_pooling")


def _token_pooled(params: dict[str, Any]) -> bool:
    """Whether the probe parameters pool tokens (then folds go through the public fit)."""
    return any(params.get(k) is not None for k in _TOKEN_PARAMS)


def _fit_token_folds(data: FeatureSource, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                     params: dict[str, Any], layers: list[int | str], seed: int,
                     weights: np.ndarray | None) -> list[dict[str, Any]]:
    """Folds of a token-pooled probe: fitted on the training rows' tokens and evaluated on
    the validation rows with its inference pooling (``Probe.fit``/``evaluate`` on
    ``data.select``), so a row's tokens are always in one fold. Tokens are read per fold."""
    from .tokens import require_full_sequence

    ds = require_full_sequence(data, "train_pooling / inference_pooling")
    rows = []
    for k, (tr, va) in enumerate(folds):
        probe = Probe(layers=list(layers), **{**params, "random_state": seed})
        probe.fit(ds.select(tr), y[tr], sample_weight=None if weights is None else weights[tr])
        ev = probe.evaluate(ds.select(va), y[va])
        rows.append({"fold": k, **{m: v for m, v in ev.items() if m not in ("n_eval", "eval_hash")}})
    return rows


_LOWER_IS_BETTER = ("mse", "mae")


class _CallableLayer:
    """What makes a :data:`BestLayer` callable: ``best_layer(test, y)`` scores on ``test``."""

    _on: Any

    def __call__(self, data: FeatureSource, y: LabelSource = None, *, metric: str | None = None) -> int | str:
        """The layer whose kept probe scores best on ``data`` (:meth:`SweepResult.best_layer_on`)."""
        return self._on(data, y, metric=metric)  # type: ignore[no-any-return]

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        # copies and pickles are the plain layer: a Probe(layers=sweep.best_layer) that is
        # cloned or saved must not carry the sweep (and all its probes) along
        return (self._plain, (self._plain(self),))  # type: ignore[attr-defined]

    def __deepcopy__(self, memo: dict[int, Any]) -> int | str:
        return self._plain(self)  # type: ignore[attr-defined,no-any-return]

    def __copy__(self) -> int | str:
        return self._plain(self)  # type: ignore[attr-defined,no-any-return]


class _BestBlock(_CallableLayer, int):
    _plain = int


class _BestName(_CallableLayer, str):
    _plain = str


#: ``SweepResult.best_layer``: the layer (an ``int`` block number or ``"embeddings"``) that
#: is also callable as lmprobe's ``best_layer(test, y)``.
BestLayer = Union[_BestBlock, _BestName]  # noqa: UP007 (a runtime alias)


def best_layer_value(layer: int | str, on: Any) -> BestLayer:
    """``layer`` as a :data:`BestLayer` whose call is ``on(data, y, metric=...)``.

    Examples
    --------
    >>> best = best_layer_value(6, lambda data, y, metric=None: 5)
    >>> best == 6, best("test data")
    (True, 5)
    """
    out: BestLayer = _BestName(layer) if isinstance(layer, str) else _BestBlock(layer)
    out._on = on
    return out


@dataclass
class SweepResult:
    """Per-fold metrics of a sweep, with a per-layer summary and the best layer.

    ``results`` holds one row per (layer, fold); its ``layer`` column holds block numbers
    and ``"embeddings"`` for the embedding output (never lmprobe's stored ``-1``).
    ``chance`` is the score of a constant guess (the majority class share for
    classification, 0 for R²); ``cv``, ``model`` and ``view`` label plots and reprs.
    """

    results: pd.DataFrame
    metric: str
    chance: float | None = None
    cv: int | None = None
    model: str | None = None
    view: str | None = None
    probes: dict[int | str, Probe] | None = None  # keep_probes=True: one refit per layer

    def __getitem__(self, layer: int | str) -> Probe:
        """The probe of ``layer``, refitted on every row (``keep_probes=True``)."""
        probes = self._probes()
        if layer not in probes:
            raise KeyError(f"no probe for layer {layer!r}; this sweep holds {list(probes)}")
        return probes[layer]

    def _probes(self) -> dict[int | str, Probe]:
        if self.probes is None:
            raise InvalidArgumentError("this sweep kept no fitted probes; run sweep_layers(..., "
                                       "keep_probes=True) to score or predict on new data.")
        return self.probes

    def score(self, data: FeatureSource, y: LabelSource = None, *,
              metric: str | None = None) -> dict[int | str, float]:
        """Each layer's kept probe scored on new data, by layer: ``metric`` (a key of
        :meth:`Probe.evaluate`, e.g. ``"auroc"``; default accuracy or R²)."""
        if metric is None:
            return {L: p.score(data, y) for L, p in self._probes().items()}
        out = {}
        for L, p in self._probes().items():
            got = p.evaluate(data, y)
            if metric not in got or isinstance(got[metric], str):
                raise InvalidArgumentError(f"metric must be one of the numbers evaluate() returns "
                                           f"({[k for k, v in got.items() if not isinstance(v, str)]}); "
                                           f"got {metric!r}.")
            out[L] = float(got[metric])
        return out

    def predict(self, data: FeatureSource) -> dict[int | str, np.ndarray]:
        """Each layer's refitted probe's predictions on new data, by layer."""
        return {L: p.predict(data) for L, p in self._probes().items()}

    def best_layer_on(self, data: FeatureSource, y: LabelSource = None, *,
                      metric: str | None = None) -> int | str:
        """The layer whose kept probe scores best on ``data`` (the same as calling
        ``sweep.best_layer(data, y)``, which is lmprobe's ``best_layer(test)``).

        Every kept probe (``keep_probes=True``: refitted on all the sweep's rows) is scored
        on ``data`` by ``metric`` (default the sweep's: accuracy or R²; ``"mse"`` and
        ``"mae"`` count lower as better); ties go to the shallower layer. Choosing a layer on
        test data and reporting its test score overstates it: report :attr:`best_layer`, the
        cross-validated choice, or score the chosen layer on data not used to choose it.
        """
        scores = self.score(data, y, metric=metric)
        sign = -1.0 if metric in _LOWER_IS_BETTER else 1.0
        return max(scores, key=lambda L: (sign * scores[L], -stored(L)))

    def to_frame(self) -> pd.DataFrame:
        """Mean and standard deviation of every metric per layer, in numeric layer order
        (the embeddings, named ``"embeddings"``, first)."""
        metrics = [c for c in self.results.columns if c not in ("layer", "seed", "fold", "n")]
        # group on the stored number: it orders "embeddings" (-1) before block 0
        g = self.results.assign(layer=self.results["layer"].map(stored)).groupby("layer")[metrics]
        out = g.mean().add_suffix("_mean").join(g.std(ddof=0).add_suffix("_std")).reset_index()
        return out.assign(layer=out["layer"].map(request))

    @property
    def best_layer(self) -> BestLayer:
        """Layer with the best mean validation score (ties: the shallower layer);
        ``"embeddings"`` for the embedding output.

        The value is the layer itself (an ``int``, or the ``str`` ``"embeddings"``), and it
        can be called as lmprobe's ``best_layer(test)``: ``sweep.best_layer(test_ds, y)``
        scores every kept probe on ``test_ds`` and returns the best layer there
        (:meth:`best_layer_on`; ``keep_probes=True`` needed).

        Examples
        --------
        >>> sweep.best_layer                   # the cross-validated choice  # doctest: +SKIP
        6
        >>> sweep.best_layer(test, "label")    # chosen on test, lmprobe's  # doctest: +SKIP
        5
        """
        summary = self.to_frame()
        best = summary.loc[summary[f"{self.metric}_mean"].idxmax(), "layer"]
        return best_layer_value(best if isinstance(best, str) else int(best), self.best_layer_on)

    def __repr__(self) -> str:
        from .results import sweep_text

        return sweep_text(self)

    def _repr_html_(self) -> str:
        from .results import sweep_html

        return sweep_html(self)

    def plot(self, path: str, title: str | None = None) -> str:
        """Write a PNG of the metric per layer (±1 std, clipped to the metric's range), with
        the chance level; returns the path."""
        from .plot import plot_layers

        return plot_layers({None: self}, path, title=title)


def sweep_layers(
    data: FeatureSource,
    y: LabelSource = None,
    *,
    layers: LayerSpec = "all",
    cv: int = 5,
    groups: str | ArrayLike | None = None,
    classifier: ClassifierSpec = None,
    task: str = "classification",
    view: str | None = None,
    seed: int = 0,
    n_jobs: int | None = None,
    progress: bool = False,
    sample_weight: ArrayLike | None = None,
    keep_probes: bool = False,
    **probe_kwargs: Any,
) -> SweepResult:
    """Fit one probe per layer with k-fold cross-validation.

    Parameters
    ----------
    data : Dataset or array (n, n_layers, dim)
    y : str, array or None
        Label column name, labels, or None for the dataset's labels.
    layers : layer spec
        Which layers to sweep (default all stored).
    cv : int
        Number of folds.
    groups : str or array, optional
        Rows with the same group value stay in the same fold.
    n_jobs : int, optional
        Layers fitted in parallel (threads, one BLAS thread each); default: every CPU core
        when a layer holds at least a million values (rows x dim), else one (small fits are
        Python-bound and threads only contend for the GIL).
    progress : bool
        Show a bar of the layers done.
    sample_weight : array, optional
        One weight per row, used in every fold's fit (the metrics stay unweighted).
    keep_probes : bool
        Also refit each layer's probe on every row and keep it (``sweep[layer]``,
        ``sweep.score(test)``, ``sweep.predict(test)``, and ``sweep.best_layer(test, y)``:
        the layer whose kept probe scores best on ``test``, lmprobe's ``best_layer(test)``).

    Notes
    -----
    Layer specs also take lmprobe's sweep grammar: ``"sweep"`` (every stored layer),
    ``"sweep:N"`` (every N-th block from block 0), ``"sweep:START-END"`` (blocks START to
    END inclusive, those stored).

    Examples
    --------
    >>> sweep = sweep_layers(ds, y="label", cv=5)      # doctest: +SKIP
    >>> sweep.best_layer, sweep.to_frame()             # doctest: +SKIP
    """
    chosen = resolve_layers(sweep_spec(layers, stored_layers(data)), stored_layers(data))
    n = len(data) if is_dataset(data) else np.asarray(data).shape[0]
    yv = labels_for(data, y, n)
    check_targets(yv, task)
    folds = make_folds(yv, cv, task, seed, _groups(data, groups))
    kept: dict[int | str, Probe] = {}
    params = {"classifier": classifier, "task": task, **probe_kwargs}
    weights = check_sample_weight(sample_weight, n)

    bar = _bar(len(chosen), progress)

    def one(layer: int) -> list[dict[str, Any]]:
        if _token_pooled(params):  # each fold reads its rows' tokens
            rows = [{"layer": request(layer), "seed": seed, **r}
                    for r in _fit_token_folds(data, yv, folds, params, [layer], seed, weights)]
            if keep_probes:
                probe = Probe(layers=request(layer), **{**params, "random_state": seed})
                kept[request(layer)] = probe.fit(data, yv, sample_weight=weights)
            if bar is not None:
                bar.update(1)
            return rows
        X, _ = load_features(data, [layer], view)  # read and checked once; the folds share it
        rows = _fit_folds(X, yv, folds, params, request(layer), seed, weights)  # rows name the embeddings
        if keep_probes:  # the same read: refit on every row, named by the real layer
            probe = Probe(layers=request(layer), **{**params, "random_state": seed})
            kept[request(layer)] = probe.fit(X, yv, layers=[request(layer)], sample_weight=weights)
        if bar is not None:
            bar.update(1)
        return rows

    # Many small fits: one BLAS thread per fit and fits in parallel beats threaded BLAS inside
    # each fit (measured 5x faster per logistic-regression fit on 2 cores at 4,000 x 768).
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            jobs = Parallel(n_jobs=_jobs(n_jobs, n, _dim(data)), prefer="threads")(delayed(one)(L) for L in chosen)
    finally:
        if bar is not None:
            bar.close()
    frame = pd.DataFrame([row for rows in jobs for row in rows])
    metric = main_metric(task)
    chance = 0.0 if task == "regression" else float(np.unique(yv, return_counts=True)[1].max() / len(yv))
    model = str(data.info.model) if is_dataset(data) else None
    shown = (view or data.info.views[0]) if is_dataset(data) else None
    probes = {request(L): kept[request(L)] for L in chosen} if keep_probes else None
    return SweepResult(frame, metric, chance=chance, cv=cv,
                       model=model or None, view=shown, probes=probes)


def _bar(total: int, enabled: bool) -> Any:  # a tqdm bar (tqdm is optional)
    if not enabled:
        return None
    from ..errors import require

    tqdm = require("tqdm.auto", "extract")
    return tqdm.tqdm(total=total, unit="layer", desc="sweep")  # type: ignore[attr-defined]


def cross_validate(
    data: FeatureSource,
    y: LabelSource = None,
    *,
    layers: LayerSpec = -1,
    cv: int = 5,
    seeds: Iterable[int] = range(5),
    groups: str | ArrayLike | None = None,
    view: str | None = None,
    sample_weight: ArrayLike | None = None,
    **probe_params: Any,
) -> pd.DataFrame:
    """Repeat k-fold cross-validation over several seeds (new folds and probe seed each time).

    Returns one row per (seed, fold) with every metric, as the aligned-probing study reports.
    ``layer=`` is a deprecated alias of ``layers=``.

    Examples
    --------
    >>> import actstore
    >>> ds = actstore.open_dataset("acts/minilm")               # doctest: +SKIP
    >>> table = actstore.cross_validate(ds, "label", layers=3, cv=5, seeds=range(3))  # doctest: +SKIP
    >>> table["accuracy"].mean()                                # doctest: +SKIP
    """
    layers = layers_keyword("cross_validate", layers, probe_params.pop("layer", None))
    if _token_pooled(probe_params):
        return _cross_validate_tokens(data, y, layers, cv, seeds, groups, sample_weight, probe_params)
    X, chosen = load_features(data, layers, view)
    yv = labels_for(data, y, X.shape[0])
    task = probe_params.get("task", "classification")
    check_targets(yv, task)
    g = _groups(data, groups)
    jobs = [(seed, k, tr, va) for seed in seeds for k, (tr, va) in enumerate(make_folds(yv, cv, task, seed, g))]
    weights = check_sample_weight(sample_weight, len(yv))

    def one(seed: int, k: int, tr: np.ndarray, va: np.ndarray) -> dict[str, Any]:
        # X was read and checked finite once; the folds fit on its layers by position
        probe = Probe(layers=list(range(len(chosen))), **{**probe_params, "random_state": seed})
        probe._fit_checked(X[tr], yv[tr], None if weights is None else weights[tr])
        return {"layers": ",".join(str(request(L)) for L in chosen), "seed": seed, "fold": k,
                **probe._evaluate_checked(X[va], yv[va])}

    with threadpool_limits(limits=1, user_api="blas"):  # see sweep_layers
        rows = Parallel(n_jobs=_jobs(None, *X.shape[:1], X.shape[1] * X.shape[2]), prefer="threads")(
            delayed(one)(*job) for job in jobs)
    return pd.DataFrame(rows)


def _cross_validate_tokens(data: FeatureSource, y: LabelSource, layers: LayerSpec, cv: int,
                           seeds: Iterable[int], groups: str | ArrayLike | None,
                           sample_weight: ArrayLike | None, params: dict[str, Any]) -> pd.DataFrame:
    """:func:`cross_validate` of a token-pooled probe: folds split rows, never a row's tokens."""
    from .tokens import require_full_sequence

    ds = require_full_sequence(data, "train_pooling / inference_pooling")
    chosen = resolve_layers(layers, stored_layers(ds), where="the dataset")
    yv = labels_for(ds, y, len(ds))
    task = params.get("task", "classification")
    check_targets(yv, task)
    g = _groups(ds, groups)
    weights = check_sample_weight(sample_weight, len(yv))
    out = []
    for seed in seeds:
        folds = make_folds(yv, cv, task, seed, g)
        for row in _fit_token_folds(ds, yv, folds, params, list(chosen), seed, weights):
            out.append({"layers": ",".join(str(request(L)) for L in chosen), "seed": seed, **row})
    return pd.DataFrame(out)
