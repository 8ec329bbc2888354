"""Control tasks (Hewitt & Liang, 2019): is the probe reading the representation, or memorising?

Control labels keep the label distribution but break the link to the input: each distinct
value of a chosen column (e.g. the word type) gets a random label, or the labels are simply
shuffled. Selectivity = task score − control score under the same protocol.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InvalidArgumentError
from .data import FeatureSource, LabelSource, is_dataset, labels_for, load_features
from .estimator import check_targets
from .layers import LayerSpec, request
from .sweep import cross_validate, layers_keyword

__all__ = ["control_labels", "control_task"]


def control_labels(y: np.ndarray, by: np.ndarray | None, seed: int) -> np.ndarray:
    """Random labels: one per distinct value of ``by``, drawn from ``y``'s distribution,
    or a permutation of ``y`` when ``by`` is None."""
    rng = np.random.default_rng(seed)
    if by is None:
        return rng.permutation(y)
    values, inverse = np.unique(by, return_inverse=True)
    drawn = rng.choice(y, size=len(values), replace=True)
    return drawn[inverse]


def control_task(
    data: FeatureSource,
    y: LabelSource = None,
    *,
    layers: LayerSpec = -1,
    by: str | ArrayLike | None = None,
    cv: int = 5,
    seeds: Iterable[int] = range(3),
    view: str | None = None,
    **probe_params: Any,
) -> dict[str, float | list[int | str]]:
    """Task score, control score and selectivity (mean accuracy over seeds and folds), and
    the layers used (``"layers"``: block numbers, ``"embeddings"`` by name).

    Parameters
    ----------
    by : str or array, optional
        Column (or values) whose each distinct value gets one random control label; None
        shuffles the labels instead.
    layers : layer spec
        Which layers (default: the deepest stored block); ``layer=`` is a deprecated alias.

    Examples
    --------
    >>> import actstore
    >>> ds = actstore.open_dataset("acts/pos-tags")             # doctest: +SKIP
    >>> actstore.control_task(ds, "label", layers=8, by="word")  # doctest: +SKIP
    {'task_score': 0.97, 'control_score': 0.71, 'selectivity': 0.26, 'layers': [8]}
    """
    layers = layers_keyword("control_task", layers, probe_params.pop("layer", None))
    X, chosen = load_features(data, layers, view)
    yv = labels_for(data, y, X.shape[0])
    check_targets(yv, probe_params.get("task", "classification"))
    if probe_params.get("task", "classification") != "classification":
        raise InvalidArgumentError("control_task compares accuracies; use a classification task.")
    group = None
    if by is not None:
        group = data.column(by) if isinstance(by, str) and is_dataset(data) else np.asarray(by)
        if len(group) != len(yv):
            raise InvalidArgumentError(f"by has {len(group)} values but there are {len(yv)} rows.")
    seeds = list(seeds)
    flat = X.reshape(X.shape[0], -1)
    task = cross_validate(flat, yv, layers=0, cv=cv, seeds=seeds, **probe_params)
    control = [
        cross_validate(flat, control_labels(yv, group, 1000 + s), layers=0, cv=cv, seeds=[s], **probe_params)
        for s in seeds
    ]
    task_score = float(task["accuracy"].mean())
    control_score = float(np.mean([c["accuracy"].mean() for c in control]))
    return {"task_score": task_score, "control_score": control_score,
            "selectivity": task_score - control_score, "layers": [request(L) for L in chosen]}
