"""``actstore probe``, ``actstore sweep`` and ``actstore report``."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

from ..errors import InvalidArgumentError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the probe commands to the ``actstore`` parser."""
    p = sub.add_parser("probe", help="cross-validate (and save) a probe on one layer of a dataset")
    _common(p)
    p.add_argument("--layers", "--layer", dest="layer", default=None, metavar="LAYERS",
                   help="layer or comma list (e.g. 16 or 4,8,-1), 'all', 'middle', 'last' or "
                        "'embeddings', as in sweep (--layer is the same option; default: the "
                        "deepest stored block, printed)")
    p.add_argument("--save", help="fit on the training rows (all rows without a held-out split) "
                                  "and save the probe to this folder")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--test-size", type=float, default=None, metavar="FRACTION",
                       help="hold out this fraction of rows (stratified, seeded by --seed): "
                            "cross-validate and fit on the rest, report accuracy on these")
    split.add_argument("--test-rows", default=None, metavar="START:STOP",
                       help="hold out these row positions (e.g. 800: or 0:100) instead")
    negative_lists(p)
    p.set_defaults(handler=_probe)
    p = sub.add_parser("predict", help="predict with a saved probe on a dataset's rows")
    p.add_argument("probe", help="folder of a probe saved with `actstore probe --save`")
    p.add_argument("dataset", help="dataset path or URL (same model and view as the probe's)")
    p.add_argument("--out", default=None,
                   help="write predictions to this .csv or .parquet file (default: print a summary)")
    p.set_defaults(handler=_predict)
    p = sub.add_parser("sweep", help="fit one probe per layer with k-fold CV; table and plot")
    _common(p)
    p.add_argument("--layers", default="all",
                   help="layers to sweep: comma list (e.g. embeddings,2,4,-1), 'all', 'middle' or 'last'")
    p.add_argument("--plot", help="write a PNG of the metric per layer")
    p.add_argument("--no-progress", action="store_true", help="no bar of the layers done")
    negative_lists(p)
    p.set_defaults(handler=_sweep)
    p = sub.add_parser("report", help="aggregate a results file (mean ± std per group)")
    p.add_argument("results", help="Parquet results file written by probe/sweep --results")
    p.add_argument("--by", default="dataset,layer,classifier",
                   help="comma list of result columns to group by")
    p.add_argument("--plot", help="write a PNG of the main metric per layer")
    p.set_defaults(handler=_report)


def negative_lists(p: argparse.ArgumentParser) -> None:
    """Let ``--layers -1,-2`` take ``-1,-2`` as its value, as it takes ``-1``.

    argparse reads an argument starting with ``-`` as an option unless it looks like one
    negative number, so a layer list that starts with a negative layer failed with
    "expected one argument". No option of these commands looks like a number.
    """
    p._negative_number_matcher = re.compile(r"^-\d+(,\s*-?\d+)*,?$")  # type: ignore[attr-defined]


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


def say_resolved(spec: Any, available: Any, option: str) -> None:
    """One stderr line naming the layers ``"middle"``/``"last"``/a negative number became.

    Nothing for explicit layer numbers, ``"embeddings"`` and ``"all"`` (the output lists
    those); an unknown layer is left to the command itself to refuse.
    """
    from ..format.layersel import request, resolve_layers

    items = spec if isinstance(spec, list) else [spec]
    named = [v for v in items if v in ("middle", "last") or (isinstance(v, int) and v < 0)]
    if not named:
        return
    try:
        got = [request(L) for L in resolve_layers(spec, available)]
    except ValueError:  # InvalidArgumentError: the command raises it with its own context
        return
    shown = ",".join(str(v) for v in items)
    which = got[0] if len(got) == 1 else ", ".join(map(str, got))
    print(f"{option} {shown}: using layer{'s' if len(got) > 1 else ''} {which} "
          f"(of the stored blocks {_blocks(available)})", file=sys.stderr)


def _blocks(available: Any) -> str:
    from ..format.layersel import blocks_of

    b = blocks_of(available)
    return f"{b[0]}–{b[-1]}" if len(b) > 2 and b == list(range(b[0], b[-1] + 1)) else \
        ", ".join(map(str, b))


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


def _split(args: argparse.Namespace, ds: Any) -> tuple[Any, Any]:
    """(training rows, held-out rows or None) per ``--test-size`` / ``--test-rows``."""
    import numpy as np

    from ..errors import InvalidArgumentError

    n = len(ds)
    if args.test_rows is not None:
        try:
            lo, hi = (int(v) if v.strip() else None for v in args.test_rows.split(":"))
        except ValueError:
            raise InvalidArgumentError(
                f"--test-rows must look like START:STOP (e.g. 800: or 0:100); got {args.test_rows!r}."
            ) from None
        test = np.arange(n)[slice(lo, hi)]
    elif args.test_size is not None:
        if not 0 < args.test_size < 1:
            raise InvalidArgumentError(
                f"--test-size must be a fraction between 0 and 1 (e.g. 0.2); got {args.test_size}."
            )
        from sklearn.model_selection import train_test_split

        y = ds.column(args.label_column) if args.label_column else None
        strat = y if args.task == "classification" and y is not None and \
            np.unique(y, return_counts=True)[1].min() >= 2 else None
        _, test = train_test_split(np.arange(n), test_size=args.test_size,
                                   random_state=args.seed, stratify=strat)
        test = np.sort(test)
    else:
        return ds, None
    train = np.setdiff1d(np.arange(n), test)
    if len(test) == 0 or len(train) < 2:
        raise InvalidArgumentError(
            f"The held-out split leaves {len(train)} training and {len(test)} test rows of {n}; "
            "choose a split that keeps rows on both sides."
        )
    return ds.select(train), ds.select(test)


def _probe(args: argparse.Namespace) -> int:
    from .. import open_dataset
    from ..probe import Probe, append_results, cross_validate

    ds = open_dataset(args.url)
    train, test = _split(args, ds)
    if args.layer is None:  # say which layer the default picked (-1: the deepest stored block)
        from ..format.layersel import resolve_layer

        layers = [resolve_layer("last", ds.info.layers)]
        print(f"no --layers given: using layer {layers[0]} (the deepest stored block)", file=sys.stderr)
    else:
        layers = _layers(args.layer, "--layers")
        say_resolved(layers, ds.info.layers, "--layers")
    frame = cross_validate(train, args.label_column, layers=layers, cv=args.cv, seeds=[args.seed],
                           groups=args.groups, view=args.view, classifier=args.classifier, task=args.task)
    metrics = frame.drop(columns=["layers", "seed", "fold"]).mean(numeric_only=True)
    summary: dict[str, Any] = {"layers": frame["layers"][0], "rows": len(ds),
                               f"cv_{args.cv}fold": metrics.round(4).to_dict()}
    probe = None
    if test is not None or args.save:
        probe = Probe(layers=layers, view=args.view, classifier=args.classifier, task=args.task,
                      random_state=args.seed).fit(train, args.label_column)
    if test is not None and probe is not None:
        held = probe.evaluate(test, args.label_column)
        summary["train_rows"], summary["test_rows"] = len(train), len(test)
        summary["held_out"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in held.items()}
    print(json.dumps(summary, indent=2, default=str))
    if args.results:
        ctx = _context(args, ds)
        rows = []
        for r in frame.to_dict("records"):
            single = "," not in r["layers"]
            layer = (r["layers"] if r["layers"] == "embeddings" else int(r["layers"])) if single else None
            rows.append({**ctx, "layer": layer, **r})  # the embeddings by name, as sweep rows
        append_results(args.results, rows)
    if args.save and probe is not None:
        probe.save(args.save)
        what = f"{len(train)} training rows" if test is not None else \
            f"all {len(ds)} rows (no held-out rows; pass --test-size to keep some)"
        print(f"saved probe (fitted on {what}) to {args.save}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from .. import open_dataset
    from ..errors import InvalidArgumentError
    from ..probe import Probe

    out = args.out
    if out is not None and not out.endswith((".csv", ".parquet")):
        raise InvalidArgumentError(f"--out must end in .csv or .parquet; got {out!r}.")
    probe = Probe.load(args.probe)
    ds = open_dataset(args.dataset)
    frame = pd.DataFrame({"row": np.arange(len(ds)), "text": ds.texts,
                          "prediction": probe.predict(ds)})
    if probe.task == "classification" and probe._has("predict_proba"):
        proba = probe.predict_proba(ds)
        for j, c in enumerate(probe.classes_):
            frame[f"proba_{c}"] = proba[:, j]
    label = (probe.provenance or {}).get("label_column")
    if label and label in ds.index.column_names:
        frame["label"] = ds.column(label)
    if out is None:
        print(frame.head(10).to_string(index=False, max_colwidth=40))
        print(f"... {len(frame)} predictions; pass --out FILE.csv|.parquet to write them all")
    else:
        (frame.to_csv(out, index=False) if out.endswith(".csv") else frame.to_parquet(out, index=False))
        print(f"wrote {len(frame)} predictions to {out}")
    if "label" in frame:
        from ..probe.metrics import main_metric

        print(f"{main_metric(probe.task)} against the dataset's "
              f"{label!r} column: {probe.score(ds, label):.4f}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from .. import open_dataset
    from ..probe import append_results, sweep_layers

    layers = _layers(args.layers)
    _check_plot_path(args.plot)
    ds = open_dataset(args.url)
    say_resolved(layers, ds.info.layers, "--layers")
    sweep = sweep_layers(ds, args.label_column, layers=layers, cv=args.cv,
                         groups=args.groups, classifier=args.classifier, task=args.task,
                         view=args.view, seed=args.seed, progress=not args.no_progress)
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
        from ..probe.plot import plot_report

        print(f"plot: {plot_report(table, args.plot)}")
    return 0
