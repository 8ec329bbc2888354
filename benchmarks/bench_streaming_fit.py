"""Out-of-core probes: ``actstore.fit_streaming`` vs in-memory scikit-learn fits, per layer.

A v2 dataset of ``rows x dim`` float32 activations on ``layers`` layers (full size: 200,000 x
2,048 x 4 = 3.3 GB) is generated on disk. Then, each in its own process so that peak RSS is
its own:

- **streaming**: ``fit_streaming(ds, layers="all", classifiers=("ridge", "lda", "mass_mean"))``,
  every layer in one pass; peak RSS, wall time, and bytes read (``rchar`` of ``/proc/self/io``)
  over the dataset's tensor bytes;
- **in memory**: per layer, ``ds.layer(L)`` then scikit-learn's ``StandardScaler`` +
  ``RidgeClassifier()``, ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")`` and
  the mass-mean probe, as ``Probe`` fits them; the streamed probes' predictions are compared
  with these;
- **over HTTP**: the streaming fit on the loopback HTTP range server (run in its own process,
  ``tests/cache/conftest.py``), no cache: bytes over the wire over the layers' tensor bytes.

Goals (issue #19): peak RSS <= 1.5 GB at full size, streaming at least as fast as the
in-memory loop (>= 1.0x) while fitting every layer in one pass, bytes read <= 1.05x the
dataset's tensor bytes, bytes over the wire <= 1.05x.

Usage: ``python benchmarks/bench_streaming_fit.py [--size tiny|small|full]`` ->
``benchmarks/results/streaming.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SIZES = {"tiny": (6_000, 128, 4), "small": (50_000, 512, 4), "full": (200_000, 2_048, 4)}
CLASSIFIERS = ("ridge", "lda", "mass_mean")
GB = 1e9


def make_dataset(path: str, n: int, dim: int, layers: int, chunk: int = 10_000) -> None:
    """Written a chunk of rows at a time, so generating never holds a layer."""
    from actstore.format.writer import DatasetWriter

    rng = np.random.default_rng(0)
    direction = rng.normal(size=dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    with DatasetWriter(path, model="bench/synthetic", layers=list(range(layers)), dim=dim,
                       shard_bytes=256 << 20) as w:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            y = (rng.random(m) > 0.5).astype(int)
            hidden = {}
            for L in range(layers):
                X = rng.normal(size=(m, dim)).astype(np.float32)
                X += np.outer(2 * y - 1, direction * (0.3 + 0.2 * L)).astype(np.float32)
                hidden[L] = X
            w.add([f"prompt {i}" for i in range(start, start + m)], hidden=hidden, labels=y.tolist())


def tensor_bytes(path: str) -> int:
    folder = os.path.join(path, "tensors")
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar")).split()[1])


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- child processes ----------------------------------------------------------------------
def _warm_imports() -> None:
    """Import what the fits import, so that no import lands in a timed (or rchar-counted) run."""
    import scipy.linalg  # noqa: F401
    import scipy.optimize  # noqa: F401
    import sklearn.discriminant_analysis  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.pipeline  # noqa: F401

    import actstore.probe  # noqa: F401
    from actstore.probe import estimator, head, io  # noqa: F401


def child_streaming(url: str, block_rows: int, out: str) -> None:
    import actstore

    _warm_imports()
    ds = actstore.open_dataset(url, cache=False)
    len(ds.labels)  # the label column is read with the index, not counted as tensor bytes
    before, t = _rchar(), time.perf_counter()
    fit = actstore.fit_streaming(ds, layers="all", classifiers=CLASSIFIERS, block_rows=block_rows)
    wall, read = time.perf_counter() - t, _rchar() - before
    np.savez(out, **{f"{L}-{c}": np.concatenate([p.pipeline_.W.ravel(), p.pipeline_.b])
                     for (L, c), p in fit.probes.items()})
    print(json.dumps({"wall": wall, "rss": _peak(), "read": read}))


def child_memory(path: str, out: str) -> None:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import actstore
    from actstore.probe.classifiers import MassMeanProbe

    _warm_imports()
    ds = actstore.open_dataset(path)
    y = np.asarray(ds.labels)
    make = {"ridge": RidgeClassifier, "lda": lambda: LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"),
            "mass_mean": MassMeanProbe}
    times = {"load": 0.0, **{c: 0.0 for c in CLASSIFIERS}}
    scores = {}
    for L in ds.info.layers:
        t = time.perf_counter()
        X = ds.layer(L)
        times["load"] += time.perf_counter() - t
        for c in CLASSIFIERS:
            t = time.perf_counter()
            model = make_pipeline(StandardScaler(), make[c]()).fit(X, y)
            times[c] += time.perf_counter() - t
            scores[f"{L}-{c}"] = model.decision_function(X[:2000]).ravel()
        del X
    np.savez(out, **scores)
    print(json.dumps({"times": times, "rss": _peak()}))


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _agreement(path: str, streamed: str, memory: str) -> float:
    """Largest |streamed - in-memory| decision value on 2,000 rows, relative to its scale."""
    import actstore

    ds = actstore.open_dataset(path)
    worst = 0.0
    with np.load(streamed) as s, np.load(memory) as m:
        for L in ds.info.layers:
            X = ds.get(np.arange(min(2000, len(ds))), layers=[L])[:, 0].astype(np.float64)
            for c in CLASSIFIERS:
                wb = s[f"{L}-{c}"]
                b_len = 1
                W, b = wb[:-b_len].reshape(X.shape[1], -1), wb[-b_len:]
                ours, theirs = (X @ W + b).ravel(), m[f"{L}-{c}"]
                worst = max(worst, float(np.abs(ours - theirs).max() / np.abs(theirs).max()))
    return worst


def over_http(root: str, block_rows: int, work: str) -> dict:
    server = subprocess.Popen([sys.executable, str(HERE.parent / "tests" / "cache" / "conftest.py"), root],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    try:
        base = server.stdout.readline().strip()  # type: ignore[union-attr]
        urllib.request.urlopen(f"{base}/__control?reset=1").read()
        res = _child("streaming", f"{base}/ds", str(block_rows), os.path.join(work, "http.npz"))
        res["wire"] = json.loads(urllib.request.urlopen(f"{base}/__control").read())
        return res
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="full",
                    help="tiny: 6,000 x 128 x 4 (seconds); small: 50,000 x 512 x 4; full: 200,000 x 2,048 x 4")
    ap.add_argument("--block-rows", type=int, default=2048)
    ap.add_argument("--keep", help="reuse (or keep) the generated dataset in this folder")
    args = ap.parse_args()
    n, dim, layers = SIZES[args.size]
    work = args.keep or tempfile.mkdtemp(prefix="bench-streaming-")
    path = os.path.join(work, "root", "ds")
    try:
        t = time.perf_counter()
        if not os.path.exists(os.path.join(path, "index")):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            make_dataset(path, n, dim, layers)
        gen = time.perf_counter() - t
        size = tensor_bytes(path)
        stream = _child("streaming", path, str(args.block_rows), os.path.join(work, "s.npz"))
        memory = _child("memory", path, os.path.join(work, "m.npz"))
        agree = _agreement(path, os.path.join(work, "s.npz"), os.path.join(work, "m.npz"))
        http = over_http(os.path.dirname(path), args.block_rows, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = render(args, n, dim, layers, size, gen, stream, memory, agree, http)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "streaming.md").write_text(text)
    print(text)


def render(args, n, dim, layers, size, gen, stream, memory, agree, http) -> str:  # type: ignore[no-untyped-def]
    mem_fit = sum(memory["times"][c] for c in CLASSIFIERS)
    mem_total = mem_fit + memory["times"]["load"]
    speed = mem_total / stream["wall"]
    rss_gb, read, wire = stream["rss"] / GB, stream["read"] / size, http["wire"]["bytes"] / size
    full = args.size == "full"

    def mark(ok: bool) -> str:
        return ("✅" if ok else "❌") if full else ("(✅)" if ok else "(❌)")

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        "## Probes out of core: every layer in one streaming pass (`benchmarks/bench_streaming_fit.py`)",
        "",
        f"Command: `python benchmarks/bench_streaming_fit.py --size {args.size}`; {n:,} rows × {dim:,} dims × "
        f"{layers} layers float32 ({size / GB:.2f} GB of tensors, generated in {gen:.0f} s), ridge + LDA "
        f"(lsqr, Ledoit-Wolf) + mass-mean with standardisation, blocks of {args.block_rows} rows; each "
        f"contender in its own process; {machine}, shared with other jobs."
        + ("" if full else " Not the goal size: the marks in brackets only show the figures are computed."),
        "",
        "| measure | streaming (all layers, one pass) | in-memory scikit-learn (per layer) | goal | pass |",
        "|---|---:|---:|---|---|",
        f"| wall time | {stream['wall']:.2f} s | {mem_total:.2f} s (load {memory['times']['load']:.2f} s, ridge "
        f"{memory['times']['ridge']:.2f} s, LDA {memory['times']['lda']:.2f} s, mass-mean "
        f"{memory['times']['mass_mean']:.2f} s) | in-memory ÷ streaming ≥ 1.0× | {speed:.2f}× {mark(speed >= 1.0)} |",
        f"| peak RSS | {rss_gb:.2f} GB | {memory['rss'] / GB:.2f} GB | ≤ 1.5 GB | {mark(rss_gb <= 1.5)} |",
        f"| bytes read ÷ tensor bytes | {read:.3f} | - | ≤ 1.05 | {mark(read <= 1.05)} |",
        f"| over loopback HTTP: bytes on the wire ÷ tensor bytes | {wire:.3f} ({http['wire']['requests']:,} "
        f"requests, {http['wall']:.2f} s) | - | ≤ 1.05 | {mark(wire <= 1.05)} |",
        "",
        f"The streamed probes' decision values agree with the in-memory fits to {agree:.1e} (largest difference "
        "over 2,000 rows, relative to the largest value).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "streaming":
            child_streaming(rest[0], int(rest[1]), rest[2])
        else:
            child_memory(rest[0], rest[1])
    else:
        main()
