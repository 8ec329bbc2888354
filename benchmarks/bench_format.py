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

    t_tofile = median_time(baseline_write, reps)
    t_write = median_time(actstore_write, reps)
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
    t_readinto = median_time(readinto, reps * 2)
    t_layer = median_time(lambda: ds.layer(0), reps * 2)
    t_layer_out = median_time(lambda: ds.layer(0, out=out), reps * 2)
    t_torch = median_time(lambda: ds.torch(0), reps * 2) if dtype == "bfloat16" else None
    rows = np.random.default_rng(0).choice(n, min(1000, n), replace=False)
    mm = np.memmap(raw_path, dtype=raw_arr.dtype, mode="r", shape=(n, d))
    t_memmap = median_time(lambda: np.asarray(mm[rows]), reps * 4)
    t_get = median_time(lambda: ds.get(rows, layers=[0]), reps * 4)
    t_sha = median_time(lambda: hashlib.sha256(memoryview(raw_arr).cast("B")).digest(), reps)
    res = {
        "bytes": raw_bytes,
        "tofile_s": t_tofile, "write_s": t_write, "sha256_s": t_sha,
        "readinto_s": t_readinto, "layer_s": t_layer, "layer_out_s": t_layer_out, "torch_s": t_torch,
        "memmap_s": t_memmap, "get_s": t_get, "rows": int(rows.size),
        "dataset": paths["ds"],
    }
    if dtype == "bfloat16":  # baselines with the same float32 output as ds.layer / ds.get
        bits = buf.view(np.uint16).reshape(n, d)
        widen = actstore.format.dtypes.bf16_bits_to_f32

        def readinto_widen() -> None:
            readinto()
            widen(bits, out=out)

        res["readinto_widen_s"] = median_time(readinto_widen, reps * 2)
        res["memmap_widen_s"] = median_time(lambda: widen(mm[rows]), reps * 4)
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


def lmprobe_vs_actstore(work: str, path: str, n: int, d: int) -> dict[str, float]:
    """Load one layer of all prompts of the dataset at ``path``: lmprobe's per-prompt lookups
    (one run: it takes seconds) vs the median of ``ds.layer``."""
    env = dict(os.environ)
    env.update(HF_HOME=os.path.join(work, "hf"), HF_HUB_CACHE=os.path.join(work, "hf", "hub"),
               HF_HUB_OFFLINE="1", LMPROBE_CACHE_DIR=os.path.join(work, "lmprobe"))
    out = subprocess.run([sys.executable, "-c", LMPROBE_CODE, path, env["HF_HUB_CACHE"]],
                         capture_output=True, text=True, env=env, check=True)
    lm = json.loads(out.stdout.strip().splitlines()[-1])
    ds = actstore.open_dataset(path)
    t_act = median_time(lambda: ds.layer(0), 5)
    assert lm["shape"] == [n, d]
    return {"n": n, "d": d, "lmprobe_s": lm["seconds"], "actstore_s": t_act}


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
        f"{res['reps']}-{res['reps'] * 4} runs. Machine: {res['machine']}. Versions: {res['versions']}.",
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
    lm = res["lmprobe"]
    speed = lm["lmprobe_s"] / lm["actstore_s"]
    lines.append(_row(f"one layer, all {lm['n']:,} prompts (float32, dim {lm['d']:,}, same dataset)",
                      f"{lm['actstore_s'] * 1e3:.1f} ms", f"lmprobe `load_activations` {lm['lmprobe_s']:.2f} s",
                      speed, 100, "× faster"))
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
    "  mode's files are not, and there `tofile` runs at 2-3x the sha256 rate, so the 0.8 goal is",
    "  out of reach with checksums on. bfloat16 also pays the exact float32 -> bfloat16 rounding",
    "  (numpy, about 0.15 s per 82 M values) before the write.",
    "- `ds.layer(L)` reads large local runs (>= 16 MB) with parallel threads: a fresh array's page",
    "  faults are CPU work a second core can share; with `out=` it can beat one `readinto`.",
    "- bfloat16 `layer`/`get` return exact float32, twice the stored bytes: against a baseline with",
    "  the same float32 output (\"float32-output baseline\" rows) they come close to 1; against",
    "  reading the raw bfloat16 bytes they cannot reach the goals. `ds.torch(L)` keeps bfloat16.",
    "- lmprobe reads the same float32 dataset through an offline HF-cache layout (route A of",
    "  reference/lmprobe-v2.md §10); it is timed once (seconds), actstore as a median.",
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
        res["lmprobe"] = lmprobe_vs_actstore(work, res["dtypes"]["float32"]["dataset"], n, d)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = render(res, args)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "format.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
