"""A results table for probing runs: append rows to a Parquet file, then aggregate them."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..errors import InvalidArgumentError

__all__ = ["append_results", "report"]


def append_results(path: str, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Append rows (dataset, revision, view, layer, classifier, seed, fold, metrics...) to a
    Parquet results file, stamping each with a UTC timestamp; the file is replaced atomically."""
    new = pd.DataFrame(list(rows))
    new["timestamp"] = dt.datetime.now(dt.timezone.utc).isoformat()
    if os.path.exists(path):
        new = pd.concat([pd.read_parquet(path), new], ignore_index=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    new.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return new


def report(path: str, by: Sequence[str] = ("dataset", "layer", "classifier"),
           metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean ± std of each metric per group of a results file."""
    if not os.path.exists(path):
        raise InvalidArgumentError(f"No results file at {path!r}; run `actstore probe ... --results {path}` first.")
    frame = pd.read_parquet(path)
    keys = [k for k in by if k in frame.columns]
    skip = {"seed", "fold", "n", "timestamp", *keys}
    metrics = list(metrics or [c for c in frame.columns
                               if c not in skip and pd.api.types.is_numeric_dtype(frame[c])])
    g = frame.groupby(keys)[metrics] if keys else frame[metrics]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=0).add_suffix("_std")) if keys else None
    if out is None:
        out = pd.DataFrame([frame[metrics].mean().add_suffix("_mean")]).join(
            pd.DataFrame([frame[metrics].std(ddof=0).add_suffix("_std")]))
    runs = frame.groupby(keys).size().rename("runs") if keys else None
    return out.join(runs).reset_index() if runs is not None else out
