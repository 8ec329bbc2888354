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
    """Mean ± std of each metric per group of a results file.

    Rows of multi-layer probes (``layer`` empty, ``layers`` = ``"4,8"``) are grouped under
    that list rather than dropped; groups whose key is missing stay as their own group.

    Examples
    --------
    >>> report("results.parquet", by=["dataset", "layer"])  # doctest: +SKIP
    """
    if not os.path.exists(path):
        raise InvalidArgumentError(f"No results file at {path!r}; run `actstore probe ... --results {path}` first.")
    frame = _layer_key(pd.read_parquet(path))
    keys = [k for k in by if k in frame.columns]
    skip = {"seed", "fold", "n", "timestamp", "layers", *keys}
    metrics = list(metrics or [c for c in frame.columns
                               if c not in skip and pd.api.types.is_numeric_dtype(frame[c])])
    if not keys:
        return pd.DataFrame([frame[metrics].mean().add_suffix("_mean")]).join(
            pd.DataFrame([frame[metrics].std(ddof=0).add_suffix("_std")])).assign(runs=len(frame))
    g = frame.groupby(keys, dropna=False)
    out = g[metrics].mean().add_suffix("_mean").join(g[metrics].std(ddof=0).add_suffix("_std"))
    return out.join(g.size().rename("runs")).reset_index()


def _layer_key(frame: pd.DataFrame) -> pd.DataFrame:
    """One ``layer`` key for single- and multi-layer rows: the int, or the ``"4,8"`` list."""
    if "layers" not in frame.columns or "layer" not in frame.columns:
        return frame
    single = frame["layer"].notna()
    if single.all():
        return frame
    layer = frame["layer"].astype(object)
    layer[single] = [int(v) for v in frame.loc[single, "layer"]]
    layer[~single] = frame.loc[~single, "layers"]
    return frame.assign(layer=layer.astype(str))
