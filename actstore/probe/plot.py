"""Plots of probe results: a metric per layer, for sweeps and for results reports.

matplotlib (the ``probe`` extra) is imported when a plot is drawn, with the ``Agg`` backend
(files, no display). Layers sit on the x axis by stored number, so the embeddings (``-1``)
come left of block 0 and are labelled by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from ..format.layersel import EMBEDDINGS, request, stored
from .metrics import MAIN_METRICS

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["LayerScores", "plot_layers", "plot_report"]


class LayerScores(Protocol):
    """What a plot reads of a sweep (:class:`~actstore.probe.SweepResult` is one)."""

    metric: str
    chance: float | None
    cv: int | None
    model: str | None
    view: str | None

    @property
    def best_layer(self) -> int | str: ...

    def to_frame(self) -> pd.DataFrame: ...


def _figure() -> tuple[Figure, Axes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4))


def _save(fig: Figure, path: str) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_layers(sweeps: Mapping[str, LayerScores] | Mapping[None, LayerScores], path: str, *, title: str | None = None,
                ylabel: str | None = None) -> str:
    """A PNG of each sweep's metric per layer: integer layer ticks, ±1 std clipped to the
    metric's range ([0, 1] for accuracy, at most 1 for R²), a chance line, and a y axis
    that starts at or below chance (no zoom onto the top of the range).

    ``sweeps`` maps a legend label (None: no label) to a sweep; returns ``path``.
    """
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    first = next(iter(sweeps.values()))
    metric = first.metric
    fig, ax = _figure()
    lows, layers = [], set()
    for label, sweep in sweeps.items():
        s = sweep.to_frame()
        mean, std = s[f"{metric}_mean"].to_numpy(), s[f"{metric}_std"].to_numpy()
        lower = np.minimum(std, mean - 0.0) if metric == "accuracy" else std
        upper = np.minimum(std, 1.0 - mean)
        xs = [stored(v) for v in s["layer"]]  # the embeddings sit at -1, left of block 0
        ax.errorbar(xs, mean, yerr=[np.maximum(lower, 0), np.maximum(upper, 0)], marker="o",
                    capsize=3, label=None if label is None else str(label))
        lows.append(float(np.min(mean - lower)))
        layers |= set(xs)
    chances = {round(sw.chance, 3) for sw in sweeps.values() if sw.chance is not None}
    for c in sorted(chances):
        ax.axhline(c, color="gray", linestyle="--", linewidth=1,
                   label=f"chance ({c:.2f})" if len(chances) == 1 else None)
    if len(sweeps) == 1:
        best = first.best_layer
        ax.axvline(stored(best), color="gray", linestyle=":", label=f"best layer {best}")
    ordered = sorted(layers)
    if len(ordered) <= 25:
        ax.set_xticks(ordered, [str(request(v)) for v in ordered])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom = min(lows + [min(chances) if chances else 0.0])
    if metric == "accuracy":
        ax.set_ylim(max(0.0, bottom - 0.05), 1.01)
    else:
        ax.set_ylim(bottom - 0.05, 1.01)
    ax.set_xlabel("layer")
    cv = f"{first.cv}-fold " if first.cv else ""
    ax.set_ylabel(ylabel or f"{cv}CV {metric} (mean ± std)")
    view = f", {first.view} view" if first.view else ""
    ax.set_title(title or f"Linear probe {metric} by layer — {first.model or 'activations'}{view}")
    ax.legend(fontsize=8)
    _save(fig, path)
    return path


def plot_report(table: pd.DataFrame, path: str) -> str:
    """A PNG of the main metric per layer of a :func:`~actstore.probe.report` table, one line
    per (dataset, classifier); returns ``path``.

    Multi-layer rows (``"4,8"``) have no place on a layer axis and are left out (the table
    still shows them); the embeddings sit at -1, left of block 0, and are labelled by name.
    """
    import pandas as pd
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    means = {f"{m}_mean" for m in MAIN_METRICS.values()}
    metric = next(c[: -len("_mean")] for c in table.columns if c in means)
    x = table["layer"].map(lambda v: -1 if v == EMBEDDINGS else v)
    table = table.assign(layer=pd.to_numeric(x, errors="coerce")).dropna(subset=["layer"])
    fig, ax = _figure()
    groups = [c for c in ("dataset", "classifier") if c in table.columns]
    for key, part in (table.groupby(groups) if groups else [("all", table)]):
        mean, std = part[f"{metric}_mean"], part[f"{metric}_std"]
        low = std.clip(upper=mean) if metric == "accuracy" else std  # bars stay in the range
        ax.errorbar(part["layer"], mean, yerr=[low.clip(lower=0), std.clip(upper=1 - mean).clip(lower=0)],
                    marker="o", capsize=3, label=str(key))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: EMBEDDINGS if v == -1 else f"{v:g}"))
    ax.set_xlabel("layer")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    _save(fig, path)
    return path
