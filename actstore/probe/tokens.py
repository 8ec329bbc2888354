"""Token-level pooling of probes on full-sequence datasets (lmprobe's ``train_pooling`` /
``inference_pooling``).

Training with ``"all"`` makes every real token of each row a sample (a row's tokens are
exactly what ``ds.tokens(row, layer)`` returns: never padding); ``"last_token"``,
``"first_token"`` and ``"mean"`` pool each row's tokens first. At inference, score pooling
(``"max"``, ``"min"``, ``"score:mean"``, ...) scores every token and reduces the scores per
row; activation pooling (``"mean"``, ``"activation:max"``, ...) pools the tokens and scores
once. Rows are read one at a time (:func:`row_tokens`, the one place that reads tokens), so
inference memory is bounded by one batch of tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from ..errors import InvalidArgumentError, LayerNotFoundError
from ..format import spec
from ..format.reader import Dataset
from .layers import request

__all__ = ["BASES", "TRAIN_POOLINGS", "Pooling", "check_train_pooling", "iter_token_batches",
           "parse_inference_pooling", "pool_tokens", "reduce_scores", "require_full_sequence",
           "row_tokens", "token_features"]

#: The pooling operations over a row's tokens (lmprobe's base strategies).
BASES = ("last_token", "first_token", "mean", "max", "min")
#: ``train_pooling`` values: ``"all"`` (every token a sample) or a pooling of each row.
TRAIN_POOLINGS = ("all", "last_token", "first_token", "mean")
_SCORE_BY_DEFAULT = ("max", "min")  # lmprobe: bare "max"/"min" reduce scores, the rest activations
_BATCH_TOKENS = 8192  # tokens scored at once at inference


class Pooling(NamedTuple):
    """A parsed ``inference_pooling``: the base operation and whether it reduces scores."""

    base: str
    score: bool


def check_train_pooling(value: str | None) -> str | None:
    """``train_pooling`` checked: None or one of :data:`TRAIN_POOLINGS`."""
    if value is not None and value not in TRAIN_POOLINGS:
        raise InvalidArgumentError(
            f"train_pooling must be None (the dataset's pooled view) or one of {list(TRAIN_POOLINGS)}; "
            f"got {value!r}.")
    return value


def parse_inference_pooling(value: str | None) -> Pooling | None:
    """``inference_pooling`` parsed as lmprobe does (None: the dataset's pooled view).

    Examples
    --------
    >>> parse_inference_pooling("max")
    Pooling(base='max', score=True)
    >>> parse_inference_pooling("activation:max")
    Pooling(base='max', score=False)
    >>> parse_inference_pooling("score:mean")
    Pooling(base='mean', score=True)
    """
    if value is None:
        return None
    if isinstance(value, str):
        prefix, sep, base = value.partition(":")
        if not sep:
            prefix, base = ("score" if value in _SCORE_BY_DEFAULT else "activation"), value
        if prefix in ("score", "activation") and base in BASES:
            return Pooling(base, prefix == "score")
    raise InvalidArgumentError(
        f"inference_pooling must be None (the dataset's pooled view), one of {list(BASES)} (bare "
        "'max'/'min' reduce token scores, the others pool activations), or one of them prefixed "
        f"'score:' or 'activation:' (e.g. 'score:mean', 'activation:max'); got {value!r}.")


def require_full_sequence(data: object, what: str) -> Dataset:
    """``data`` as a full-sequence Dataset, or a clear refusal naming ``what`` needs it."""
    if not isinstance(data, Dataset):
        raise InvalidArgumentError(
            f"{what} pools each row's tokens, which needs a full-sequence Dataset "
            "(DatasetWriter(pooling='all') or extract(pooling='all')); with arrays of pooled "
            "or per-token features, set it to None.")
    storage = data.info.storage
    if storage != spec.STORAGE_FULL:
        raise LayerNotFoundError(
            f"{what} needs every token's state, but this dataset stores {storage!r} views "
            f"{list(data.info.views)}; extract with pooling='all' (or set it to None).")
    return data


def row_tokens(ds: Dataset, row: int, layers: Sequence[int | str]) -> np.ndarray:
    """Every real token of one row at ``layers``, ``(n_tokens, len(layers), dim)`` float32.

    The single place probes read tokens (``ds.tokens``), so a faster token layout changes
    only this function. Non-finite values are refused, as for pooled features.
    """
    parts = [ds.tokens(row, request(L), dtype=np.float32) for L in layers]
    if len({p.shape[0] for p in parts}) != 1:
        raise InvalidArgumentError(
            f"row {row} has {[p.shape[0] for p in parts]} tokens at layers {list(layers)}; every "
            "layer of a row must hold the same tokens (the dataset is damaged).")
    out = np.stack(parts, axis=1)
    if not np.isfinite(out).all():
        raise InvalidArgumentError(
            f"row {row} holds NaN or infinite token values; probes need finite activations.")
    return out


def pool_tokens(tokens: np.ndarray, base: str) -> np.ndarray:
    """One row's ``(n_tokens, k, dim)`` tokens pooled to ``(k, dim)`` by ``base``."""
    if base == "last_token":
        return tokens[-1]
    if base == "first_token":
        return tokens[0]
    if base == "mean":
        return tokens.mean(axis=0, dtype=np.float64).astype(np.float32)
    if base == "max":
        return tokens.max(axis=0)
    if base == "min":
        return tokens.min(axis=0)
    raise InvalidArgumentError(f"unknown token pooling {base!r}; expected one of {list(BASES)}.")


def reduce_scores(scores: np.ndarray, base: str) -> np.ndarray:
    """One row's per-token scores ``(n_tokens, ...)`` reduced over tokens by ``base``."""
    if base == "last_token":
        return scores[-1]
    if base == "first_token":
        return scores[0]
    if base == "mean":
        return scores.mean(axis=0)
    if base == "max":
        return scores.max(axis=0)
    if base == "min":
        return scores.min(axis=0)
    raise InvalidArgumentError(f"unknown score pooling {base!r}; expected one of {list(BASES)}.")


def token_features(ds: Dataset, layers: Sequence[int | str], pooling: str) -> tuple[np.ndarray, np.ndarray]:
    """Training features of a full-sequence dataset under ``train_pooling``.

    Returns
    -------
    feats : numpy.ndarray
        ``(n_samples, len(layers), dim)`` float32: every real token of every row for
        ``"all"`` (rows in order, tokens in order), else one pooled sample per row.
    rows : numpy.ndarray
        ``(n_samples,)`` int64: the row each sample comes from (the CV groups).
    """
    if pooling != "all":
        feats = np.empty((len(ds), len(layers), ds.info.dim), dtype=np.float32)
        for r in range(len(ds)):
            feats[r] = pool_tokens(row_tokens(ds, r, layers), pooling)
        return feats, np.arange(len(ds), dtype=np.int64)
    blocks, counts = [], []
    for r in range(len(ds)):
        t = row_tokens(ds, r, layers)
        blocks.append(t)
        counts.append(t.shape[0])
    feats = np.concatenate(blocks) if blocks else np.empty((0, len(layers), ds.info.dim), np.float32)
    return feats, np.repeat(np.arange(len(ds), dtype=np.int64), counts)


def iter_token_batches(ds: Dataset, layers: Sequence[int | str],
                       max_tokens: int = _BATCH_TOKENS) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Rows' tokens in batches of about ``max_tokens``: ``(tokens (T, k, dim), per-row counts)``.

    A row is never split; a row longer than ``max_tokens`` is a batch of its own.
    """
    blocks: list[np.ndarray] = []
    counts: list[int] = []
    for r in range(len(ds)):
        t = row_tokens(ds, r, layers)
        blocks.append(t)
        counts.append(t.shape[0])
        if sum(counts) >= max_tokens:
            yield np.concatenate(blocks), counts
            blocks, counts = [], []
    if blocks:
        yield np.concatenate(blocks), counts
