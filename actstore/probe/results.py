"""A results table for probing runs: append rows to a Parquet file, then aggregate them."""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..errors import InvalidArgumentError
from ..format.durable import atomic_path
from ..format.layersel import EMBEDDINGS
from .plot import LayerScores, plot_layers  # noqa: F401 (plot_layers lived here; still importable)

__all__ = ["append_results", "plot_layers", "report", "sweep_html", "sweep_text"]


def append_results(path: str, rows: Sequence[Mapping[str, object]]) -> pd.DataFrame:
    """Append rows (dataset, revision, view, layer, classifier, seed, fold, metrics...) to a
    Parquet results file, stamping each with a UTC timestamp; the file is replaced atomically.

    A row's ``layer`` is a block number or ``"embeddings"``; a negative layer is refused (a
    results file cannot tell which block ``-1`` was). Once a file holds ``"embeddings"`` its
    ``layer`` column is text (``"0"``, ``"embeddings"``); :func:`report` orders it numerically.
    Files written before layers were named hold ``-1`` for the embeddings and are read so.
    """
    new = pd.DataFrame(list(rows))
    if "layer" in new.columns:
        new["layer"] = [_layer_value(v, legacy=False) for v in new["layer"]]
    new["timestamp"] = dt.datetime.now(dt.timezone.utc).isoformat()
    if os.path.exists(path):
        new = pd.concat([_named_layers(pd.read_parquet(path)), new], ignore_index=True)
    if "layer" in new.columns:
        new["layer"] = _layer_column(list(new["layer"]))
    with atomic_path(path) as tmp:
        new.to_parquet(tmp, index=False)
    return new


def _layer_value(value: Any, *, legacy: bool) -> int | str | None:
    """One ``layer`` cell as the API names it (``None`` for multi-layer rows)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text == EMBEDDINGS or not text.lstrip("-").isdigit():
            return text  # "embeddings", or a multi-layer key such as "4,8"
        value = int(text)
    number = int(value)
    if number < 0:
        if legacy and number == -1:  # the sweep wrote the embeddings' stored -1 before names
            return EMBEDDINGS
        raise InvalidArgumentError(
            f"A results row has layer {number}; name the embeddings 'embeddings' and give "
            "blocks by their number (a results file cannot tell which block a negative means)."
        )
    return number


def _layer_column(values: list[Any]) -> list[Any]:
    """Ints stay ints; with any name in the column, every layer becomes text (one Parquet type)."""
    if any(isinstance(v, str) for v in values):
        return [None if v is None else str(v) for v in values]
    return values


def _named_layers(frame: pd.DataFrame) -> pd.DataFrame:
    """A results file's ``layer`` column with the embeddings named (old files: ``-1``)."""
    if "layer" not in frame.columns:
        return frame
    return frame.assign(layer=_layer_column([_layer_value(v, legacy=True) for v in frame["layer"]]))


def _layer_order(value: Any) -> float:
    """Sort key of a ``layer`` cell: the embeddings, then blocks by number, then lists."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.inf
    text = str(value).strip()
    if text == EMBEDDINGS:
        return -1.0
    return float(text) if text.lstrip("-").replace(".", "", 1).isdigit() else math.inf


def report(path: str, by: Sequence[str] = ("dataset", "layer", "classifier"),
           metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean ± std of each metric per group of a results file.

    Rows of multi-layer probes (``layer`` empty, ``layers`` = ``"4,8"``) are grouped under
    that list rather than dropped; groups whose key is missing stay as their own group.
    Layers come in numeric order, the embeddings (``"embeddings"``; ``-1`` in files written
    before layers were named) first.

    Examples
    --------
    >>> report("results.parquet", by=["dataset", "layer"])  # doctest: +SKIP
    """
    if not os.path.exists(path):
        raise InvalidArgumentError(f"No results file at {path!r}; run `actstore probe ... --results {path}` first.")
    frame = _layer_key(_named_layers(pd.read_parquet(path)))
    keys = [k for k in by if k in frame.columns]
    skip = {"seed", "fold", "n", "timestamp", "layers", *keys}
    metrics = list(metrics or [c for c in frame.columns
                               if c not in skip and pd.api.types.is_numeric_dtype(frame[c])])
    if not keys:
        return pd.DataFrame([frame[metrics].mean().add_suffix("_mean")]).join(
            pd.DataFrame([frame[metrics].std(ddof=0).add_suffix("_std")])).assign(runs=len(frame))
    g = frame.groupby(keys, dropna=False)
    out = g[metrics].mean().add_suffix("_mean").join(g[metrics].std(ddof=0).add_suffix("_std"))
    out = out.join(g.size().rename("runs")).reset_index()
    if "layer" in keys and not pd.api.types.is_numeric_dtype(out["layer"]):
        # text layers sort as text ("10" < "2"); order them as numbers, the embeddings first
        out = out.sort_values(keys, key=lambda c: c.map(_layer_order) if c.name == "layer" else c,
                              kind="stable", ignore_index=True)
    return out


def _layer_key(frame: pd.DataFrame) -> pd.DataFrame:
    """One ``layer`` key for single- and multi-layer rows: the int, or the ``"4,8"`` list."""
    if "layers" not in frame.columns or "layer" not in frame.columns:
        return frame
    single = frame["layer"].notna()
    if single.all():
        return frame
    layer = frame["layer"].astype(object)
    layer[single] = [_name(v) for v in frame.loc[single, "layer"]]
    layer[~single] = frame.loc[~single, "layers"]
    return frame.assign(layer=layer.astype(str))


def _name(layer: Any) -> int | str:
    """A layer as the API names it: ``"embeddings"`` or the block number as an int."""
    return layer if isinstance(layer, str) else int(layer)


def _describe(sweep: LayerScores) -> str:
    bits = [f"{sweep.cv}-fold CV" if sweep.cv else None,
            f"{sweep.view} view" if sweep.view else None,
            f"chance {sweep.chance:.3f}" if sweep.chance is not None else None]
    return ", ".join(b for b in bits if b)


def _best_first(sweep: LayerScores) -> pd.DataFrame:
    # to_frame is in numeric layer order ("embeddings" first): a stable sort on the score
    # alone keeps the shallower layer first on ties, with no str/int comparison
    s = sweep.to_frame()[["layer", f"{sweep.metric}_mean", f"{sweep.metric}_std"]]
    return s.sort_values(f"{sweep.metric}_mean", ascending=False, kind="stable")


def sweep_text(sweep: LayerScores, max_rows: int = 12) -> str:
    """``repr(sweep)``: the best layer first, then every layer by score (best first)."""
    table = _best_first(sweep)
    best = table.iloc[0]
    head = (f"SweepResult({sweep.model + ': ' if sweep.model else ''}best layer {_name(best['layer'])}"
            f", {sweep.metric} {best.iloc[1]:.4f} ± {best.iloc[2]:.4f}; {len(table)} layers"
            f"{'; ' + _describe(sweep) if _describe(sweep) else ''})")
    shown = table.head(max_rows).to_string(index=False, float_format=lambda v: f"{v:.4f}")
    more = f"\n  ... {len(table) - max_rows} more layers (sweep.to_frame())" if len(table) > max_rows else ""
    return head + "\n" + "\n".join("  " + line for line in shown.splitlines()) + more


def sweep_html(sweep: LayerScores) -> str:
    """An HTML table for notebooks: the best layer first."""
    import html

    table = _best_first(sweep)
    best = _name(table.iloc[0]["layer"])
    cap = html.escape(f"{sweep.model + ': ' if sweep.model else ''}best layer {best} "
                      f"({sweep.metric}; {_describe(sweep)})")
    body = table.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0)
    return f"<div><b>SweepResult</b> — {cap}{body}</div>"
