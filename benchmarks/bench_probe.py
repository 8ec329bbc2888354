"""Probe sweep speed: ``actstore.sweep_layers`` vs lmprobe 0.10.3 and a plain scikit-learn loop.

A full sweep over every layer of a 12-layer, 5,000-prompt, 768-dim dataset (a real v2 dataset
on disk, with a linear signal of varying strength per layer) with 5-fold CV and logistic
regression. lmprobe fits the same probes from the same arrays layer by layer with
``Probe.fit_from_activations`` / ``score_from_activations``; the scikit-learn loop is
StandardScaler + LogisticRegression(max_iter=1000) per fold per layer, once as is and once with
BLAS held to one thread. All fit the same model (StandardScaler, then lbfgs logistic regression,
C=1, max_iter=1000, tol=1e-4) on the same folds, so the accuracies are comparable. actstore's
``sweep_layers`` reads each layer once and fits layers in parallel threads with one BLAS thread
per fit; the 1-thread loop shows how much of the gain is BLAS threading that does not pay for
fits this size.

Two more sections (issue 18.9): ``layers="auto"`` (group lasso over the candidate layers
0.25/0.5/0.75 of the depth, then a refit on the kept ones) against lmprobe's own group lasso
run on the same arrays (its ``PerLayerScaler`` + ``GroupLassoClassifier``, then
``fit_from_activations`` on the kept layers: what ``lmprobe.Probe(layers="auto").fit`` does
after extraction, which needs a model), and token-level training, ``Probe(train_pooling="all")``
on a full-sequence dataset, in rows/s and tokens/s with its peak RSS (a child process, so the
peak is that fit's own).

Usage: ``python benchmarks/bench_probe.py [--quick | --tiny] [--sections sweep,auto,tokens]``
-> ``benchmarks/results/probe.md`` (``--tiny`` only prints: it proves the script runs).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import actstore  # noqa: E402, I001
from actstore.format.writer import DatasetWriter  # noqa: E402
from actstore.probe.sweep import make_folds  # noqa: E402


def make_dataset(path: str, n: int, layers: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    y = (rng.random(n) > 0.5).astype(int)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    with DatasetWriter(path, model="bench/synthetic", layers=list(range(layers)), dim=dim) as w:
        hidden = {}
        for L in range(layers):
            strength = 0.15 + 0.5 * np.sin(np.pi * L / (layers - 1))  # peaks mid-depth
            X = rng.normal(size=(n, dim)).astype(np.float32)
            X += np.outer(2 * y - 1, direction * strength * 3).astype(np.float32)
            hidden[L] = X
        w.add([f"prompt {i}" for i in range(n)], hidden=hidden, labels=y.tolist())
    return y


def run_sklearn(ds, y, folds, layers):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    acc = {}
    for L in layers:
        X = ds.layer(L)
        scores = []
        for tr, va in folds:
            m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))
            scores.append(m.fit(X[tr], y[tr]).score(X[va], y[va]))
        acc[L] = float(np.mean(scores))
    return acc


def run_sklearn_1thread(ds, y, folds, layers):  # type: ignore[no-untyped-def]
    """The same loop with BLAS held to one thread: separates actstore's two gains (BLAS
    threading that does not pay for fits this size, and fits running in parallel)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return run_sklearn(ds, y, folds, layers)


def run_lmprobe(ds, y, folds, layers):  # type: ignore[no-untyped-def]
    from lmprobe import Probe as LmProbe

    acc = {}
    for L in layers:
        X = ds.layer(L)
        scores = []
        for tr, va in folds:
            p = LmProbe(model="bench/synthetic", layers=L, classifier="logistic_regression",
                        random_state=0, device="cpu")
            p.fit_from_activations(X[tr], y[tr])
            scores.append(p.score_from_activations(X[va], y[va]))
        acc[L] = float(np.mean(scores))
    return acc


def run_auto_actstore(ds):  # type: ignore[no-untyped-def]
    probe = actstore.Probe(layers="auto").fit(ds, "label")
    return probe.candidate_layers_, probe.selected_layers_, probe.score(ds, "label")


def run_auto_lmprobe(ds, candidates, alpha=0.01):  # type: ignore[no-untyped-def]
    """lmprobe 0.10.3's ``_fit_auto_layers`` minus extraction, on the candidates' arrays."""
    from lmprobe import Probe as LmProbe
    from lmprobe.classifiers import build_group_lasso_classifier
    from lmprobe.scaling import PerLayerScaler

    X = np.concatenate([ds.layer(L) for L in candidates], axis=1)
    y = ds.labels
    Xs = PerLayerScaler(len(candidates), ds.info.dim, "per_neuron").fit_transform(X)
    gl = build_group_lasso_classifier(hidden_dim=ds.info.dim, n_layers=len(candidates), alpha=alpha,
                                      random_state=0)
    gl.fit(Xs, y)
    keep = list(gl.selected_groups_) or list(range(len(candidates)))
    kept = [candidates[i] for i in keep]
    Xk = np.concatenate([ds.layer(L) for L in kept], axis=1)
    p = LmProbe(model="bench/synthetic", layers=kept, classifier="logistic_regression", random_state=0,
                device="cpu")
    p.fit_from_activations(Xk, y, n_layers=len(kept))
    return candidates, kept, p.score_from_activations(Xk, y)


def make_token_dataset(path: str, n: int, tokens: int, dim: int) -> None:
    """A full-sequence dataset: rows of ``tokens // 2 .. tokens`` tokens, one of which carries
    the label (so per-token training has something to find)."""
    rng = np.random.default_rng(1)
    direction = rng.normal(size=dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    with DatasetWriter(path, model="bench/synthetic", layers=[0], dim=dim, pooling="all") as w:
        for start in range(0, n, 256):
            texts, seqs, labels = [], [], []
            for i in range(start, min(n, start + 256)):
                T, lab = int(rng.integers(tokens // 2, tokens + 1)), i % 2
                a = rng.normal(size=(T, dim)).astype(np.float32)
                a[int(rng.integers(T))] += 4 * lab * direction  # a positive row has one marked token
                texts.append(f"prompt {i}")
                seqs.append(a)
                labels.append(lab)
            w.add(texts, hidden={0: seqs}, labels=labels)


def _hwm_mib() -> float:
    """This process's peak RSS (``VmHWM``), in MiB. Not ``ru_maxrss``: that survives the
    exec of a child from this large parent, so a child would report the parent's size."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _AnonPeak:
    """Peak anonymous RSS (``RssAnon``, sampled every 5 ms in a thread): the memory a fit
    allocates. ``VmHWM`` also counts the dataset's shard files, which the local reader maps
    (file-backed pages of the page cache, shared and reclaimable), so a fit that reads every
    token once shows the dataset's size there whatever it allocates."""

    def __enter__(self) -> _AnonPeak:
        import threading

        self.peak, self._stop = _status_mib("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _status_mib("RssAnon"))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_mib("RssAnon"))


def token_child(path: str, mode: str) -> None:
    """Run in a child process: one token-level fit, its time and the child's peak RSS, as JSON.

    ``mode`` is ``bounded`` (``Probe(train_pooling="all").fit(ds)``: the bounded-memory path),
    ``memory`` (what ``fit`` did before it: every token read into one array, then the
    in-memory pipeline; the same samples, labels and probe) or ``ridge`` (the bounded path's
    one-pass ridge).
    """
    import json

    from actstore.probe.tokens import token_features

    ds = actstore.open_dataset(path)
    y = np.asarray(ds.labels)
    before = _hwm_mib()
    anon_before = _status_mib("RssAnon")
    sampler = _AnonPeak().__enter__()
    t0 = time.perf_counter()
    if mode == "memory":
        feats, rows = token_features(ds, [0], "all")
        probe = actstore.Probe(layers=0, inference_pooling="max").fit(feats, y[rows], layers=[0])
        tokens = int(rows.size)
        del feats, rows
    else:
        classifier = "ridge" if mode == "ridge" else None
        probe = actstore.Probe(layers=0, classifier=classifier, train_pooling="all",
                               inference_pooling="max").fit(ds, "label")
        tokens = probe.n_train_tokens_
    took = time.perf_counter() - t0
    sampler.__exit__()
    rss = _hwm_mib()
    print(json.dumps({"seconds": took, "rows": len(ds), "tokens": tokens, "rss_mib": rss,
                      "rss_before_mib": before, "anon_before_mib": anon_before, "anon_peak_mib": sampler.peak,
                      "auroc": probe.evaluate(ds, "label")["auroc"]}))


def run_tokens(path: str, mode: str) -> dict:  # type: ignore[type-arg]
    import json
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--_token-child", path, "--_token-mode", mode],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_actstore(ds, layers):  # type: ignore[no-untyped-def]
    sweep = actstore.sweep_layers(ds, "label", layers=layers, cv=5, seed=0)
    frame = sweep.to_frame()
    return {int(r.layer): float(r.accuracy_mean) for r in frame.itertuples()}, sweep.best_layer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 layers x 1,000 prompts x 128 dims")
    ap.add_argument("--tiny", action="store_true", help="4 layers x 200 prompts x 32 dims; prints only")
    ap.add_argument("--sections", default="sweep,auto,tokens", help="comma-separated: sweep, auto, tokens")
    ap.add_argument("--repeats", type=int, default=None, help="rounds, best time kept (default 3; 2 quick)")
    ap.add_argument("--_token-child", dest="token_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_token-mode", dest="token_mode", default="bounded", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.token_child:
        token_child(args.token_child, args.token_mode)
        return
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - {"sweep", "auto", "tokens"}
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}")
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    n, n_layers, dim = {"tiny": (200, 4, 32), "quick": (1000, 4, 128), "full": (5000, 12, 768)}[size]
    tok_rows, tok_len = {"tiny": (100, 16), "quick": (1000, 32), "full": (2000, 64)}[size]
    args.repeats = args.repeats or (1 if args.tiny else 2 if args.quick else 3)
    best_layer = None
    work = tempfile.mkdtemp(prefix="bench-probe-")
    warnings.filterwarnings("ignore")
    import lmprobe  # noqa: F401  (imports torch: seconds that must not land in a timed run)
    import sklearn.linear_model  # noqa: F401
    try:
        path = os.path.join(work, "ds")
        y = make_dataset(path, n, n_layers, dim)
        ds = actstore.open_dataset(path)
        layers = list(range(n_layers))
        folds = make_folds(y, 5, "classification", 0, None)
        extra = []
        if "auto" in sections:
            extra += auto_section(ds, args.repeats)
        if "tokens" in sections:
            tpath = os.path.join(work, "tokens")
            make_token_dataset(tpath, tok_rows, tok_len, dim)
            runs = {mode: [run_tokens(tpath, mode) for _ in range(args.repeats)]
                    for mode in ("memory", "bounded", "ridge")}
            extra += tokens_section(runs, tok_rows, tok_len, dim)
        contenders = {"actstore": lambda: run_actstore(ds, layers),
                      "scikit-learn loop": lambda: (run_sklearn(ds, y, folds, layers), None),
                      "lmprobe 0.10.3": lambda: (run_lmprobe(ds, y, folds, layers), None),
                      "scikit-learn loop, 1 BLAS thread": lambda: (run_sklearn_1thread(ds, y, folds, layers), None)}
        if "sweep" not in sections:
            contenders = {}
        timings, accs = {name: float("inf") for name in contenders}, {}
        # the machine is shared: best of `repeats` rounds, with the order rotated each round,
        # so a burst of someone else's load does not land on one contender only
        for r in range(args.repeats if contenders else 0):
            names = list(contenders)[r % len(contenders):] + list(contenders)[:r % len(contenders)]
            for name in names:
                t0 = time.perf_counter()
                accs[name], best = contenders[name]()
                timings[name] = min(timings[name], time.perf_counter() - t0)
                best_layer = best if best is not None else best_layer
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    text = render(args, n, n_layers, dim, timings, accs, rss, best_layer) if timings else ""
    text += "\n".join(extra)
    if not args.tiny:
        (HERE / "results").mkdir(exist_ok=True)
        out = HERE / "results" / "probe.md"
        # a run of some sections replaces those and keeps the others' last results
        out.write_text(merge_sections(out.read_text() if out.exists() else "", text))
    print(text)


def _blocks(text: str) -> dict[str, str]:
    """A results page cut at its ``##``/``###`` headings: heading -> the block it starts."""
    out: dict[str, list[str]] = {}
    key = None
    for line in text.splitlines():
        if line.startswith(("## ", "### ")):
            key = line
        if key is not None:
            out.setdefault(key, []).append(line)
    return {k: "\n".join(v).strip("\n") for k, v in out.items()}


def merge_sections(old: str, new: str) -> str:
    """``old`` with each section that ``new`` holds replaced (new sections appended)."""
    merged = _blocks(old) | _blocks(new)
    return "\n\n".join(merged.values()) + "\n"


def auto_section(ds, repeats: int) -> list[str]:  # type: ignore[no-untyped-def]
    """``layers="auto"``: actstore vs lmprobe's group lasso (skglm), lmprobe's first call (numba
    JIT compilation included) timed apart from its warm fits."""
    def spread(ts: list[float]) -> str:
        return f"{min(ts):.2f} s" + (f" (min; max {max(ts):.2f} s)" if len(ts) > 1 else "")

    times: dict[str, list[float]] = {"actstore": [], "lmprobe 0.10.3": []}
    found, missing, first, imported = {}, None, None, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        found["actstore"] = run_auto_actstore(ds)
        times["actstore"].append(time.perf_counter() - t0)
    try:
        t0 = time.perf_counter()
        import skglm  # noqa: F401  (lmprobe[auto]; its import compiles nothing yet)
        imported = time.perf_counter() - t0
        t0 = time.perf_counter()
        found["lmprobe 0.10.3"] = run_auto_lmprobe(ds, list(found["actstore"][0]))
        first = time.perf_counter() - t0  # numba compiles skglm's solver on this first call
        for _ in range(repeats):
            t0 = time.perf_counter()
            found["lmprobe 0.10.3"] = run_auto_lmprobe(ds, list(found["actstore"][0]))
            times["lmprobe 0.10.3"].append(time.perf_counter() - t0)
    except ImportError as exc:  # lmprobe's group lasso needs skglm (lmprobe[auto])
        missing = str(exc).splitlines()[0]
        del times["lmprobe 0.10.3"]
    ours = min(times["actstore"])
    lines = ["", "### `layers=\"auto\"` (group lasso over the candidate layers, then a refit)", "",
             f"{len(ds):,} prompts × {ds.info.dim} dims; candidates 0.25/0.5/0.75 of the depth, "
             f"auto_alpha=0.01; lmprobe's group lasso (skglm, numba) on the same arrays, then its refit on "
             f"the kept layers; {repeats} warm runs each (min, and max). skglm is not a dependency of "
             "actstore: it was installed for this run only (`pip install --target`, on PYTHONPATH).", "",
             "| contender | warm time | time ÷ actstore time | first call (JIT included) | candidates | kept | train accuracy |",
             "|---|---:|---:|---:|---|---|---:|"]
    for name, ts in times.items():
        cand, kept, acc = found[name]
        first_cell = "-" if name == "actstore" else (
            f"{first:.2f} s (import skglm {imported:.2f} s; JIT ≈ {first - min(ts):.2f} s)")
        lines.append(f"| {name} | {spread(ts)} | {min(ts) / ours:.2f}× | {first_cell} | {list(cand)} | "
                     f"{list(kept)} | {acc:.4f} |")
    if missing:
        lines.append(f"| lmprobe 0.10.3 | not run: {missing} | - | - | - | - | - |")
    elif first is not None:
        lmp = min(times["lmprobe 0.10.3"])
        lines += ["", f"lmprobe's auto, warm: {lmp / ours:.2f}× actstore's time; in a fresh process "
                  f"(first call, JIT included): {first / ours:.2f}×."]
    return lines + [""]


def tokens_section(runs: dict, rows: int, length: int, dim: int) -> list[str]:  # type: ignore[type-arg]
    import subprocess

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    names = {"memory": "before: every token in one array, in-memory pipeline (main's path)",
             "bounded": "after: `Probe(train_pooling=\"all\")`, bounded (L-BFGS over spilled tokens)",
             "ridge": "after, `classifier=\"ridge\"`: bounded, one pass of statistics"}

    def spread(values: list[float], fmt: str) -> str:
        lo, hi = min(values), max(values)
        return f"{lo:{fmt}}" if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}}–{hi:{fmt}}"

    lines = ["", "### Token-level training (`Probe(train_pooling=\"all\")` on a full-sequence dataset)", "",
             f"{rows:,} rows of {length // 2}–{length} tokens × {dim} dims, one layer; every real token "
             "a training sample (read row by row with `ds.tokens`), logistic regression unless said; "
             f"each fit in a fresh child process, {len(runs['memory'])} runs each (min–max). Load at the "
             f"end: `{load}` (other helpers' tests run at nice 19).", "",
             "| path | rows | tokens | fit time | rows/s | tokens/s | peak anonymous RSS − before (what the fit allocates) "
             "| peak RSS (`VmHWM`, mapped shard files included) − before | train AUROC (`inference_pooling=\"max\"`) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, rs in runs.items():
        r = rs[0]
        secs = [x["seconds"] for x in rs]
        lines.append(
            f"| {names[mode]} | {r['rows']:,} | {r['tokens']:,} | {spread(secs, '.2f')} s | "
            f"{spread([x['rows'] / x['seconds'] for x in rs], ',.0f')} | "
            f"{spread([x['tokens'] / x['seconds'] for x in rs], ',.0f')} | "
            f"{spread([x['anon_peak_mib'] - x['anon_before_mib'] for x in rs], ',.0f')} MiB | "
            f"{spread([x['rss_mib'] - x['rss_before_mib'] for x in rs], ',.0f')} MiB | {spread([x['auroc'] for x in rs], '.4f')} |")
    matrix = runs["memory"][0]["tokens"] * dim * 4 / 2**20
    grow = [x["anon_peak_mib"] - x["anon_before_mib"] for x in runs["bounded"]]
    ok = max(grow) < matrix / 2
    lines += ["", f"The token matrix is {matrix:,.0f} MiB (float32); RSS before the fit "
              f"{runs['bounded'][0]['rss_before_mib']:,.0f} MiB (imports, the open dataset). Goal (bounded memory: "
              f"what the fit allocates well under the token matrix, < {matrix / 2:,.0f} MiB): "
              f"{max(grow):,.0f} MiB {'✅' if ok else '❌'}. `VmHWM` also grows by the shard files the "
              "local reader maps (page cache, shared and reclaimable), about the dataset's size, on "
              "every path that reads every token.", ""]
    return lines


def render(args, n, n_layers, dim, timings, accs, rss, best_layer) -> str:  # type: ignore[no-untyped-def]
    ours = timings["actstore"]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    goals = {name: "-" for name in timings} | {"lmprobe 0.10.3": "≥ 3× and ≤ 1 point"}
    lines = [
        "## Probes: full layer sweep (`benchmarks/bench_probe.py`)",
        "",
        f"Command: `python benchmarks/bench_probe.py{' --quick' if args.quick else ' --tiny' if args.tiny else ''}`; {n_layers} layers × "
        f"{n:,} prompts × {dim} dims (a v2 dataset on disk), 5-fold CV, StandardScaler + lbfgs logistic "
        f"regression (C=1, max_iter=1000, tol=1e-4) in every contender; best of {args.repeats} rounds "
        f"(order rotated each round); {machine}, shared with other jobs.",
        "",
        "| contender | time | time ÷ actstore time | mean accuracy over layers | max \\|Δ accuracy\\| vs actstore "
        "| goal | pass |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name, t in timings.items():
        diff = max(abs(accs[name][L] - accs["actstore"][L]) for L in accs["actstore"])
        ok = "-" if goals[name] == "-" else ("✅" if t / ours >= 3 and diff <= 0.01 else "❌")
        lines.append(f"| {name} | {t:.2f} s | {t / ours:.2f}× | {np.mean(list(accs[name].values())):.4f} | "
                     f"{100 * diff:.2f} points | {goals[name]} | {ok} |")
    goal = timings["lmprobe 0.10.3"] / ours
    lines += ["", f"Goal: ≥ 3× faster than lmprobe at accuracy within 1 point: "
              f"{goal:.2f}× {'✅' if goal >= 3 else '❌'}{' (the goal is for the full size)' if args.quick else ''}. Best layer (validation folds): {best_layer}. "
              f"Peak RSS of the benchmark process (every contender, lmprobe's torch import included): {rss:,.0f} MiB.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
