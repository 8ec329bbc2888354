"""Format-layer throughput: every figure a ratio against a baseline on the same bytes, same run.

- write: ``DatasetWriter`` (sha256 of every file included) vs ``ndarray.tofile``;
- read one layer: ``ds.layer(L)`` (fresh array, and ``out=`` a preallocated one) vs
  ``readinto`` of the same bytes into a preallocated buffer;
- gather 1,000 random rows: ``ds.get`` vs numpy memmap fancy indexing;
- one layer for all prompts vs lmprobe 0.10.3 ``load_activations`` on the same dataset (the
  float32 one above, through an offline HF-cache layout; lmprobe runs once, it takes seconds);
- peak RSS of ``ds.layer(L)`` in a fresh process vs the returned array's bytes.

bfloat16 layers come back widened exactly to float32 (twice the stored bytes), so for them the
run also measures informative baselines that produce the same float32 output (readinto + widen,
memmap + widen), and the sha256 rate that bounds a checksummed write.

Page cache warm; medians of repeated runs; each output written to a fresh path (the
baseline's too), so neither side pays for unlinking the previous file.

Usage: ``python benchmarks/bench_format.py [--quick]`` -> ``benchmarks/results/format.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import actstore  # noqa: E402, I001
from actstore.format.writer import DatasetWriter  # noqa: E402


_COUNTER = iter(range(10**9))


def median_time(fn, reps: int, setup=None) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(reps):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def interleaved(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds of each function, called in turn within every round, so a baseline and
    the code it is compared with sample the same moments of a shared, noisy machine."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def bench_dtype(work: str, X: np.ndarray, dtype: str, reps: int) -> dict[str, float]:
    n, d = X.shape
    texts = [f"p{i}" for i in range(n)]
    stored = X  # for bfloat16 the writer rounds float32 to bfloat16 itself (counted in its time)
    raw_bytes = n * d * (4 if dtype == "float32" else 2)
    raw_arr = X if dtype == "float32" else actstore.format.dtypes.f32_to_bf16_bits(X)
    def fresh(prefix: str) -> str:
        return os.path.join(work, f"{prefix}-{dtype}-{next(_COUNTER)}")

    paths: dict[str, str] = {}

    def baseline_write() -> None:
        raw_arr.tofile(fresh("raw"))

    def actstore_write() -> None:
        p = fresh("ds")
        with DatasetWriter(p, model="bench", layers=[0], dim=d, dtype=dtype, num_rows=n) as w:
            w.add(texts, hidden={0: stored})
        paths["ds"] = p

    w = interleaved({"tofile": baseline_write, "write": actstore_write}, reps)
    t_tofile, t_write = w["tofile"], w["write"]
    raw_path = fresh("raw")
    raw_arr.tofile(raw_path)
    ds = actstore.open_dataset(paths["ds"])
    ds.layer(0)  # warm the page cache and the header cache
    buf = np.empty(raw_bytes, dtype=np.uint8)
    buf[:] = 0

    def readinto() -> None:
        with open(raw_path, "rb", buffering=0) as f:
            f.readinto(memoryview(buf))

    out = np.empty((n, d), dtype=np.float32)
    out[:] = 0
    reads: dict[str, Callable[[], object]] = {
        "readinto": readinto, "layer": lambda: ds.layer(0), "layer_out": lambda: ds.layer(0, out=out)}
    widen = actstore.format.dtypes.bf16_bits_to_f32
    if dtype == "bfloat16":
        ds.torch(0)  # import torch outside the timed runs
        reads["torch"] = lambda: ds.torch(0)
        bits = buf.view(np.uint16).reshape(n, d)
        out2 = np.zeros((n, d), dtype=np.float32)
        # a baseline with the same float32 output as ds.layer: read the bytes, widen them
        reads["readinto_widen"] = lambda: (readinto(), widen(bits, out=out2))
    r = interleaved(reads, reps * 2)
    t_readinto, t_layer, t_layer_out, t_torch = r["readinto"], r["layer"], r["layer_out"], r.get("torch")
    rows = np.random.default_rng(0).choice(n, min(1000, n), replace=False)
    mm = np.memmap(raw_path, dtype=raw_arr.dtype, mode="r", shape=(n, d))
    gathers: dict[str, Callable[[], object]] = {
        "memmap": lambda: np.asarray(mm[rows]), "get": lambda: ds.get(rows, layers=[0])}
    if dtype == "bfloat16":
        gathers["memmap_widen"] = lambda: widen(mm[rows])
    g = interleaved(gathers, reps * 4)
    t_memmap, t_get = g["memmap"], g["get"]
    t_sha = median_time(lambda: hashlib.sha256(memoryview(raw_arr).cast("B")).digest(), reps)
    res = {
        "bytes": raw_bytes,
        "tofile_s": t_tofile, "write_s": t_write, "sha256_s": t_sha,
        "readinto_s": t_readinto, "layer_s": t_layer, "layer_out_s": t_layer_out, "torch_s": t_torch,
        "memmap_s": t_memmap, "get_s": t_get, "rows": int(rows.size),
        "dataset": paths["ds"],
    }
    if dtype == "bfloat16":
        res["readinto_widen_s"], res["memmap_widen_s"] = r["readinto_widen"], g["memmap_widen"]
    return res


RSS_CODE = r"""
import sys, actstore

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

ds = actstore.open_dataset(sys.argv[1])
ds.info
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS")
X = ds.layer(0)
print(before, status("VmHWM"), X.nbytes)
"""


def peak_rss(path: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", RSS_CODE, path], capture_output=True, text=True, check=True)
    before, after, nbytes = map(int, out.stdout.split())
    return after - before, nbytes


LMPROBE_CODE = r"""
import json, os, shutil, sys, time
src, cache, n_layers = sys.argv[1], sys.argv[2], 1
snap = os.path.join(cache, "datasets--bench--acts", "snapshots", "0" * 40)
shutil.copytree(src, snap)
os.makedirs(os.path.join(cache, "datasets--bench--acts", "refs"), exist_ok=True)
open(os.path.join(cache, "datasets--bench--acts", "refs", "main"), "w").write("0" * 40)
from lmprobe import load_activations
t0 = time.perf_counter()
acts = load_activations("bench/acts", layers=[0], show_progress=False)
t = time.perf_counter() - t0
print(json.dumps({"seconds": t, "shape": list(acts[0].shape)}))
"""


def lmprobe_seconds(work: str, path: str, n: int, d: int) -> float:
    """lmprobe's ``load_activations`` of one layer of all prompts of the dataset at ``path``
    (per-prompt lookups; one run, it takes seconds)."""
    env = dict(os.environ)
    env.update(HF_HOME=os.path.join(work, "hf"), HF_HUB_CACHE=os.path.join(work, "hf", "hub"),
               HF_HUB_OFFLINE="1", LMPROBE_CACHE_DIR=os.path.join(work, "lmprobe"))
    out = subprocess.run([sys.executable, "-c", LMPROBE_CODE, path, env["HF_HUB_CACHE"]],
                         capture_output=True, text=True, env=env, check=True)
    lm = json.loads(out.stdout.strip().splitlines()[-1])
    assert lm["shape"] == [n, d]
    return float(lm["seconds"])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.1f} GiB RAM, Linux {platform.release()}"


def versions() -> str:
    out = [f"Python {platform.python_version()}"]
    for name in ("actstore", "numpy", "pyarrow", "safetensors", "lmprobe"):
        try:
            out.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(out)


def _row(figure: str, ours: str, base: str, ratio: float, goal: float | None, unit: str = "") -> str:
    verdict = "info" if goal is None else f"≥ {goal:g}{unit.split()[0] if unit else ''} {'✅' if ratio >= goal else '❌'}"
    shown = f"{ratio:.0f}{unit}" if unit else f"{ratio:.2f}"
    return f"| {figure} | {ours} | {base} | {shown} | {verdict} |"


def render(res: dict, args: argparse.Namespace) -> str:
    def gbps(nbytes: float, s: float) -> str:
        return f"{nbytes / s / 1e9:.2f} GB/s"

    n, d = res["n"], res["d"]
    lines = [
        "## Format: writer and reader (`benchmarks/bench_format.py`)",
        "",
        f"Command: `python benchmarks/bench_format.py{' --quick' if args.quick else ''}`; "
        f"{n:,} × {d:,} per layer, float32 and bfloat16; page cache warm; medians of "
        f"{res['reps']}-{res['reps'] * 4} runs, each baseline called in turn with what it is compared to. Machine: {res['machine']}. Versions: {res['versions']}.",
        "",
        "| figure | actstore | baseline (same run, same bytes) | ratio | goal |",
        "|---|---:|---:|---:|---|",
    ]
    out_bytes = n * d * 4
    for dtype, r in res["dtypes"].items():
        b = r["bytes"]
        lines.append(_row(f"write {dtype} (incl. sha256)", gbps(b, r["write_s"]), f"tofile {gbps(b, r['tofile_s'])}",
                          r["tofile_s"] / r["write_s"], 0.8))
        lines.append(_row(f"sha256 of the same bytes (bound on a checksummed write) {dtype}", gbps(b, r["sha256_s"]),
                          f"tofile {gbps(b, r['tofile_s'])}", r["tofile_s"] / r["sha256_s"], None))
        lines.append(_row(f"`ds.layer(L)` {dtype}, new array", gbps(out_bytes, r["layer_s"]),
                          f"readinto {gbps(b, r['readinto_s'])}", r["readinto_s"] / r["layer_s"], 0.8))
        lines.append(_row(f"`ds.layer(L, out=buf)` {dtype}", gbps(out_bytes, r["layer_out_s"]),
                          f"readinto {gbps(b, r['readinto_s'])}", r["readinto_s"] / r["layer_out_s"], 0.8))
        if "readinto_widen_s" in r:
            lines.append(_row(f"`ds.layer(L, out=buf)` {dtype} vs a float32-output baseline",
                              gbps(out_bytes, r["layer_out_s"]),
                              f"readinto + widen {gbps(out_bytes, r['readinto_widen_s'])}",
                              r["readinto_widen_s"] / r["layer_out_s"], None))
        if r["torch_s"]:
            lines.append(_row(f"`ds.torch(L)` {dtype} (stays bfloat16)", gbps(b, r["torch_s"]),
                              f"readinto {gbps(b, r['readinto_s'])}", r["readinto_s"] / r["torch_s"], 0.8))
        lines.append(_row(f"gather {r['rows']:,} random rows {dtype}", f"{r['get_s'] * 1e3:.1f} ms",
                          f"memmap fancy index {r['memmap_s'] * 1e3:.1f} ms", r["memmap_s"] / r["get_s"], 0.5))
        if "memmap_widen_s" in r:
            lines.append(_row(f"gather {r['rows']:,} random rows {dtype} vs a float32-output baseline",
                              f"{r['get_s'] * 1e3:.1f} ms", f"memmap + widen {r['memmap_widen_s'] * 1e3:.1f} ms",
                              r["memmap_widen_s"] / r["get_s"], None))
    lm, f32 = res["lmprobe_s"], res["dtypes"]["float32"]
    lines.append(_row(f"one layer, all {n:,} prompts (float32, same dataset): `ds.layer(L)`",
                      f"{f32['layer_s'] * 1e3:.1f} ms", f"lmprobe `load_activations` {lm:.2f} s",
                      lm / f32["layer_s"], 100, "× faster"))
    lines.append(_row("the same into a preallocated array: `ds.layer(L, out=buf)`",
                      f"{f32['layer_out_s'] * 1e3:.1f} ms", f"lmprobe `load_activations` {lm:.2f} s",
                      lm / f32["layer_out_s"], None, "× faster"))
    for dtype, (rss, nbytes) in res["rss"].items():
        limit = 1.2 * nbytes + 100e6
        ok = "✅" if rss <= limit else "❌"
        lines.append(f"| peak RSS of `ds.layer(L)` {dtype} (fresh process) | {rss / 1e6:.0f} MB | array "
                     f"{nbytes / 1e6:.0f} MB; limit 1.2× + 100 MB = {limit / 1e6:.0f} MB | {rss / nbytes:.2f}× | ≤ limit {ok} |")
    lines += ["", "Notes:", *NOTES]
    return "\n".join(lines) + "\n"


NOTES = [
    "- Write: the writer hashes every shard (sha256, part of the format) on a second thread while",
    "  writing it, so a checksummed write cannot beat the sha256 rate (the \"info\" rows, same",
    "  run, same bytes). `tofile` of the full-size float32 matrix (328 MB) is throttled by the",
    "  kernel's dirty-page writeback to about that rate; the 164 MB bfloat16 file and the quick",
    "  mode's files are not, and there `tofile` runs at about 3x the sha256 rate, so the 0.8 goal is",
    "  out of reach with checksums on. bfloat16 also pays the exact float32 -> bfloat16 rounding",
    "  (numpy, about 0.15 s per 82 M values) before the write.",
    "- `ds.layer(L)` reads large local runs (>= 16 MB) with parallel threads: a fresh array's page",
    "  faults are CPU work a second core can share; with `out=` it can beat one `readinto`. On this",
    "  shared machine a fresh 328 MB array (numpy asks for transparent huge pages; defrag is",
    "  `madvise`) sometimes stalls in the kernel's page compaction: single calls ranged 57-700 ms,",
    "  and the median ratio for a new array moved between 0.74 and 1.04 over six full runs",
    "  (`out=` 1.13-1.64). Without huge pages the faults alone cost more (median 142 vs 86 ms).",
    "- bfloat16 `layer`/`get` return exact float32, twice the stored bytes: against a baseline with",
    "  the same float32 output (\"float32-output baseline\" rows) they come close to 1; against",
    "  reading the raw bfloat16 bytes they cannot reach the goals. `ds.torch(L)` keeps bfloat16.",
    "- lmprobe reads the same float32 dataset through an offline HF-cache layout (route A of",
    "  reference/lmprobe-v2.md §10); it is timed once (seconds), actstore as the median above.",
    "  lmprobe costs ~0.3 ms per prompt whatever the width, while `ds.layer` is bound by memory",
    "  bandwidth (16 KB per row at dim 4,096), so at this width the ratio sits near 100× and",
    "  moves with the shared machine's noise (64-114× over six full runs); at dim 1,024 it was",
    "  537×. Into a preallocated array (no page faults) it was 97-204×.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    args = ap.parse_args()
    n, d, reps = (2000, 1024, 3) if args.quick else (20000, 4096, 5)
    work = tempfile.mkdtemp(prefix="bench-format-")
    try:
        X = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
        res: dict = {"n": n, "d": d, "reps": reps, "dtypes": {}, "machine": machine(), "versions": versions()}
        for dtype in ("float32", "bfloat16"):
            res["dtypes"][dtype] = bench_dtype(work, X, dtype, reps)
            for p in Path(work).glob("raw-*"):
                p.unlink()
        res["rss"] = {dt: peak_rss(r["dataset"]) for dt, r in res["dtypes"].items()}
        res["lmprobe_s"] = lmprobe_seconds(work, res["dtypes"]["float32"]["dataset"], n, d)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = render(res, args)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "format.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
