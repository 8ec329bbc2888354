"""Ensembles of probes: several configurations, or one configuration on bootstrap resamples.

An ensemble's spread says how much a probe's answer depends on the sample it was trained on
(bootstrap) or on choices the researcher made (configurations: classifier, layers,
preprocessing). Members are ordinary :class:`Probe` objects, so an ensemble saves as a
folder of saved probes plus a small JSON file: no pickle, like every probe here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, InvalidArgumentError, NotFittedError
from ..format.durable import atomic_write
from .data import labels_for, load_features
from .estimator import Probe, check_targets
from .metrics import classification_metrics

__all__ = ["ProbeEnsemble"]

_FORMAT = "actstore.probe_ensemble/1"
_MAX_MEMBERS = 10_000


class ProbeEnsemble:
    """Soft or hard voting over probes fitted from configurations or bootstrap resamples.

    Parameters
    ----------
    configs : sequence of dict, optional
        One :class:`Probe` configuration per member (``from_configs``).
    base : dict, optional
        The configuration every bootstrap member shares (``bootstrap``).
    n_bootstrap : int, optional
        Number of bootstrap members; with ``base``.
    voting : {"soft", "hard"}
        Soft: the weighted mean of the members' probabilities. Hard: the weighted share of
        members voting for each class.
    weights : sequence of float, optional
        One non-negative weight per member (default equal).
    groups : str or array, optional
        Bootstrap resamples whole groups (rows with the same value), so that near-duplicate
        rows never sit in a member's sample more often than their group was drawn.
    random_state : int, optional
        Seeds the resamples and the members.

    Examples
    --------
    >>> import actstore
    >>> ens = actstore.ProbeEnsemble.bootstrap({"layers": 8}, n=10, random_state=0)   # doctest: +SKIP
    >>> ens.fit(ds, "label").predict_proba(test)                                     # doctest: +SKIP
    >>> ens.prediction_std(test)          # how much the members disagree, per row   # doctest: +SKIP
    """

    def __init__(self, configs: Sequence[Mapping[str, Any]] | None = None, *,
                 base: Mapping[str, Any] | None = None, n_bootstrap: int | None = None,
                 voting: str = "soft", weights: Sequence[float] | None = None,
                 groups: Any = None, random_state: int | None = None) -> None:
        self.configs = configs
        self.base = base
        self.n_bootstrap = n_bootstrap
        self.voting = voting
        self.weights = weights
        self.groups = groups
        self.random_state = random_state

    @classmethod
    def from_configs(cls, configs: Sequence[Mapping[str, Any]], **kwargs: Any) -> ProbeEnsemble:
        """One member per configuration, each fitted on all the training rows."""
        return cls(configs, **kwargs)

    @classmethod
    def bootstrap(cls, base: Mapping[str, Any] | None = None, n: int = 10, **kwargs: Any) -> ProbeEnsemble:
        """``n`` members of one configuration, each fitted on a bootstrap resample."""
        return cls(base=dict(base or {}), n_bootstrap=n, **kwargs)

    # -- fitting ----------------------------------------------------------------------
    def fit(self, data: Any, y: Any = None) -> ProbeEnsemble:
        """Fit every member; returns the ensemble."""
        members = self._plan()
        if self.voting not in ("soft", "hard"):
            raise InvalidArgumentError(f"voting must be 'soft' or 'hard'; got {self.voting!r}.")
        n = len(data) if hasattr(data, "info") else np.asarray(data).shape[0]
        yv = labels_for(data, y, n)
        check_targets(yv, "classification")
        rng = np.random.default_rng(self.random_state)
        seed = 0 if self.random_state is None else int(self.random_state)
        fitted, cache = [], {}
        for i, (params, resample) in enumerate(members):
            params = {"random_state": seed + i, **params}
            if params.get("task", "classification") != "classification":
                raise InvalidArgumentError("ProbeEnsemble votes over classifiers; got a member "
                                           f"with task={params['task']!r}.")
            key = (repr(params.get("layers", -1)), params.get("view"))
            if key not in cache:  # members sharing layers and view read them once
                cache[key] = load_features(data, params.get("layers", -1), params.get("view"))
            X, chosen = cache[key]
            rows = self._resample(rng, data, n, yv) if resample else np.arange(n)
            probe = Probe(**{**params, "layers": chosen})
            fitted.append(probe.fit(X[rows], yv[rows], layers=chosen))
        classes = [tuple(p.classes_.tolist()) for p in fitted]
        if len(set(classes)) != 1:
            raise InvalidArgumentError(
                "the members were fitted on different classes (a bootstrap resample missed a "
                f"class: {sorted(set(classes))}); use more rows per class or groups=None.")
        self.members_ = fitted
        self.classes_ = fitted[0].classes_
        self.weights_ = self._weights(len(fitted))
        return self

    def _plan(self) -> list[tuple[dict[str, Any], bool]]:
        if self.configs is not None and self.base is not None:
            raise InvalidArgumentError("give configs= (from_configs) or base= with n_bootstrap= "
                                       "(bootstrap), not both.")
        if self.configs is not None:
            if not self.configs:
                raise InvalidArgumentError("configs is empty; an ensemble needs at least one member.")
            return [(dict(c), False) for c in self.configs]
        n = self.n_bootstrap
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= _MAX_MEMBERS:
            raise InvalidArgumentError(f"n_bootstrap must be an int in [1, {_MAX_MEMBERS}]; got {n!r}.")
        return [(dict(self.base or {}), True)] * n

    def _resample(self, rng: np.random.Generator, data: Any, n: int, y: np.ndarray) -> np.ndarray:
        if self.groups is None:
            return rng.integers(0, n, n)
        g = np.asarray(data.column(self.groups) if isinstance(self.groups, str) else self.groups)
        if g.shape != (n,):
            raise InvalidArgumentError(f"groups must hold one value per row ({n}); got shape {g.shape}.")
        uniq, inverse = np.unique(g, return_inverse=True)
        drawn = rng.integers(0, len(uniq), len(uniq))
        by_group = [np.flatnonzero(inverse == k) for k in range(len(uniq))]
        return np.concatenate([by_group[k] for k in drawn])

    def _weights(self, k: int) -> np.ndarray:
        if self.weights is None:
            return np.full(k, 1.0 / k)
        w = np.asarray(self.weights, dtype=np.float64)
        if w.shape != (k,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise InvalidArgumentError(
                f"weights must be {k} finite non-negative numbers (one per member) with a "
                f"positive sum; got {self.weights!r}.")
        return w / w.sum()

    # -- predicting -------------------------------------------------------------------
    def _check(self) -> None:
        if not hasattr(self, "members_"):
            raise NotFittedError("This ProbeEnsemble is not fitted yet; call fit(data, y) first.")

    def _member_proba(self, data: Any) -> np.ndarray:
        """(members, rows, classes): each member's probabilities (or one-hot votes)."""
        self._check()
        out = []
        for p in self.members_:
            if self.voting == "soft":
                out.append(p.predict_proba(data))
            else:
                pred = p.predict(data)
                out.append((pred[:, None] == self.classes_[None, :]).astype(np.float64))
        return np.stack(out)

    def predict_proba(self, data: Any) -> np.ndarray:
        """Weighted mean of the members' probabilities (soft) or votes (hard), (rows, classes)."""
        P = self._member_proba(data)  # checks the ensemble is fitted first
        return np.tensordot(self.weights_, P, axes=1)

    def predict(self, data: Any) -> np.ndarray:
        """The class with the largest ensemble probability (or vote share)."""
        proba = self.predict_proba(data)  # checks the ensemble is fitted first
        return self.classes_[proba.argmax(1)]

    def prediction_std(self, data: Any) -> np.ndarray:
        """Weighted standard deviation over members of the positive-class probability (binary),
        or of each class's probability (multiclass: (rows, classes))."""
        P = self._member_proba(data)
        mean = np.tensordot(self.weights_, P, axes=1)
        var = np.tensordot(self.weights_, (P - mean) ** 2, axes=1)
        std = np.sqrt(var)
        return std[:, 1] if len(self.classes_) == 2 else std

    def score(self, data: Any, y: Any = None) -> float:
        """Accuracy of :meth:`predict`."""
        n = len(data) if hasattr(data, "info") else np.asarray(data).shape[0]
        return float(np.mean(self.predict(data) == labels_for(data, y, n)))

    def evaluate(self, data: Any, y: Any = None) -> dict[str, Any]:
        """The probe metrics (accuracy, AUROC, F1, ...) of the ensemble."""
        n = len(data) if hasattr(data, "info") else np.asarray(data).shape[0]
        proba = self.predict_proba(data)
        yv = labels_for(data, y, n)
        return classification_metrics(yv, self.classes_[proba.argmax(1)], proba, self.classes_)

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """A folder: ``ensemble.json`` and one saved probe per member (``member_000``, ...)."""
        self._check()
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(self.members_):
            p.save(str(root / f"member_{i:03d}"))
        meta = {"format": _FORMAT, "voting": self.voting, "members": len(self.members_),
                "weights": self.weights_.tolist()}
        atomic_write(root / "ensemble.json", json.dumps(meta, indent=2))  # last: a half-saved folder does not load

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ProbeEnsemble:
        """Load what :meth:`save` wrote, checking every field before use."""
        root = Path(path)
        file = root / "ensemble.json"
        try:
            meta = json.loads(file.read_text())
        except FileNotFoundError as exc:
            raise FormatError(f"{file} does not exist: not a saved ProbeEnsemble folder.") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError(f"{file} is not valid JSON: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise FormatError(f"{file}: expected format {_FORMAT!r}; got {meta.get('format') if isinstance(meta, dict) else meta!r}.")
        k, voting, weights = meta.get("members"), meta.get("voting"), meta.get("weights")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= _MAX_MEMBERS:
            raise FormatError(f"{file}: 'members' must be an int in [1, {_MAX_MEMBERS}]; got {k!r}.")
        if voting not in ("soft", "hard"):
            raise FormatError(f"{file}: 'voting' must be 'soft' or 'hard'; got {voting!r}.")
        if (not isinstance(weights, list) or len(weights) != k
                or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights)):
            raise FormatError(f"{file}: 'weights' must be a list of {k} numbers.")
        ens = cls(voting=voting, weights=weights)
        ens.members_ = [Probe.load(str(root / f"member_{i:03d}")) for i in range(k)]
        classes = {tuple(np.asarray(p.classes_).tolist()) for p in ens.members_}
        if len(classes) != 1:
            raise FormatError(f"{root}: the members predict different classes {sorted(classes)}.")
        ens.classes_ = ens.members_[0].classes_
        try:
            ens.weights_ = ens._weights(k)
        except InvalidArgumentError as exc:
            raise FormatError(f"{file}: {exc}") from exc
        return ens

    def __repr__(self) -> str:
        if hasattr(self, "members_"):
            return f"ProbeEnsemble({len(self.members_)} members, voting={self.voting!r})"
        kind = f"{len(self.configs)} configs" if self.configs is not None else f"bootstrap n={self.n_bootstrap}"
        return f"ProbeEnsemble({kind}, voting={self.voting!r}, not fitted)"
