"""``actstore probe``, ``actstore sweep`` and ``actstore report``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..errors import InvalidArgumentError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the probe commands to the ``actstore`` parser."""
    p = sub.add_parser("probe", help="cross-validate (and save) a probe on one layer of a dataset")
    _common(p)
    p.add_argument("--layer", default=None, help="layer, comma list, 'all', 'middle', 'last' or "
                   "'embeddings' (default: the deepest stored block, printed)")
    p.add_argument("--save", help="fit on all rows and save the probe to this folder")
    p.set_defaults(handler=_probe)
    p = sub.add_parser("sweep", help="fit one probe per layer with k-fold CV; table and plot")
    _common(p)
    p.add_argument("--layers", default="all",
                   help="layers to sweep: comma list (e.g. 2,4,-1), 'all', 'middle' or 'last'")
    p.add_argument("--plot", help="write a PNG of the metric per layer")
    p.set_defaults(handler=_sweep)
    p = sub.add_parser("report", help="aggregate a results file (mean ± std per group)")
    p.add_argument("results", help="Parquet results file written by probe/sweep --results")
    p.add_argument("--by", default="dataset,layer,classifier",
                   help="comma list of result columns to group by")
    p.add_argument("--plot", help="write a PNG of the main metric per layer")
    p.set_defaults(handler=_report)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="dataset path or URL")
    p.add_argument("--label-column", default="label", help="index column holding the labels")
    p.add_argument("--view", default=None,
                   help="pooled view, e.g. last_token or mean (default: the dataset's first)")
    p.add_argument("--classifier", default="logistic_regression",
                   help="probe model, e.g. logistic_regression, ridge")
    p.add_argument("--task", default="classification", choices=["classification", "regression"],
                   help="what the labels are")
    p.add_argument("--cv", type=int, default=5, help="number of cross-validation folds")
    p.add_argument("--seed", type=int, default=0, help="random seed for folds and the probe")
    p.add_argument("--groups", help="column whose values never straddle folds")
    p.add_argument("--results", help="append one row per fold to this Parquet file")


def _layers(text: str, option: str = "--layers") -> Any:
    """``"2,4,-1"`` -> ``[2, 4, -1]``; ``"all"``/``"middle"``/``"last"``/``"embeddings"`` stay strings."""
    if text.strip() in ("all", "middle", "last", "embeddings"):
        return text.strip()
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        if not items:
            raise ValueError
        return [v if v == "embeddings" else int(v) for v in items]
    except ValueError:
        raise InvalidArgumentError(
            f"{option} {text!r} is not a layer list; give comma-separated integers (e.g. 2,4,-1), "
            "'embeddings', 'all', 'middle' or 'last'."
        ) from None


def _check_plot_path(path: str | None) -> None:
    """Refuse a ``--plot`` path that cannot be written, before any expensive work."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InvalidArgumentError(
            f"--plot {path!r}: the folder {folder!r} does not exist; create it or pick another path."
        )
    if not os.access(folder, os.W_OK):
        raise InvalidArgumentError(f"--plot {path!r}: the folder {folder!r} is not writable.")


def _check_results_file(path: str, by: list[str]) -> None:
    """Refuse a results file that is missing or not Parquet, and ``--by`` columns it lacks."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not os.path.isfile(path):
        raise InvalidArgumentError(
            f"No results file at {path!r}; write one with `actstore sweep DATASET --results {path}`."
        )
    try:
        columns = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError):
        raise InvalidArgumentError(
            f"{path!r} is not a Parquet results file; report reads the files that "
            "`actstore probe/sweep --results FILE.parquet` write."
        ) from None
    unknown = [c for c in by if c not in columns]
    if unknown:
        raise InvalidArgumentError(
            f"--by {','.join(unknown)}: no such column in {path!r}; choose from {', '.join(columns)}."
        )


def _context(args: argparse.Namespace, ds: Any) -> dict[str, Any]:
    return {"dataset": args.url, "revision": ds.info.revision, "view": args.view or ds.info.views[0],
            "classifier": args.classifier}


def _probe(args: argparse.Namespace) -> int:
    from .. import open_dataset
    from ..probe import Probe, append_results, cross_validate

    ds = open_dataset(args.url)
    if args.layer is None:  # say which layer the default picked (-1: the deepest stored block)
        from ..format.layersel import resolve_layer

        layers = [resolve_layer("last", ds.info.layers)]
        print(f"no --layer given: using layer {layers[0]} (the deepest stored block)", file=sys.stderr)
    else:
        layers = _layers(args.layer)
    frame = cross_validate(ds, args.label_column, layers=layers, cv=args.cv, seeds=[args.seed],
                           groups=args.groups, view=args.view, classifier=args.classifier, task=args.task)
    metrics = frame.drop(columns=["layers", "seed", "fold"]).mean(numeric_only=True)
    print(json.dumps({"layers": frame["layers"][0], **metrics.round(4).to_dict()}, indent=2))
    if args.results:
        ctx = _context(args, ds)
        rows = []
        for r in frame.to_dict("records"):
            single = "," not in r["layers"]
            rows.append({**ctx, "layer": int(r["layers"]) if single and r["layers"] != "embeddings" else None, **r})
        append_results(args.results, rows)
    if args.save:
        Probe(layers=layers, view=args.view, classifier=args.classifier, task=args.task,
              random_state=args.seed).fit(ds, args.label_column).save(args.save)
        print(f"saved probe to {args.save}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from .. import open_dataset
    from ..probe import append_results, sweep_layers

    layers = _layers(args.layers)
    _check_plot_path(args.plot)
    ds = open_dataset(args.url)
    sweep = sweep_layers(ds, args.label_column, layers=layers, cv=args.cv,
                         groups=args.groups, classifier=args.classifier, task=args.task,
                         view=args.view, seed=args.seed)
    cols = ["layer", f"{sweep.metric}_mean", f"{sweep.metric}_std"]
    print(sweep.to_frame()[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"best layer (validation folds): {sweep.best_layer}")
    if args.plot:
        print(f"plot: {sweep.plot(args.plot)}")
    if args.results:
        append_results(args.results, [{**_context(args, ds), **r} for r in sweep.results.to_dict("records")])
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..probe import report

    by = [c.strip() for c in args.by.split(",") if c.strip()]
    _check_results_file(args.results, by)
    _check_plot_path(args.plot)
    table = report(args.results, by=by)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.plot:
        _plot_report(table, args.plot)
        print(f"plot: {args.plot}")
    return 0


def _plot_report(table: Any, path: str) -> None:
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = next(c[: -len("_mean")] for c in table.columns if c in ("accuracy_mean", "r2_mean"))
    # multi-layer rows ("4,8") have no place on a layer axis; the table still shows them
    table = table.assign(layer=pd.to_numeric(table["layer"], errors="coerce")).dropna(subset=["layer"])
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = [c for c in ("dataset", "classifier") if c in table.columns]
    for key, part in (table.groupby(groups) if groups else [("all", table)]):
        ax.errorbar(part["layer"], part[f"{metric}_mean"], yerr=part[f"{metric}_std"],
                    marker="o", capsize=3, label=str(key))
    ax.set_xlabel("layer")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
