"""Cross-validation folds and lmprobe's sweep layer grammar: shared by probes, sweeps,
baselines and streaming fits, so every one of them splits rows the same way."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

from ..errors import InvalidArgumentError
from .data import FeatureSource, is_dataset
from .layers import LayerSpec

__all__ = ["make_folds", "sweep_spec"]


def make_folds(y: np.ndarray, cv: int, task: str, seed: int, groups: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/validation index pairs: stratified for classification, grouped when asked."""
    if cv < 2:
        raise InvalidArgumentError(f"cv must be at least 2 folds; got {cv}.")
    idx = np.zeros(len(y))
    if groups is not None:
        if len(np.unique(groups)) < cv:
            raise InvalidArgumentError(f"groups has {len(np.unique(groups))} distinct values; need >= cv={cv}.")
        splitter: Any = GroupKFold(n_splits=cv)
        return [(tr, va) for tr, va in splitter.split(idx, y, groups)]
    if task == "classification" and np.unique(y, return_counts=True)[1].min() >= cv:
        splitter = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=cv, shuffle=True, random_state=seed)
    return [(tr, va) for tr, va in splitter.split(idx, y)]


def _groups(data: FeatureSource, groups: str | ArrayLike | None) -> np.ndarray | None:
    if groups is None:
        return None
    if isinstance(groups, str):
        if not is_dataset(data):
            raise InvalidArgumentError("groups given as a column name needs a Dataset.")
        return data.column(groups)
    return np.asarray(groups)


def sweep_spec(layers: LayerSpec, held: list[int | str]) -> LayerSpec:
    """lmprobe's sweep grammar turned into a plain layer spec (other specs pass through).

    ``"sweep"`` is ``"all"``; ``"sweep:N"`` every N-th block from block 0 that is stored;
    ``"sweep:START-END"`` the stored blocks from START to END inclusive.

    Examples
    --------
    >>> sweep_spec("sweep:2", [0, 1, 2, 3, 4])
    [0, 2, 4]
    >>> sweep_spec("sweep:1-3", [0, 1, 2, 3, 4])
    [1, 2, 3]
    """
    if not isinstance(layers, str) or not layers.startswith("sweep"):
        return layers
    blocks = [L for L in held if isinstance(L, int) and L >= 0]
    if layers == "sweep":
        return "all"
    head, _, tail = layers.partition(":")
    try:
        if head != "sweep" or not tail:
            raise ValueError
        if "-" in tail:
            start, end = (int(v) for v in tail.split("-"))
            picked = [L for L in blocks if start <= L <= end]
        else:
            step = int(tail)
            if step < 1:
                raise ValueError
            picked = [L for L in blocks if L % step == 0]
    except ValueError:
        raise InvalidArgumentError(
            f"layer spec {layers!r} is not lmprobe's sweep grammar: use 'sweep', 'sweep:N' "
            "(N >= 1) or 'sweep:START-END'.") from None
    if not picked:
        raise InvalidArgumentError(f"layer spec {layers!r} selects none of the stored blocks {blocks}.")
    return picked
