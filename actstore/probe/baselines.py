"""Baselines a probe must beat, on stored activations and the dataset's own texts.

A probe's accuracy means little alone: a bag of words may do as well (the property is in the
surface text), a random direction or a few principal components may do as well (the
classifier, not the layer, does the work), and a probe trained on shuffled labels shows what
the probe can fit by itself. :func:`baselines` runs them all with the probe's own
cross-validation folds and metrics, and returns one table.

The names follow lmprobe 0.10.3's battery (``bow``, ``tfidf``, ``random``, ``majority``,
``sentence_length``, ``random_direction``, ``pca``, ``layer_0``), so an lmprobe user finds
them; ``shuffled_labels`` (the control of Hewitt & Liang's selectivity) and ``probe`` (the
probe itself, for comparison) are added. Nothing needs the model: text baselines read
``ds.texts``, activation baselines read the stored layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InvalidArgumentError, LayerNotFoundError
from .data import is_dataset, labels_for, load_features, stored_layers
from .estimator import Probe, check_targets
from .folds import _groups, make_folds
from .layers import EMBEDDINGS, LayerSpec, request
from .metrics import classification_metrics, regression_metrics

__all__ = ["TEXT_BASELINES", "ACTIVATION_BASELINES", "BaselineBattery", "BaselineResult",
           "BaselineResults", "baselines"]

TEXT_BASELINES = ("majority", "random", "sentence_length", "bow", "tfidf")
ACTIVATION_BASELINES = ("shuffled_labels", "random_direction", "pca", "layer_0")
_ALIASES = {"embeddings": "layer_0", "length": "sentence_length", "bag_of_words": "bow"}


@dataclass
class BaselineResult:
    """One baseline's cross-validated scores.

    Attributes
    ----------
    name : str
        The baseline (``"bow"``, ``"pca"``, ... or ``"probe"``).
    kind : str
        ``"text"``, ``"activation"`` or ``"probe"``.
    score : float
        Mean of the main metric (accuracy, or R² for regression) over the folds.
    std : float
        Its standard deviation over the folds.
    folds : list of dict
        Every metric of every fold.
    """

    name: str
    kind: str
    score: float
    std: float
    folds: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"BaselineResult(name={self.name!r}, score={self.score:.4f} ± {self.std:.4f})"


@dataclass
class BaselineResults:
    """The table of :func:`baselines`: one :class:`BaselineResult` per baseline.

    Index by name (``results["bow"]``) or position; :meth:`to_frame` gives a DataFrame,
    best first.
    """

    results: list[BaselineResult]
    metric: str
    chance: float
    cv: int
    layers: str = ""

    def __iter__(self) -> Iterator[BaselineResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, key: str | int) -> BaselineResult:
        if isinstance(key, int):
            return self.results[key]
        for r in self.results:
            if r.name == key:
                return r
        raise KeyError(f"no baseline {key!r}; this table holds {[r.name for r in self.results]}")

    def get_best(self, n: int = 1) -> list[BaselineResult]:
        """The ``n`` best rows by mean score (lmprobe's name)."""
        return sorted(self.results, key=lambda r: r.score, reverse=True)[:n]

    def to_frame(self) -> pd.DataFrame:
        """name, kind, mean and std of the main metric, best first."""
        rows = [{"name": r.name, "kind": r.kind, f"{self.metric}_mean": r.score,
                 f"{self.metric}_std": r.std} for r in self.results]
        return pd.DataFrame(rows).sort_values(f"{self.metric}_mean", ascending=False,
                                              ignore_index=True)

    def summary(self) -> str:
        """The table as text, with the chance level."""
        return (f"baselines for the probe on layers {self.layers}: {self.cv}-fold CV, "
                f"{self.metric} (chance {self.chance:.3f})\n"
                + self.to_frame().to_string(index=False, float_format=lambda v: f"{v:.4f}"))

    def __repr__(self) -> str:
        return self.summary()


def baselines(
    data: Any,
    y: Any = None,
    *,
    layers: LayerSpec = -1,
    view: str | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    texts: Sequence[str] | None = None,
    task: str = "classification",
    cv: int = 5,
    groups: Any = None,
    seed: int = 0,
    n_components: int = 10,
    **probe_params: Any,
) -> BaselineResults:
    """Cross-validate the probe next to text and activation baselines, on the same folds.

    Parameters
    ----------
    data : Dataset or array (n, n_layers, dim)
        A dataset (its texts feed the text baselines), or arrays with ``texts=``.
    y : str, array or None
        Label column, labels, or None for the dataset's labels.
    layers : layer spec
        The probe's layers (default: the deepest block); activation baselines use them too.
    view : str, optional
        The pooled view (default: the primary one).
    include, exclude : sequence of str, optional
        Baselines to run (default: every one that applies: text baselines need texts,
        ``layer_0`` needs the embedding layer stored).
    texts : sequence of str, optional
        The texts, when ``data`` is an array.
    task : {"classification", "regression"}
    cv : int
        Folds; the same folds (and groups) for every row of the table.
    groups : str or array, optional
        Rows with the same group stay in one fold.
    seed : int
        Folds, the random baselines and the probe's ``random_state``.
    n_components : int
        Principal components of the ``pca`` baseline.
    **probe_params
        Passed to :class:`Probe` (classifier, normalize, ...), for the probe and the
        activation baselines alike.

    Returns
    -------
    BaselineResults

    Examples
    --------
    >>> import actstore
    >>> ds = actstore.open_dataset("acts/sentiment")            # doctest: +SKIP
    >>> table = actstore.baselines(ds, "label", layers=4, cv=5)  # doctest: +SKIP
    >>> table["probe"].score > table["bow"].score                # doctest: +SKIP
    True
    """
    if task not in ("classification", "regression"):
        raise InvalidArgumentError(f"task must be 'classification' or 'regression'; got {task!r}.")
    X, chosen = load_features(data, layers, view)
    n = X.shape[0]
    yv = labels_for(data, y, n)
    check_targets(yv, task)
    text_list = _texts(data, texts, n)
    names = _choose(include, exclude, has_texts=text_list is not None,
                    has_embeddings=is_dataset(data) and _has_embeddings(data, chosen))
    folds = make_folds(yv, cv, task, seed, _groups(data, groups))
    params = {"task": task, **probe_params}
    emb = load_features(data, [EMBEDDINGS], view)[0] if "layer_0" in names else None
    results = [_run("probe", "probe", folds, yv, task,
                    lambda tr, va: _probe_fit(X, yv, tr, va, params, seed))]
    for name in names:
        kind = "text" if name in TEXT_BASELINES else "activation"
        fit = _baseline(name, X, emb, text_list, yv, params, task, seed, n_components)
        results.append(_run(name, kind, folds, yv, task, fit))
    if task == "regression":
        metric, chance = "r2", 0.0
    else:
        metric, chance = "accuracy", float(np.unique(yv, return_counts=True)[1].max() / n)
    return BaselineResults(results, metric, chance, cv, _layer_names(chosen))


class BaselineBattery:
    """lmprobe's battery interface over :func:`baselines` (for code moving from lmprobe).

    Parameters
    ----------
    layers, include, exclude, classifier, random_state
        As in lmprobe's ``BaselineBattery``; the model arguments are gone because the
        activations are stored.
    **kwargs
        Passed to :func:`baselines` (``cv``, ``view``, ``groups``, ...).

    Examples
    --------
    >>> battery = BaselineBattery(layers=4, include=["bow", "pca"])   # doctest: +SKIP
    >>> results = battery.fit(ds, "label")                            # doctest: +SKIP
    >>> results.get_best(2)                                           # doctest: +SKIP
    """

    def __init__(self, layers: LayerSpec = -1, *, include: Sequence[str] | None = None,
                 exclude: Sequence[str] = (), classifier: Any = "logistic_regression",
                 random_state: int | None = None, **kwargs: Any) -> None:
        self.layers = layers
        self.include = include
        self.exclude = exclude
        self.classifier = classifier
        self.random_state = random_state
        self.kwargs = kwargs

    @staticmethod
    def available_baselines() -> list[str]:
        """Every baseline name."""
        return [*TEXT_BASELINES, *ACTIVATION_BASELINES]

    def fit(self, data: Any, y: Any = None) -> BaselineResults:
        """Run the battery on a dataset (or arrays) and labels; see :func:`baselines`."""
        self.results_ = baselines(data, y, layers=self.layers, include=self.include,
                                  exclude=self.exclude, classifier=self.classifier,
                                  seed=0 if self.random_state is None else self.random_state,
                                  **self.kwargs)
        return self.results_

    def get_best(self, n: int = 1) -> list[BaselineResult]:
        """The ``n`` best rows of the last :meth:`fit`."""
        return self.results_.get_best(n)


# -- the pieces ---------------------------------------------------------------------------

_Fit = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def _texts(data: Any, texts: Sequence[str] | None, n: int) -> list[str] | None:
    if texts is not None:
        out = [str(t) for t in texts]
    elif is_dataset(data):
        out = [str(t) for t in data.texts]
    else:
        return None
    if len(out) != n:
        raise InvalidArgumentError(f"texts has {len(out)} entries but the data has {n} rows.")
    return out


def _choose(include: Sequence[str] | None, exclude: Sequence[str], *, has_texts: bool,
            has_embeddings: bool) -> list[str]:
    known = (*TEXT_BASELINES, *ACTIVATION_BASELINES)

    def canon(name: str) -> str:
        name = _ALIASES.get(name, name)
        if name not in known:
            raise InvalidArgumentError(
                f"unknown baseline {name!r}; choose from {list(known)} (aliases: {_ALIASES}).")
        return name

    excluded = {canon(e) for e in exclude}
    if include is None:
        names = [b for b in known if (has_texts or b not in TEXT_BASELINES)
                 and (has_embeddings or b != "layer_0")]
    else:
        names = [canon(b) for b in include]
        if not has_texts and any(b in TEXT_BASELINES for b in names):
            raise InvalidArgumentError(
                f"text baselines {[b for b in names if b in TEXT_BASELINES]} need the texts: pass "
                "a Dataset or texts=.")
        if "layer_0" in names and not has_embeddings:
            raise LayerNotFoundError(
                "the layer_0 baseline needs the embedding layer stored next to the probe's "
                "layers (extract with layers=['embeddings', ...]); exclude it otherwise.")
    return [b for b in names if b not in excluded]


def _run(name: str, kind: str, folds: list[tuple[np.ndarray, np.ndarray]], y: np.ndarray,
         task: str, fit: _Fit) -> BaselineResult:
    rows = []
    for tr, va in folds:
        pred, scores = fit(tr, va)
        if task == "regression":
            rows.append(regression_metrics(y[va], pred))
        else:
            classes = np.unique(y[tr])
            rows.append(classification_metrics(y[va], pred, scores, classes))
    key = "r2" if task == "regression" else "accuracy"
    vals = np.array([r[key] for r in rows], dtype=float)
    return BaselineResult(name, kind, float(vals.mean()), float(vals.std()), rows)


def _probe_fit(X: np.ndarray, y: np.ndarray, tr: np.ndarray, va: np.ndarray,
               params: dict[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    probe = Probe(layers=list(range(X.shape[1])), random_state=seed, **params).fit(X[tr], y[tr])
    scores = probe.predict_proba(X[va]) if params["task"] == "classification" else None
    return probe.predict(X[va]), scores


def _sk_fit(model: Any, F: Any, y: np.ndarray, tr: np.ndarray, va: np.ndarray,
            task: str) -> tuple[np.ndarray, np.ndarray | None]:
    model.fit(F[tr], y[tr])
    scores = model.predict_proba(F[va]) if task == "classification" else None
    return model.predict(F[va]), scores


def _baseline(name: str, X: np.ndarray, emb: np.ndarray | None, texts: list[str] | None,
              y: np.ndarray, params: dict[str, Any], task: str, seed: int,
              n_components: int) -> _Fit:
    from sklearn.decomposition import PCA
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def linear() -> Any:
        return Ridge() if task == "regression" else LogisticRegression(max_iter=2000)

    if name == "majority":
        return lambda tr, va: _sk_fit(
            DummyRegressor() if task == "regression" else DummyClassifier(strategy="most_frequent"),
            np.zeros((len(y), 1)), y, tr, va, task)
    if name == "random":
        rng = np.random.default_rng(seed)

        def random_fit(tr: np.ndarray, va: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            # draws from the training fold's labels, so the class balance is kept
            pred = rng.choice(y[tr], size=len(va))
            if task == "regression":
                return pred, None
            classes = np.unique(y[tr])
            return pred, (pred[:, None] == classes[None, :]).astype(float)
        return random_fit
    if name == "sentence_length":
        F = np.array([[len(t), len(t.split())] for t in texts or []], dtype=float)
        return lambda tr, va: _sk_fit(make_pipeline(StandardScaler(), linear()), F, y, tr, va, task)
    if name in ("bow", "tfidf"):
        vec = CountVectorizer if name == "bow" else TfidfVectorizer
        docs = np.array(texts, dtype=object)
        return lambda tr, va: _sk_fit(make_pipeline(vec(), linear()), docs, y, tr, va, task)
    if name == "shuffled_labels":
        rng = np.random.default_rng(seed)

        def control(tr: np.ndarray, va: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            # trained on labels permuted within the training fold, scored on the true labels
            shuffled = y.copy()
            shuffled[tr] = rng.permutation(y[tr])
            return _probe_fit(X, shuffled, tr, va, params, seed)
        return control
    if name == "random_direction":
        flat = X.reshape(len(X), -1)
        direction = np.random.default_rng(seed).standard_normal(flat.shape[1])
        F = (flat @ (direction / np.linalg.norm(direction)))[:, None]
        return lambda tr, va: _sk_fit(make_pipeline(StandardScaler(), linear()), F, y, tr, va, task)
    if name == "pca":
        flat = X.reshape(len(X), -1)
        k = min(n_components, flat.shape[1], max(1, len(flat) // 2))
        return lambda tr, va: _sk_fit(
            make_pipeline(StandardScaler(), PCA(n_components=k, random_state=seed), linear()),
            flat, y, tr, va, task)
    if name == "layer_0":
        assert emb is not None  # _choose only picks it when the embeddings are stored
        return lambda tr, va: _probe_fit(emb, y, tr, va, params, seed)
    raise InvalidArgumentError(f"unknown baseline {name!r}")  # pragma: no cover - _choose checks


def _has_embeddings(data: Any, chosen: Sequence[int | str]) -> bool:
    held = stored_layers(data)
    return any(L in (EMBEDDINGS, -1) for L in held) and not any(L in (EMBEDDINGS, -1) for L in chosen)


def _layer_names(chosen: Sequence[int | str]) -> str:
    return ",".join(str(request(L)) for L in chosen)
