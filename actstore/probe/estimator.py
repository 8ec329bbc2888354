"""``Probe``: a scikit-learn-style linear probe trained on stored activations.

It never loads a language model: features come from a :class:`~actstore.Dataset` (one or
several layers of one view) or from plain arrays.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.metaestimators import available_if

from ..errors import InvalidArgumentError, NotFittedError
from ..format.reader import Dataset
from .classifiers import CLASSIFIERS, ClassifierSpec, builtin_name, make_estimator
from .data import FeatureSource, HeldLayers, LabelSource, is_dataset, labels_for, load_features
from .head import LinearHead, collapse_pipeline
from .layers import LayerSpec, request, stored
from .metrics import classification_metrics, main_metric, regression_metrics
from .provenance import dataset_provenance
from .saved import SavedProbe, read_probe, write_probe

__all__ = ["Probe", "ProbeNotFittedError"]

TASKS = ("classification", "regression")


class ProbeNotFittedError(NotFittedError, SklearnNotFittedError):
    """:class:`actstore.NotFittedError` that is also scikit-learn's ``NotFittedError``.

    Defined here rather than in ``actstore.errors`` because that module must not import
    scikit-learn; code catching either class (``check_is_fitted`` users, pipelines, model
    selection tools) sees an unfitted probe the same way.
    """


def check_sample_weight(sample_weight: ArrayLike | None, n: int) -> np.ndarray | None:
    """``sample_weight`` as ``n`` checked float64 weights, or None when none are given."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InvalidArgumentError(
            f"sample_weight must hold {n} finite non-negative numbers (one per row) with a "
            f"positive sum (weights that are all zero are refused); got shape {w.shape}.")
    return w


def check_targets(y: np.ndarray, task: str) -> None:
    """Refuse labels that do not fit the task, with the fix in the message."""
    if task not in TASKS:
        raise InvalidArgumentError(f"task must be one of {TASKS}; got {task!r}.")
    if task == "regression":
        if y.dtype.kind not in "fiub":
            raise InvalidArgumentError(
                f"Unknown label type for task='regression': it needs numeric targets; got labels "
                f"of dtype {y.dtype}."
            )
        return
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        raise InvalidArgumentError(
            "The labels are continuous values, which a classifier cannot fit; pass "
            "task='regression' (with classifier='ridge' or 'linear_svm')."
        )
    classes = np.unique(y)
    if classes.size < 2:
        raise InvalidArgumentError(
            f"The labels hold only one class ({classes.tolist()}); a classifier needs at least "
            "two. Check the label column, or the rows you selected."
        )


class Probe(BaseEstimator):
    """A linear probe over one or several layers of stored activations.

    Parameters
    ----------
    layers : int, str or list
        Layers to use; several are concatenated, each scaled to unit mean row norm first.
        Negative values count from the deepest stored *block* in numeric order (``-1``, the
        default, is the deepest block, never the embeddings); ``"last"``, ``"middle"`` (one
        block: the lower central one, ``blocks[(n - 1) // 2]``), ``"all"`` and
        ``"embeddings"`` (the embedding output) work too (:mod:`actstore.format.layersel`).
    view : str, optional
        Which pooled view of the dataset (default: its primary view).
    classifier : str, estimator or None
        ``"logistic_regression"``, ``"logistic_regression_cv"``, ``"ridge"``,
        ``"ridge_regression"``, ``"lda"``, ``"mass_mean"``, ``"mass_mean_iid"``
        (covariance-corrected), ``"linear_svm"``, ``"svm"`` (linear SVC with probabilities),
        ``"sgd"``, or any scikit-learn estimator instance. ``None`` (default) means logistic
        regression for classification and ridge for regression, as in lmprobe.
    task : {"classification", "regression"}
    normalize : bool or {"per_neuron", "per_layer"}
        Standardise features before the classifier: ``True`` / ``"per_neuron"`` one mean and
        standard deviation per feature, ``"per_layer"`` one per layer (lmprobe's
        ``PerLayerScaler``), ``False`` none. Left out when ``preprocessing`` standardises.
    preprocessing : str or list of str, optional
        lmprobe's grammar: ``"standard"`` (or ``"standard_scaler"``), ``"pca"``
        (``pca_components`` components) and ``"pca:N"``, joined by ``"+"``
        (``"standard+pca:8"``) or as a list, applied in order after ``normalize``.
    pca_components : int, optional
    classifier_kwargs : dict, optional
        Passed to the classifier.
    random_state : int, optional
    auto_candidates : sequence of int or float, optional
        The candidate layers of ``layers="auto"`` / ``"fast_auto"``: block numbers (int) or
        fractions of the depth (float; default 0.25, 0.5, 0.75), as in lmprobe.
    auto_alpha : float
        Group-lasso strength of ``layers="auto"`` (larger keeps fewer layers).
    fast_auto_top_k : int, optional
        Layers kept by ``layers="fast_auto"`` (default half the candidates).
        ``layers`` also takes lmprobe's ``"sweep"``, ``"sweep:N"`` (every N-th block) and
        ``"sweep:START-END"``: each candidate is cross-validated (5 folds) on the training
        rows, and the probe is fitted on the best one (``sweep_scores_`` holds the scores).
    train_pooling : {None, "all", "last_token", "first_token", "mean"}
        How a full-sequence Dataset's tokens become training samples (lmprobe's name).
        ``None`` (default) reads the pooled ``view``; ``"all"`` makes every real token of
        each row a sample with the row's label and weight (never padding), and the folds of
        ``layers="sweep"`` then group tokens by row; the others pool each row's tokens.
        With ``"all"`` and fixed layers, logistic regression, ridge, LDA and mass-mean
        (standard scaling, no ``preprocessing``, ``mass_mean_augment`` or ``sample_weight``)
        are fitted in bounded memory, never holding the token matrix
        (:mod:`actstore.probe.token_stream`: one pass of statistics, or L-BFGS over the
        tokens spilled once to a temporary file); other settings hold every token in memory.
    inference_pooling : str, optional
        How a full-sequence Dataset's rows are scored at prediction (lmprobe's names).
        ``None`` (default) reads the pooled ``view``. ``"max"``, ``"min"``, ``"score:mean"``
        (any base prefixed ``score:``) score every token and reduce the scores per row: the
        positive-class probability (or margin) of a binary probe, each class's probability
        of a multiclass one (``score:mean``, ``score:last_token``, ``score:first_token``
        only), the prediction of a regression. ``"mean"``, ``"last_token"``,
        ``"first_token"``, ``"activation:max"``, ``"activation:min"`` pool each row's
        tokens first and score once. Arrays are always scored as given.
    mass_mean_augment : bool
        lmprobe's augmentation (binary classification): the projection on the unit
        mass-mean direction, learnt after ``normalize`` and before ``preprocessing``, is
        appended as one more feature for the classifier.

    Notes
    -----
    ``layers="auto"`` fits a group lasso over the candidate layers (one group per layer)
    and keeps the layers whose group is not zeroed; ``"fast_auto"`` fits the probe on all
    candidates and keeps the ``fast_auto_top_k`` with the largest coefficient norm. Either
    way the probe is then refitted on the kept layers, and ``candidate_layers_``,
    ``selected_layers_`` and ``layer_importances_`` say what happened.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 16)); y = (X[:, 0] > 0).astype(int)
    >>> Probe(layers=0).fit(X, y).score(X, y) > 0.9
    True
    """

    def __init__(
        self,
        layers: LayerSpec = -1,
        view: str | None = None,
        classifier: ClassifierSpec = None,
        task: str = "classification",
        normalize: bool | str = True,
        preprocessing: str | Sequence[str] | None = None,
        pca_components: int | None = None,
        classifier_kwargs: dict[str, Any] | None = None,
        random_state: int | None = None,
        auto_candidates: Sequence[int | float] | None = None,
        auto_alpha: float = 0.01,
        fast_auto_top_k: int | None = None,
        train_pooling: str | None = None,
        inference_pooling: str | None = None,
        mass_mean_augment: bool = False,
    ) -> None:
        self.layers = layers
        self.view = view
        self.classifier = classifier
        self.task = task
        self.normalize = normalize
        self.preprocessing = preprocessing
        self.pca_components = pca_components
        self.classifier_kwargs = classifier_kwargs
        self.random_state = random_state
        self.auto_candidates = auto_candidates
        self.auto_alpha = auto_alpha
        self.fast_auto_top_k = fast_auto_top_k
        self.train_pooling = train_pooling
        self.inference_pooling = inference_pooling
        self.mass_mean_augment = mass_mean_augment

    def __sklearn_tags__(self) -> Any:
        """A classifier or regressor per ``task``, so scikit-learn's model selection
        (stratified folds in ``cross_val_score``, ``is_classifier``) treats it as one."""
        from sklearn.utils import ClassifierTags, RegressorTags

        tags = super().__sklearn_tags__()
        if self.task == "regression":
            tags.estimator_type, tags.regressor_tags = "regressor", RegressorTags()
        else:
            binary_only = self.classifier in ("mass_mean", "mass_mean_iid")
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags(multi_class=not binary_only)
        return tags

    # -- features ----------------------------------------------------------------------
    def _fit_layout(self, feats: np.ndarray, chosen: list[int | str], named: bool) -> np.ndarray:
        """Learn the layout (layers, per-layer scale, dim) of checked ``(n, k, dim)`` features;
        return them scaled and flattened to ``(n, k * dim)``."""
        if feats.shape[0] == 0:
            raise InvalidArgumentError("The data has 0 rows; a probe needs at least one.")
        self.layers_ = [request(L) for L in chosen]  # the embeddings by name, never -1
        # True when layers_ are real layer numbers, False when they are positions on axis 1
        # of an array whose layers were not named (such a probe cannot read a Dataset)
        self.layers_named_ = named
        norms = np.linalg.norm(feats, axis=2).mean(0)
        self.layer_scale_ = np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 1.0)
        if len(chosen) == 1:
            self.layer_scale_ = np.ones(1)
        self.dim_ = feats.shape[2]
        return self._scaled(feats)

    def _layout(self, feats: np.ndarray) -> np.ndarray:
        """Checked ``(n, len(layers_), dim_)`` features, scaled and flattened as at fit time."""
        if feats.shape[0] == 0:
            raise InvalidArgumentError("The data has 0 rows; a probe needs at least one.")
        if feats.shape[2] != self.dim_:
            raise InvalidArgumentError(
                f"X has {feats.shape[2]} features, but Probe is expecting {self.dim_} features as "
                "input (per layer); use activations from the same model and view."
            )
        return self._scaled(feats)

    def _scaled(self, feats: np.ndarray) -> np.ndarray:
        if np.any(self.layer_scale_ != 1):  # not in place: feats may be a view of the caller's X
            feats = feats * self.layer_scale_[None, :, None].astype(np.float32)
        return feats.reshape(feats.shape[0], -1)

    def _features(self, X: FeatureSource, held: HeldLayers | None) -> np.ndarray:
        """The fitted layers of ``X``, checked, scaled and flattened for the fitted pipeline."""
        return self._layout(self._predict_features(X, held))

    def _predict_features(self, X: FeatureSource, held: HeldLayers | None) -> np.ndarray:
        """The fitted layers of ``X`` as ``(n, len(layers_), dim)``, refusing guesses.

        A Dataset is read by layer number. An array ``(n, k, dim)`` must say which layers
        it holds (``held``, e.g. the ``layers`` given to ``ds.get``), or hold exactly the
        fitted layers in the fitted order (``k == len(layers_)``); ``(n, dim)`` or
        ``(n, len(layers_) * dim)`` holds the fitted layers already.
        """
        from .data import as_dense, held_layers, read_layers, select_held

        named = getattr(self, "layers_named_", True)
        if is_dataset(X):
            if not named:
                raise InvalidArgumentError(
                    f"This probe was fitted on an array whose layers were not named (layers_ "
                    f"{self.layers_} are positions in that array), so it cannot tell which "
                    "layers of a Dataset to read. Fit on the Dataset, or pass layers= to fit."
                )
            pooling = self._inference_pooling(X)
            if pooling is not None:  # activation pooling: each row's tokens pooled first
                from .tokens import pool_tokens, row_tokens

                out = np.empty((len(X), len(self.layers_), self.dim_), dtype=np.float32)
                for r in range(len(X)):
                    out[r] = pool_tokens(row_tokens(X, r, self.layers_), pooling.base)
                return out
            return read_layers(X, self.layers_, self.view)
        arr = as_dense(X)
        n_fit = len(self.layers_)
        if arr.ndim == 2 and held is None:
            if arr.shape[1] == n_fit * self.dim_:
                arr = arr.reshape(arr.shape[0], n_fit, self.dim_)
            elif n_fit != 1:
                raise InvalidArgumentError(
                    f"X has {arr.shape[1]} features, but Probe is expecting {n_fit * self.dim_} "
                    f"features as input (layers {self.layers_} of dim {self.dim_}); pass (n, "
                    "n_layers, dim) activations with layers=, or the fitted layers' columns."
                )
            else:
                arr = arr[:, None, :]
        elif arr.ndim == 2:  # (n, len(held) * dim) columns of the named layers
            ids = held_layers(held, arr)
            if arr.shape[1] % len(ids):
                raise InvalidArgumentError(
                    f"X has {arr.shape[1]} columns, not a multiple of the {len(ids)} layers named by layers=."
                )
            arr = arr.reshape(arr.shape[0], len(ids), -1)
            arr = select_held(arr, ids, self.layers_) if named else self._refuse_named()
        elif held is not None:
            ids = held_layers(held, arr)
            arr = select_held(arr, ids, self.layers_) if named else self._refuse_named()
        elif not named:
            # fitted on an unnamed array: layers_ are positions on its axis 1, as at fit time
            from .layers import resolve_layers

            arr = arr[:, resolve_layers(self.layers_, range(arr.shape[1]), where="X (positions on axis 1)")]
        elif arr.shape[1] != n_fit:
            raise InvalidArgumentError(
                f"X holds {arr.shape[1]} layers (shape {arr.shape}) but the probe was fitted on "
                f"layers {self.layers_}, and an array does not say which layers it holds. Pass "
                "layers= naming them (e.g. probe.score(ds.get(rows, layers=L), y, layers=L)), or "
                "pass ds.get(rows, layers=probe.layers_)."
            )
        from .data import _check_finite

        _check_finite(arr)
        return arr

    def _refuse_named(self) -> np.ndarray:
        raise InvalidArgumentError(
            f"This probe was fitted on an array whose layers were not named (layers_ {self.layers_} "
            "are positions in it), so layers= at prediction cannot be matched. Pass layers= to "
            "fit as well, or pass arrays laid out as at fit time."
        )

    def _steps(self) -> list[tuple[str, Any]]:
        from .preprocess import preprocessing_steps

        n_layers = len(getattr(self, "layers_", [0]))
        steps = preprocessing_steps(self.normalize, self.preprocessing, self.pca_components, n_layers,
                                    bool(self.mass_mean_augment), self.random_state)
        est = make_estimator(self.classifier, self.task, self.classifier_kwargs, self.random_state)
        if (self.task == "regression" and is_classifier(est)) or (
            self.task == "classification" and is_regressor(est)
        ):
            raise InvalidArgumentError(
                f"classifier {type(est).__name__} does not fit task={self.task!r}; pass a "
                f"{'regressor' if self.task == 'regression' else 'classifier'} or change task."
            )
        return [*steps, ("model", est)]

    # -- fitting -----------------------------------------------------------------------
    def fit(self, X: FeatureSource, y: LabelSource = None, *, layers: HeldLayers | None = None,
            sample_weight: ArrayLike | None = None) -> Probe:
        """Fit on a Dataset (``y`` = label column name or array; default its labels) or arrays.

        ``layers`` (arrays only) names the layers an ``(n, k, dim)`` array holds along axis 1
        (block numbers ``>= 0`` or ``"embeddings"``, e.g. those given to ``ds.get``); the
        probe's own ``layers`` spec is then resolved against them, and ``layers_`` holds real
        layer numbers. Without it the array's layers are its positions ``0..k-1``.
        ``sample_weight`` (one non-negative weight per row) weights the standardisation and
        the classifier's loss; a classifier that cannot take weights is refused.
        """
        held = self._held(X, layers)
        named = bool(is_dataset(X) or held is not None)
        auto = isinstance(self.layers, str) and self.layers in ("auto", "fast_auto")
        swept = isinstance(self.layers, str) and self.layers.startswith("sweep")
        if auto:
            spec = self._candidates(X, held)
        elif swept:
            from .data import held_layers, stored_layers
            from .folds import sweep_spec

            have = held_layers(held, np.asarray(X)) if held is not None else stored_layers(X)
            spec = sweep_spec(self.layers, [request(L) for L in have])
        else:
            spec = self.layers
        from .tokens import check_train_pooling, parse_inference_pooling

        pooling = check_train_pooling(self.train_pooling)
        parse_inference_pooling(self.inference_pooling)  # a bad value is refused before reading
        groups = None
        if pooling == "all" and not (auto or swept):
            from .token_stream import bounded_classifier

            name = bounded_classifier(self.get_params(deep=False), sample_weight is not None)
            if name is not None:  # every token a sample, never all of them in memory
                return self._fit_tokens_bounded(X, y, spec, name)
        if pooling is None:
            feats, chosen = load_features(X, spec, self.view, held=held)
            yv = labels_for(X, y, feats.shape[0])
            weights = check_sample_weight(sample_weight, feats.shape[0])
        else:
            feats, chosen, yv, weights, groups = self._token_samples(X, y, spec, pooling, sample_weight)
        if auto:
            keep = self._select_layers(feats, yv, chosen, weights)
            feats, chosen = feats[:, keep], [chosen[i] for i in keep]
        elif swept:
            best = self._sweep_best(feats, yv, chosen, weights, groups=groups)
            feats, chosen = feats[:, [best]], [chosen[best]]
        Xf = self._fit_layout(feats, chosen, named=named)
        self._fit_head(Xf, yv, weights)
        self.provenance_ = dataset_provenance(X, y, self.view, self.layers_)  # saved with it
        return self

    def _token_samples(self, X: FeatureSource, y: LabelSource, spec: LayerSpec, pooling: str,
                       sample_weight: ArrayLike | None) -> tuple[np.ndarray, list[int], np.ndarray,
                                                                 np.ndarray | None, np.ndarray | None]:
        """Training samples of ``train_pooling``: features, layers, labels, weights and the
        row of each sample (the CV groups of ``"all"``; None when there is one per row)."""
        from .data import stored_layers
        from .layers import resolve_layers
        from .tokens import require_full_sequence, token_features

        ds = require_full_sequence(X, f"train_pooling={pooling!r}")
        chosen = resolve_layers(spec, stored_layers(ds), where="the dataset")
        y_rows = labels_for(ds, y, len(ds))
        w_rows = check_sample_weight(sample_weight, len(ds))
        feats, rows = token_features(ds, chosen, pooling)
        if pooling != "all":
            return feats, chosen, y_rows, w_rows, None
        self.n_train_tokens_ = int(rows.size)
        return feats, chosen, y_rows[rows], None if w_rows is None else w_rows[rows], rows

    def _fit_tokens_bounded(self, X: FeatureSource, y: LabelSource, spec: LayerSpec, name: str) -> Probe:
        """``train_pooling="all"`` in bounded memory (:mod:`.token_stream`): the fitted head
        is the affine map a saved probe holds, equal to the in-memory fit's."""
        from .data import stored_layers
        from .layers import resolve_layers
        from .token_stream import fit_token_head
        from .tokens import require_full_sequence

        ds = require_full_sequence(X, "train_pooling='all'")
        chosen = resolve_layers(spec, stored_layers(ds), where="the dataset")
        yv = labels_for(ds, y, len(ds))
        check_targets(yv, self.task)
        self._steps()  # a classifier that does not fit the task is refused as in memory
        fit = fit_token_head(ds, chosen, yv, name, self.task, self.classifier_kwargs)
        self.layers_, self.layers_named_ = [request(L) for L in chosen], True
        self.layer_scale_, self.dim_ = fit.layer_scale, int(ds.info.dim)
        self.pipeline_ = LinearHead(fit.W, fit.b, fit.kind, fit.classes)
        self.n_features_in_ = fit.W.shape[0]
        if self.task == "classification":
            self.classes_ = fit.classes
        self.n_train_tokens_ = fit.n_tokens
        self.provenance_ = dataset_provenance(X, y, self.view, self.layers_)
        return self

    def _candidates(self, X: FeatureSource, held: HeldLayers | None) -> list[int | str]:
        """The candidate layers of ``"auto"``/``"fast_auto"``, as stored layer names."""
        from .data import held_layers, stored_layers
        from .layer_select import candidate_positions

        if held is not None:
            have: list[int | str] = [request(L) for L in held_layers(held, np.asarray(X))]
        else:
            have = [request(L) for L in stored_layers(X)]
        blocks = [L for L in have if L != "embeddings"]
        if not blocks:
            raise InvalidArgumentError("layers='auto' picks among blocks, but the data holds none.")
        picked = candidate_positions(len(blocks), self.auto_candidates)
        explicit = self.auto_candidates is not None and all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in self.auto_candidates)
        if explicit:  # block numbers, which must be stored
            missing = [c for c in picked if c not in blocks]
            if missing:
                raise InvalidArgumentError(
                    f"auto_candidates {missing} are not stored; the data holds blocks {blocks}.")
            return list(picked)
        return sorted({blocks[i] for i in picked}, key=blocks.index)

    def _select_layers(self, feats: np.ndarray, yv: np.ndarray, chosen: list[int | str],
                       weights: np.ndarray | None) -> list[int]:
        """Positions (along axis 1 of ``feats``) of the layers ``"auto"``/``"fast_auto"`` keep."""
        import warnings

        from .layer_select import group_lasso_layers, layer_importance, top_k_layers

        check_targets(yv, self.task)
        self.candidate_layers_ = [request(L) for L in chosen]
        if self.layers == "auto":
            if weights is not None:
                raise InvalidArgumentError("layers='auto' (group lasso) does not take sample_weight; "
                                           "use layers='fast_auto' or fixed layers.")
            norms, keep = group_lasso_layers(feats, yv, alpha=float(self.auto_alpha), task=self.task)
            total = norms.sum()
            self.layer_importances_ = norms / total if total > 0 else norms
            if not keep:
                warnings.warn(f"layers='auto': the group lasso kept no layer at auto_alpha="
                              f"{self.auto_alpha}; using every candidate (lower auto_alpha).",
                              UserWarning, stacklevel=3)
                keep = list(range(len(chosen)))
        else:
            full = Probe(**{**self.get_params(deep=False), "layers": list(range(len(chosen)))})
            full._fit_head(full._fit_layout(feats, list(range(len(chosen))), named=False), yv, weights)
            self.layer_importances_ = layer_importance(full._model_coef(), len(chosen), "l2")
            keep = top_k_layers(self.layer_importances_, self.fast_auto_top_k)
        self.selected_layers_ = [self.candidate_layers_[i] for i in keep]
        return keep

    def _sweep_best(self, feats: np.ndarray, yv: np.ndarray, chosen: list[int | str],
                    weights: np.ndarray | None, cv: int = 5, groups: np.ndarray | None = None) -> int:
        """Position of the layer with the best 5-fold CV score (lmprobe's ``layers="sweep"``);
        ``groups`` (the row of each token sample) keeps a row's tokens in one fold."""
        from .folds import make_folds

        check_targets(yv, self.task)
        seed = 0 if self.random_state is None else int(self.random_state)
        folds = make_folds(yv, cv, self.task, seed, groups)
        params = {**self.get_params(deep=False), "layers": 0, "train_pooling": None,
                  "inference_pooling": None}
        scores = []
        for i in range(len(chosen)):
            fold_scores = []
            for tr, va in folds:
                p = type(self)(**params)._fit_checked(feats[tr][:, [i]], yv[tr],
                                                      None if weights is None else weights[tr])
                fold_scores.append(p._evaluate_checked(feats[va][:, [i]], yv[va])[main_metric(self.task)])
            scores.append(float(np.mean(fold_scores)))
        self.sweep_scores_ = {request(L): v for L, v in zip(chosen, scores)}
        return int(np.argmax(scores))  # ties: the shallower layer

    def _model_coef(self) -> np.ndarray:
        """The fitted model's coefficients on the standardised stacked layers."""
        steps = getattr(self.pipeline_, "named_steps", None)
        if steps is None:
            raise InvalidArgumentError(
                "layer importance needs the fitted pipeline, which a loaded probe does not keep "
                "(it predicts through the stored affine head); refit the probe to compute it.")
        if any(isinstance(s, PCA) for s in steps.values()) or "augment" in steps:
            raise InvalidArgumentError("layer importance is undefined after PCA or mass_mean_augment "
                                       "(their features mix the layers); fit without them, or use "
                                       "compute_layer_importance().")
        model = steps["model"]
        if not hasattr(model, "coef_"):
            raise InvalidArgumentError(f"{type(model).__name__} has no coefficients; layer "
                                       "importance needs a linear classifier.")
        return np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))

    def _fit_head(self, Xf: np.ndarray, yv: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Fit the pipeline on laid-out features ``Xf`` and checked-length labels ``yv``."""
        check_targets(yv, self.task)
        pipeline = Pipeline(self._steps())
        self.pipeline_ = pipeline.fit(Xf, yv, **self._fit_params(pipeline, weights))
        if self.task == "classification":
            self.classes_ = self.pipeline_.classes_
        self.n_features_in_ = Xf.shape[1]

    @staticmethod
    def _fit_params(pipeline: Pipeline, weights: np.ndarray | None) -> dict[str, np.ndarray]:
        """``sample_weight`` routed to every step that takes it, or a clear refusal."""
        from sklearn.utils.validation import has_fit_parameter

        if weights is None:
            return {}
        out = {}
        for name, step in pipeline.steps:
            if has_fit_parameter(step, "sample_weight"):
                out[f"{name}__sample_weight"] = weights
            elif name == "model":
                raise InvalidArgumentError(
                    f"classifier {type(step).__name__} does not take sample_weight; use one that "
                    "does (logistic_regression, ridge, mass_mean, linear_svm, svm, sgd) or drop "
                    "the weights.")
            else:
                raise InvalidArgumentError(
                    f"preprocessing step {name!r} ({type(step).__name__}) does not take "
                    "sample_weight; fit without preprocessing='pca' to use weights.")
        return out

    def _fit_checked(self, feats: np.ndarray, yv: np.ndarray, weights: np.ndarray | None = None) -> Probe:
        """Fit on features already read and checked finite, ``(n, k, dim)`` float32 holding
        this probe's layers at positions ``0..k-1`` (sweeps and cross-validation: each layer
        is read and checked once, and its folds share it)."""
        Xf = self._fit_layout(feats, list(range(feats.shape[1])), named=False)
        self._fit_head(Xf, yv, weights)
        self.provenance_ = None
        return self

    def _evaluate_checked(self, feats: np.ndarray, yv: np.ndarray) -> dict[str, float | int]:
        """:meth:`evaluate` on features laid out as for :meth:`_fit_checked`."""
        self._check_fitted()
        return self._metrics(self._layout(feats), yv)

    @property
    def provenance(self) -> dict[str, Any] | None:
        """What the probe was fitted on (dataset URL and revision, model, view, layers, label
        column), kept by :meth:`save`; None when fitted on arrays."""
        return getattr(self, "provenance_", None)

    def __repr__(self, N_CHAR_MAX: int = 700) -> str:  # noqa: N803 (scikit-learn's name)
        text = super().__repr__(N_CHAR_MAX)
        resolved = resolved_note(self.layers, getattr(self, "layers_", None))
        if resolved:  # a named selection ("middle", "last", -1): say which layers it became
            text += f"\n  {resolved}"
        prov = self.provenance
        if not prov:
            return text
        where = prov.get("dataset") + (f"@{prov['dataset_revision']}" if prov.get("dataset_revision") else "")
        return (f"{text}\n  fitted on {where} (model {prov.get('model')}, view "
                f"{prov.get('view')!r}, layers {prov.get('layers')}, labels "
                f"{prov.get('label_column')!r}, {prov.get('rows')} rows)")

    def fit_contrastive(self, positive: FeatureSource, negative: FeatureSource) -> Probe:
        """Fit on contrast pairs: rows of ``positive`` are class 1, rows of ``negative`` class 0."""
        from .data import read_layers

        pos, layers = load_features(positive, self.layers, self.view)
        neg = (read_layers(negative, layers, self.view) if is_dataset(negative)
               else load_features(negative, layers, self.view)[0])
        if pos.shape != neg.shape:
            raise InvalidArgumentError(
                f"positive and negative must be paired: shapes {pos.shape} and {neg.shape} differ."
            )
        both = np.concatenate([pos, neg])
        y = np.concatenate([np.ones(len(pos), dtype=int), np.zeros(len(neg), dtype=int)])
        Xf = self._fit_layout(both, list(layers), named=is_dataset(positive))
        self._fit_head(Xf, y)
        self.provenance_ = None
        return self

    @staticmethod
    def _held(X: FeatureSource, layers: HeldLayers | None) -> HeldLayers | None:
        if layers is not None and is_dataset(X):
            raise InvalidArgumentError(
                "layers= names the layers an array holds; a Dataset names its own (choose them "
                "with Probe(layers=...))."
            )
        return layers

    # -- prediction --------------------------------------------------------------------
    def _has(self, method: str) -> bool:
        """Whether the classifier offers ``method`` (hasattr(probe, "predict_proba") is honest)."""
        if self.task == "regression" and method == "predict_proba":
            return False
        if hasattr(self, "pipeline_"):
            return hasattr(self.pipeline_, method)
        try:
            est = make_estimator(self.classifier, self.task, self.classifier_kwargs, self.random_state)
        except InvalidArgumentError:
            return True  # let the call reach _check_fitted and say "not fitted"
        return hasattr(est, method)

    def _check_fitted(self) -> None:
        if not hasattr(self, "pipeline_"):
            raise ProbeNotFittedError(
                "This Probe is not fitted yet; call fit(...) before predicting or evaluating."
            )

    def predict(self, X: FeatureSource, *, layers: HeldLayers | None = None) -> np.ndarray:
        """``layers`` (arrays only): the layers X holds, as for :meth:`fit`."""
        self._check_fitted()
        if self._score_pooling(X) is not None:
            return self._pooled_predict(X)
        return self.pipeline_.predict(self._features(X, self._held(X, layers)))

    @available_if(lambda self: self._has("predict_proba"))
    def predict_proba(self, X: FeatureSource, *, layers: HeldLayers | None = None) -> np.ndarray:
        """``layers`` (arrays only): the layers X holds, as for :meth:`fit`."""
        self._check_fitted()
        if self._score_pooling(X) is not None:
            return self._pooled_scores(X, "predict_proba")
        return self.pipeline_.predict_proba(self._features(X, self._held(X, layers)))

    @available_if(lambda self: self._has("decision_function"))
    def decision_function(self, X: FeatureSource, *, layers: HeldLayers | None = None) -> np.ndarray:
        """``layers`` (arrays only): the layers X holds, as for :meth:`fit`."""
        self._check_fitted()
        if self._score_pooling(X) is not None:
            return self._pooled_scores(X, "decision_function")
        return self.pipeline_.decision_function(self._features(X, self._held(X, layers)))

    # -- token pooling at inference ----------------------------------------------------
    def _inference_pooling(self, X: FeatureSource) -> Any:
        """The parsed ``inference_pooling`` for ``X`` (None for arrays or no pooling)."""
        from .tokens import parse_inference_pooling, require_full_sequence

        pooling = parse_inference_pooling(self.inference_pooling)
        if pooling is None or not is_dataset(X):
            return None  # arrays are scored as given (pooled or per-token features)
        require_full_sequence(X, f"inference_pooling={self.inference_pooling!r}")
        if not getattr(self, "layers_named_", True):
            raise InvalidArgumentError(
                f"This probe was fitted on an array whose layers were not named (layers_ "
                f"{self.layers_} are positions in that array), so it cannot tell which layers "
                "of a Dataset to read. Fit on the Dataset, or pass layers= to fit.")
        return pooling

    def _score_pooling(self, X: FeatureSource) -> Any:
        pooling = self._inference_pooling(X)
        return pooling if pooling is not None and pooling.score else None

    def _pooled_scores(self, ds: Dataset, method: str) -> np.ndarray:
        """``method`` applied to every token of each row, reduced per row (score pooling)."""
        from .tokens import iter_token_batches, reduce_scores

        pooling = self._score_pooling(ds)
        multiclass = self.task == "classification" and len(self.classes_) > 2
        if multiclass and pooling.base in ("max", "min"):
            raise InvalidArgumentError(
                f"inference_pooling={self.inference_pooling!r} on a multiclass probe is undefined "
                "(per-class maxima or minima of probabilities are not a distribution); use "
                f"'score:mean' or 'activation:{pooling.base}'.")
        binary_proba = method == "predict_proba" and not multiclass
        out = []
        for toks, counts in iter_token_batches(ds, self.layers_):
            s = getattr(self.pipeline_, method)(self._layout(toks))
            if binary_proba:
                s = s[:, 1]  # the positive class's probability is what is reduced
            out.extend(reduce_scores(part, pooling.base) for part in np.split(s, np.cumsum(counts)[:-1]))
        scores = np.asarray(out, dtype=np.float64)
        return np.stack([1 - scores, scores], axis=1) if binary_proba else scores

    def _pooled_predict(self, ds: Dataset) -> np.ndarray:
        """Labels from the reduced scores (probabilities when the classifier has them)."""
        if self.task == "regression":
            return self._pooled_scores(ds, "predict")
        method = "predict_proba" if hasattr(self.pipeline_, "predict_proba") else "decision_function"
        s = self._pooled_scores(ds, method)
        if s.ndim == 1:  # a binary margin
            return self.classes_[(s > 0).astype(int)]
        if method == "predict_proba" and s.shape[1] == 2:
            return self.classes_[(s[:, 1] > 0.5).astype(int)]
        return self.classes_[s.argmax(1)]

    def _scores(self, Xf: np.ndarray) -> tuple[np.ndarray | None, bool]:
        """Probabilities if the classifier has them, else margins; and which it was."""
        for method in ("predict_proba", "decision_function"):
            if hasattr(self.pipeline_, method):
                return getattr(self.pipeline_, method)(Xf), method == "predict_proba"
        return None, False

    def evaluate(self, X: FeatureSource, y: LabelSource = None, *,
                 layers: HeldLayers | None = None) -> dict[str, float | int | str]:
        """Metrics on held-out data: classification (accuracy, balanced accuracy, AUROC, F1,
        precision, recall, n) or regression (R², Pearson r, Spearman ρ, MSE, MAE, n), and
        lmprobe's ``n_eval`` (rows) and ``eval_hash`` (which rows: see
        :func:`actstore.probe.metrics.evaluation_hash`).
        ``layers`` (arrays only): the layers X holds, as for :meth:`fit`."""
        from .metrics import evaluation_hash

        self._check_fitted()
        if self._score_pooling(X) is not None:
            yv = labels_for(X, y, len(X))
            out: dict[str, float | int | str] = dict(self._pooled_metrics(X, yv))
        else:
            Xf = self._features(X, self._held(X, layers))
            yv = labels_for(X, y, Xf.shape[0])
            out = dict(self._metrics(Xf, yv))
        out["n_eval"] = int(len(yv))
        out["eval_hash"] = evaluation_hash(X, yv)
        return out

    def _metrics(self, Xf: np.ndarray, yv: np.ndarray) -> dict[str, float | int]:
        pred = self.pipeline_.predict(Xf)
        if self.task == "regression":
            return regression_metrics(yv, pred)
        scores, is_proba = self._scores(Xf)
        return classification_metrics(yv, pred, scores, self.classes_, scores_are_proba=is_proba)

    def _pooled_metrics(self, ds: Dataset, yv: np.ndarray) -> dict[str, float | int]:
        """:meth:`_metrics` with score pooling: labels and scores from the reduced scores."""
        pred = self._pooled_predict(ds)
        if self.task == "regression":
            return regression_metrics(yv, pred)
        for method in ("predict_proba", "decision_function"):
            if hasattr(self.pipeline_, method):
                return classification_metrics(yv, pred, self._pooled_scores(ds, method), self.classes_,
                                              scores_are_proba=method == "predict_proba")
        return classification_metrics(yv, pred, None, self.classes_)

    def score(self, X: FeatureSource, y: LabelSource = None, *, layers: HeldLayers | None = None) -> float:
        """Accuracy (classification) or R² (regression); ``layers`` as for :meth:`evaluate`."""
        return float(self.evaluate(X, y, layers=layers)[main_metric(self.task)])

    def compute_layer_importance(self, metric: str = "l2", normalize: bool = True) -> dict[int | str, float]:
        """Each layer's share of the probe's weights (lmprobe's metrics), by layer.

        Computed on the probe's affine head — the weights on each layer's inputs as the probe
        reads them (scaled per layer) — so it works the same for a fitted and a loaded probe,
        with or without PCA. (``layers="fast_auto"`` ranks by the coefficients on
        standardised features instead, as lmprobe does.)

        Parameters
        ----------
        metric : {"l2", "l1", "mean_abs", "max_abs"}
        normalize : bool
            Divide by the sum, so the shares add up to 1.

        Examples
        --------
        >>> probe = Probe(layers=[4, 8, 12]).fit(ds, "label")     # doctest: +SKIP
        >>> probe.compute_layer_importance("l2")                   # doctest: +SKIP
        {4: 0.12, 8: 0.55, 12: 0.33}
        """
        from .layer_select import layer_importance

        self._check_fitted()
        W = self._head().W.reshape(len(self.layers_) * self.dim_, -1).T  # (outputs, features)
        values = layer_importance(W, len(self.layers_), metric, normalize)
        self.layer_importances_ = values
        return {L: float(v) for L, v in zip(self.layers_, values)}

    def _head(self) -> LinearHead:
        """The fitted pipeline as one affine map (what a saved probe holds)."""
        if isinstance(self.pipeline_, Pipeline):
            steps = [s for _, s in self.pipeline_.steps[:-1]]
            return collapse_pipeline(steps, self.pipeline_.steps[-1][1], self.n_features_in_)
        return self.pipeline_

    # -- persistence -------------------------------------------------------------------
    def _saved(self) -> SavedProbe:
        """The record :meth:`save` writes: parameters (``get_params()``), fitted layout, head.

        An estimator instance given as ``classifier`` is recorded by its built-in name: the
        fitted head is what predicts, its own hyperparameters apply only to a refit.
        """
        self._check_fitted()
        head = self._head()
        params = self.get_params(deep=False)
        if params["classifier"] is not None and not isinstance(params["classifier"], str):
            params["classifier"] = builtin_name(params["classifier"])
        classes = None if head.classes_ is None else [
            c.item() if isinstance(c, np.generic) else c for c in head.classes_.tolist()]
        return SavedProbe(
            params=params, layers=[stored(v) for v in self.layers_],
            layers_named=bool(getattr(self, "layers_named_", True)), dim=int(self.dim_),
            kind=head.kind, classes=classes, provenance=getattr(self, "provenance_", None),
            W=head.W, b=head.b, layer_scale=np.asarray(self.layer_scale_, dtype=np.float64),
        )

    @classmethod
    def _from_saved(cls, saved: SavedProbe) -> Probe:
        """A fitted probe predicting through the head of ``saved`` (see :meth:`load`)."""
        names = cls._get_param_names()
        params = {k: v for k, v in saved.params.items() if k in names}
        if params.get("classifier") not in (None, *CLASSIFIERS):
            params["classifier"] = "logistic_regression"  # the fitted head is what predicts
        probe = cls(**params)
        W = np.asarray(saved.W, dtype=np.float64)
        classes = None if saved.classes is None else np.asarray(saved.classes)
        probe.pipeline_ = LinearHead(W, np.asarray(saved.b, dtype=np.float64), saved.kind, classes)
        probe.layers_, probe.dim_ = [request(L) for L in saved.layers], saved.dim
        probe.layers_named_ = saved.layers_named
        probe.layer_scale_ = np.asarray(saved.layer_scale, dtype=np.float64)
        probe.n_features_in_ = W.shape[0]
        probe.provenance_ = saved.provenance
        if saved.kind != "regression":
            probe.classes_ = probe.pipeline_.classes_
        return probe

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save as JSON config + safetensors weights (never pickle), atomically; see :meth:`load`."""
        write_probe(self._saved(), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Probe:
        """Load a probe saved with :meth:`save`; refuses unknown versions and tampered files.

        Raises
        ------
        FormatError, UnsupportedVersionError, IntegrityError
            As :func:`actstore.probe.saved.read_probe`.
        """
        return cls._from_saved(read_probe(path))

    def push_to_hub(self, repo_id: str, *, token: str | bool | None = None, private: bool | None = None,
                    endpoint: str | None = None, metrics: dict[str, float | int] | None = None,
                    base_model: str | None = None, commit_message: str = "Upload actstore probe") -> str:
        """Upload to a Hub model repo: ``probe.json`` + ``probe.safetensors`` + a model card.

        ``probe.json`` goes in last, so a reader never sees a config whose weights are not
        there yet.

        Parameters
        ----------
        repo_id : str
            ``"owner/name"`` of the model repo (created if missing).
        token, endpoint : optional
            As for :func:`actstore.push_dataset`; a write token is needed.
        private : bool, optional
            Visibility of a newly created repo.
        metrics : dict, optional
            Held-out metrics (e.g. from :meth:`evaluate`) shown in the card.
        base_model : str, optional
            The model whose activations the probe reads (card ``base_model``).
        commit_message : str
            Message of the upload commit.

        Returns
        -------
        str
            The commit sha, for :meth:`from_hub` ``revision=``.

        Examples
        --------
        >>> sha = probe.push_to_hub("me/toxicity-probe-l16")  # doctest: +SKIP
        """
        from .hub import probe_card, upload_probe_folder

        saved = self._saved()
        with tempfile.TemporaryDirectory(prefix="actstore-probe-") as tmp:
            write_probe(saved, tmp)
            card = probe_card(saved, repo_id, metrics, base_model)
            return upload_probe_folder(tmp, repo_id, card=card, token=token, private=private,
                                       endpoint=endpoint, commit_message=commit_message)

    @classmethod
    def from_hub(cls, repo_id: str, *, revision: str | None = None, token: str | bool | None = None,
                 endpoint: str | None = None) -> Probe:
        """Load a probe pushed with :meth:`push_to_hub`, pinned to one commit.

        The revision (branch, tag or sha; default the main branch) is resolved to a commit
        sha first, so both files come from the same commit; the weights' sha256 is checked by
        the same loader as :meth:`load`. The sha is kept in ``hub_revision_``. Files land in
        ``<cache_dir>/hub/probes/<owner>--<name>/<sha>``.

        Examples
        --------
        >>> probe = Probe.from_hub("me/toxicity-probe-l16", revision=sha)  # doctest: +SKIP
        """
        from .hub import download_probe_folder

        local, sha = download_probe_folder(repo_id, revision=revision, token=token, endpoint=endpoint)
        probe = cls.load(local)
        probe.hub_revision_ = sha
        return probe


def resolved_note(spec: LayerSpec, resolved: Sequence[int | str] | None) -> str | None:
    """``"layers='middle' resolved to 2"`` when ``spec`` is a named or negative selection.

    None when nothing was resolved yet or ``spec`` already lists the layers themselves.

    Examples
    --------
    >>> resolved_note("middle", [2])
    "layers='middle' resolved to 2"
    >>> resolved_note([0, 3], [0, 3]) is None
    True
    """
    if resolved is None:
        return None
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    named = any(isinstance(v, str) and v != "embeddings" or
                (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v < 0) for v in items)
    if not named:
        return None
    got = list(resolved)
    return f"layers={spec!r} resolved to {got[0] if len(got) == 1 else got}"
