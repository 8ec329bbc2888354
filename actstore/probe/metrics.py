"""Evaluation metrics for probes: classification (binary and multiclass) and regression."""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn import metrics as skm

__all__ = ["MAIN_METRICS", "classification_metrics", "evaluation_hash", "main_metric", "regression_metrics"]

#: The score a probe reports per task (``Probe.score``, a sweep's best layer, plots).
MAIN_METRICS = {"classification": "accuracy", "regression": "r2"}


def main_metric(task: str) -> str:
    """The main metric of ``task``: ``"accuracy"`` for classification, ``"r2"`` for regression.

    Examples
    --------
    >>> main_metric("regression")
    'r2'
    """
    return MAIN_METRICS["regression" if task == "regression" else "classification"]


def evaluation_hash(data: object, labels: np.ndarray) -> str:
    """``"sha256:..."`` naming the evaluation rows, as lmprobe's ``evaluate`` reports it.

    For a Dataset it is lmprobe's own hash: the sha256 of the sorted prompt texts and label
    strings joined by newlines, so the same prompts and labels give the same hash in both
    libraries. Arrays have no prompts: the hash covers their float32 bytes, shape and the
    label strings.

    Examples
    --------
    >>> evaluation_hash(np.zeros((2, 3)), np.array([0, 1]))[:7]
    'sha256:'
    """
    import hashlib

    from ..format.reader import Dataset

    label_strs = [str(v) for v in np.asarray(labels).tolist()]
    if isinstance(data, Dataset):
        combined = "\n".join(sorted(list(data.texts) + label_strs))
        return "sha256:" + hashlib.sha256(combined.encode()).hexdigest()
    arr = np.ascontiguousarray(np.asarray(data, dtype=np.float32))
    h = hashlib.sha256(repr(arr.shape).encode())
    h.update(arr.tobytes())
    h.update("\n".join(label_strs).encode())
    return "sha256:" + h.hexdigest()


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray | None,
                           classes: np.ndarray, *, scores_are_proba: bool = True) -> dict[str, float | int]:
    """accuracy, balanced accuracy, AUROC (one-vs-rest for multiclass), F1, precision, recall, n.

    Binary tasks use the positive class (the larger label); multiclass F1/precision/recall
    are macro averages. ``scores`` are class probabilities, or margins
    (``scores_are_proba=False``) that a multiclass AUROC turns into probabilities by softmax.
    AUROC is NaN when ``y_true`` lacks a class (it is undefined there).

    Examples
    --------
    >>> m = classification_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]),
    ...                            np.array([0.2, 0.9, 0.4]), np.array([0, 1]))
    >>> m["accuracy"], m["auroc"]
    (0.6666666666666666, 1.0)
    """
    if len(classes) == 2:
        return _binary_metrics(np.asarray(y_true), np.asarray(y_pred), scores, classes[1])
    out: dict[str, float | int] = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "f1": float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "precision": float(skm.precision_score(y_true, y_pred, average="macro", zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, average="macro", zero_division=0)),
        "n": int(len(y_true)),
    }
    auroc = float("nan")
    if scores is not None and len(np.unique(y_true)) == len(classes):
        if scores.ndim == 2:
            p = scores if scores_are_proba else _softmax(scores)
            auroc = float(skm.roc_auc_score(y_true, p, multi_class="ovr", labels=classes))
    out["auroc"] = auroc
    return out


def _binary_metrics(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray | None,
                    pos: object) -> dict[str, float | int]:
    """The binary metrics from confusion counts and ranks.

    Same values as scikit-learn's (tested), ~50x cheaper: a sweep evaluates every fold of
    every layer, and the validation in ``sklearn.metrics`` was ~15% of a 768-dim fit.
    """
    t, p = y_true == pos, y_pred == pos
    tp, fp, fn = int(np.sum(t & p)), int(np.sum(~t & p)), int(np.sum(t & ~p))
    tn = len(t) - tp - fp - fn
    n_pos, n_neg = tp + fn, tn + fp
    recalls = [r for r, present in ((tp / max(n_pos, 1), n_pos), (tn / max(n_neg, 1), n_neg)) if present]
    auroc = float("nan")
    if scores is not None and n_pos and n_neg:
        s = scores[:, 1] if scores.ndim == 2 else scores
        # Mann-Whitney U with average ranks for ties == the trapezoidal area under the ROC curve
        auroc = float((stats.rankdata(s)[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return {
        "accuracy": (tp + tn) / len(t),
        "balanced_accuracy": float(np.mean(recalls)),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / n_pos if n_pos else 0.0,
        "n": int(len(t)),
        "auroc": auroc,
    }


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | int]:
    """R², Pearson r, Spearman ρ, MSE, MAE and n."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    const = np.ptp(y_true) == 0 or np.ptp(y_pred) == 0
    return {
        "r2": float(skm.r2_score(y_true, y_pred)),
        "pearson_r": float("nan") if const else float(stats.pearsonr(y_true, y_pred)[0]),
        "spearman_rho": float("nan") if const else float(stats.spearmanr(y_true, y_pred)[0]),
        "mse": float(skm.mean_squared_error(y_true, y_pred)),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "n": int(len(y_true)),
    }
