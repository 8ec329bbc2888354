"""Format-layer throughput: every figure a ratio against a baseline that does the same work on
the same bytes, in the same run (issue #13 point 6: the old goals were measured against
baselines that did less).

- checksummed write of one layer: ``DatasetWriter`` (sha256 of every file, durable commit: the
  writer fsyncs every file before its rename) vs ``ndarray.tofile`` + ``fsync`` of the stored
  bytes with ``hashlib.sha256`` of the same bytes running concurrently on a second thread
  (each call starts with no dirty pages left by the previous one); goal >= 0.8;
- read one layer into a fresh array: ``ds.layer(L)`` vs ``np.fromfile`` of the same bytes (also
  a fresh array); goal >= 0.9;
- read one layer into a preallocated array: ``ds.layer(L, out=)`` vs ``readinto`` of the same
  bytes into a preallocated page-aligned buffer (the practical read ceiling); goal >= 0.9;
- bfloat16 widened to float32: ``ds.layer(L)`` / ``ds.layer(L, out=)`` vs a baseline with the
  same float32 output reading the same rows (``np.fromfile`` / ``readinto`` of the bfloat16
  bytes, then the exact widening); goal >= 0.8;
- gather 1,000 random rows: ``ds.get`` vs numpy memmap fancy indexing;
- one layer for all prompts vs lmprobe 0.10.3 ``load_activations`` on the same dataset (the
  float32 one, through an offline HF-cache layout; lmprobe runs once, it takes seconds);
- peak RSS of ``ds.layer(L)`` in a fresh process vs the returned array's bytes.

bfloat16 layers come back widened exactly to float32 by default (twice the stored bytes), so for
them the run also reads them as numpy bfloat16 (``dtype="bfloat16"``) and as a torch tensor, and
measures informative baselines that produce the same float32 output (readinto + widen, memmap +
widen). Page cache warm for reads; medians of repeated calls, each baseline called in turn
with what it is compared to. The write and read sections are repeated ``--runs`` times (default
3) and each ratio is reported as the median with its spread (min-max) over those runs.

Usage: ``python benchmarks/bench_format.py [--quick] [--runs N] [--output PATH]`` ->
``benchmarks/results/format.md``. ``ACTSTORE_BENCH_ROWS`` / ``ACTSTORE_BENCH_DIM`` override the
size (a tiny run proves the script works: ``ACTSTORE_BENCH_ROWS=200 ACTSTORE_BENCH_DIM=64``).
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import ml_dtypes
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import actstore  # noqa: E402, I001
from actstore.format.dtypes import bf16_bits_to_f32, f32_to_bf16_bits  # noqa: E402
from actstore.format.writer import DatasetWriter  # noqa: E402

PAGE = 4096
_COUNTER = iter(range(10**9))


@dataclass
class Row:
    figure: str
    ours: str
    base: str
    ratio: float
    goal: float | None = None  # None: informative
    unit: str = ""  # "× faster" for the lmprobe rows
    spread: tuple[float, float] | None = None  # min, max of the ratio over repeated runs

    def render(self) -> str:
        shown = f"{self.ratio:.0f}{self.unit}" if self.unit else f"{self.ratio:.2f}"
        if self.spread is not None:
            shown += f" ({self.spread[0]:.2f}–{self.spread[1]:.2f})"
        if self.goal is None:
            verdict = "info"
        else:
            verdict = f"≥ {self.goal:g}{'×' if self.unit else ''} {'✅' if self.ratio >= self.goal else '❌'}"
        return f"| {self.figure} | {self.ours} | {self.base} | {shown} | {verdict} |"


def gbps(nbytes: float, seconds: float) -> str:
    return f"{nbytes / seconds / 1e9:.2f} GB/s"


def interleaved(fns: dict[str, Callable[[], object]], reps: int,
                before: Callable[[], None] | None = None) -> dict[str, float]:
    """Median seconds of each function, called in turn within every round, so a baseline and
    the code it is compared with sample the same moments of a shared, noisy machine.
    ``before`` runs (untimed) ahead of every call."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            if before:
                before()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def phased_empty(nbytes: int, phase: int = 0) -> np.ndarray:
    """A uint8 buffer whose address is ``phase`` mod 4096 (0: page-aligned).

    Reading a file from offset 0 into a plain ``np.empty`` buffer (address 16 mod 4096, from
    glibc's mmap) is the case the AMD Zen kernel copy runs ~3x slower on; a fair baseline must
    not be handicapped by it.
    """
    slack = np.empty(nbytes + PAGE, dtype=np.uint8)
    skip = (phase - slack.ctypes.data) % PAGE
    out = slack[skip : skip + nbytes]
    out[:] = 0  # fault every page in once
    return out


# -- writes ---------------------------------------------------------------------------------
def write_rows(work: str, X: np.ndarray, dtype: str, reps: int) -> tuple[list[Row], str]:
    n, d = X.shape
    texts = [f"p{i}" for i in range(n)]
    raw = X if dtype == "float32" else f32_to_bf16_bits(X)  # the stored bytes
    inputs = {"float32": X}
    if dtype == "bfloat16":
        inputs["bfloat16"] = raw.view(ml_dtypes.bfloat16)  # e.g. JAX output; bits kept as they are
    made: list[str] = []

    def fresh(prefix: str) -> str:
        made.append(os.path.join(work, f"{prefix}-{dtype}-{next(_COUNTER)}"))
        return made[-1]

    hasher = ThreadPoolExecutor(max_workers=1)  # the baseline's second thread, made once

    def tofile_and_hash(data: np.ndarray = raw) -> None:
        """The work a checksummed durable write must do, with no format around it: write the
        bytes and fsync them on this thread while sha256 hashes them on another (hashlib and
        file writes both release the GIL)."""
        digest = hasher.submit(lambda: hashlib.sha256(memoryview(data).cast("B")).digest())
        with open(fresh("raw"), "wb") as f:
            data.tofile(f)
            f.flush()
            os.fsync(f.fileno())
        digest.result()

    def write(source: str, path: str | None = None) -> str:
        p = path or fresh("ds")  # the writer fsyncs every file before its rename (durable)
        with DatasetWriter(p, model="bench", layers=[0], dim=d, dtype=dtype, num_rows=n) as w:
            w.add(texts, hidden={0: inputs[source]})
        return p

    def settle() -> None:  # no files or dirty pages from the previous call: each starts alike
        for p in made:
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
        made.clear()
        os.sync()

    def convert_tofile_and_hash() -> None:
        """The same, starting from float32 input: round to bfloat16 with ml_dtypes (what a user
        would call) first, then write and hash those bytes concurrently."""
        tofile_and_hash(X.astype(ml_dtypes.bfloat16).view(np.uint16))

    fns: dict[str, Callable[[], object]] = {"tofile_sha": tofile_and_hash}
    if dtype == "bfloat16":
        fns["convert_tofile_sha"] = convert_tofile_and_hash
    for src in inputs:
        fns[f"write:{src}"] = lambda src=src: write(src)
    t = interleaved(fns, reps, before=settle)
    t_sha = float(np.median([_timed(lambda: hashlib.sha256(memoryview(raw).cast("B")).digest())
                             for _ in range(reps)]))
    hasher.shutdown()
    b = raw.nbytes
    base = f"tofile + fsync ‖ sha256 {gbps(b, t['tofile_sha'])}"
    rows = []
    for src in inputs:
        what = f"checksummed write {dtype}" + (f" from {src} input" if dtype == "bfloat16" else "")
        if dtype == "bfloat16" and src == "float32":  # the baseline rounds to bfloat16 too
            key = "convert_tofile_sha"
            shown = f"ml_dtypes cast, then tofile + fsync ‖ sha256 {gbps(b, t[key])}"
        else:
            key, shown = "tofile_sha", base
        rows.append(Row(f"{what} (sha256, durable commit)", gbps(b, t[f"write:{src}"]), shown,
                        t[key] / t[f"write:{src}"], 0.8))
    rows.append(Row(f"(baseline check) sha256 alone of the same bytes {dtype}", gbps(b, t_sha), base,
                    t["tofile_sha"] / t_sha))
    settle()
    path = write("float32", os.path.join(work, f"dataset-{dtype}"))  # kept for the reads
    return rows, path


def over_runs(runs: list[list[Row]]) -> list[Row]:
    """One row per figure: the run with the median ratio, and the ratio's min-max over runs."""
    out = []
    for same in zip(*runs):
        assert len({r.figure for r in same}) == 1, [r.figure for r in same]
        ranked = sorted(same, key=lambda r: r.ratio)
        mid = ranked[(len(ranked) - 1) // 2]
        out.append(replace(mid, spread=(ranked[0].ratio, ranked[-1].ratio)) if len(same) > 1 else mid)
    return out


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- reads ----------------------------------------------------------------------------------
def read_rows(work: str, path: str, X: np.ndarray, dtype: str, reps: int) -> list[Row]:
    n, d = X.shape
    raw = X if dtype == "float32" else f32_to_bf16_bits(X)
    raw_path = os.path.join(work, f"raw-read-{dtype}")
    raw.tofile(raw_path)
    ds = actstore.open_dataset(path)
    ds.layer(0)  # warm the page cache and the header cache
    b, out_bytes = raw.nbytes, n * d * 4
    buf, naive = phased_empty(b, 0), np.empty(b, dtype=np.uint8)
    naive[:] = 0

    def readinto(target: np.ndarray) -> None:
        with open(raw_path, "rb", buffering=0) as f:
            f.readinto(memoryview(target))

    out = np.zeros((n, d), dtype=np.float32)
    stored = raw.dtype  # float32, or uint16 bfloat16 bits
    reads: dict[str, Callable[[], object]] = {
        "readinto": lambda: readinto(buf), "readinto_naive": lambda: readinto(naive),
        # a fresh array holding the same bytes, as ds.layer(L) returns one
        "fromfile": lambda: np.fromfile(raw_path, dtype=stored),
        "layer": lambda: ds.layer(0), "layer_out": lambda: ds.layer(0, out=out)}
    if dtype == "bfloat16":
        ds.torch(0)  # import torch outside the timed runs
        out16 = np.zeros((n, d), dtype=ml_dtypes.bfloat16)
        bits, widened = buf.view(np.uint16).reshape(n, d), np.zeros((n, d), dtype=np.float32)
        reads |= {"torch": lambda: ds.torch(0), "layer16": lambda: ds.layer(0, dtype="bfloat16"),
                  "layer16_out": lambda: ds.layer(0, out=out16),
                  # baselines with the same float32 output as ds.layer: read the rows, widen them
                  "readinto_widen": lambda: (readinto(buf), bf16_bits_to_f32(bits, out=widened)),
                  "fromfile_widen": lambda: bf16_bits_to_f32(np.fromfile(raw_path, dtype=np.uint16))}
    r = interleaved(reads, reps * 2)
    base = f"readinto {gbps(b, r['readinto'])}"
    fresh = f"np.fromfile {gbps(b, r['fromfile'])}"
    ratio = lambda k, to="readinto": r[to] / r[k]  # noqa: E731
    rows = []
    if dtype == "float32":
        rows += [Row("`ds.layer(L)` float32, new array", gbps(b, r["layer"]), fresh,
                     ratio("layer", "fromfile"), 0.9),
                 Row("`ds.layer(L, out=buf)` float32", gbps(b, r["layer_out"]), base, ratio("layer_out"), 0.9)]
    else:
        rows += [
            Row("`ds.layer(L, dtype=\"bfloat16\")`, new numpy bfloat16 array", gbps(b, r["layer16"]), fresh,
                ratio("layer16", "fromfile")),
            Row("`ds.layer(L, out=buf)` into numpy bfloat16", gbps(b, r["layer16_out"]), base,
                ratio("layer16_out")),
            Row("`ds.torch(L)` bfloat16 (stays bfloat16)", gbps(b, r["torch"]), fresh, ratio("torch", "fromfile")),
            Row("`ds.layer(L)` bfloat16 → float32 (default), new array, vs a float32-output baseline",
                f"{gbps(out_bytes, r['layer'])} out",
                f"np.fromfile + widen {gbps(out_bytes, r['fromfile_widen'])} out", ratio("layer", "fromfile_widen"),
                0.8),
            Row("`ds.layer(L, out=buf)` bfloat16 → float32, vs a float32-output baseline",
                f"{gbps(out_bytes, r['layer_out'])} out", f"readinto + widen {gbps(out_bytes, r['readinto_widen'])} out",
                ratio("layer_out", "readinto_widen"), 0.8)]
    rows.append(Row(f"(baseline check) readinto {dtype} into a plain `np.empty` buffer",
                    gbps(b, r["readinto_naive"]), base, r["readinto"] / r["readinto_naive"]))
    rows += gather_rows(raw_path, raw, ds, dtype, reps)
    return rows


def gather_rows(raw_path: str, raw: np.ndarray, ds: actstore.Dataset, dtype: str, reps: int) -> list[Row]:
    n, d = raw.shape
    rows_ = np.random.default_rng(0).choice(n, min(1000, n), replace=False)
    mm = np.memmap(raw_path, dtype=raw.dtype, mode="r", shape=(n, d))
    fns: dict[str, Callable[[], object]] = {"memmap": lambda: np.asarray(mm[rows_]),
                                            "get": lambda: ds.get(rows_, layers=[0])}
    if dtype == "bfloat16":
        fns |= {"get16": lambda: ds.get(rows_, layers=[0], dtype="bfloat16"),
                "memmap_widen": lambda: bf16_bits_to_f32(mm[rows_])}
    g = interleaved(fns, reps * 4)
    k = f"{rows_.size:,}"
    base = f"memmap fancy index {g['memmap'] * 1e3:.1f} ms"
    ms = lambda key: f"{g[key] * 1e3:.1f} ms"  # noqa: E731
    if dtype == "float32":
        return [Row(f"gather {k} random rows float32", ms("get"), base, g["memmap"] / g["get"], 0.5)]
    return [
        Row(f"gather {k} random rows, `dtype=\"bfloat16\"`", ms("get16"), base, g["memmap"] / g["get16"], 0.5),
        # the memmap baseline returns bfloat16 (half the bytes, no widening): informative only;
        # the goal applies to the baseline that returns the same float32 output
        Row(f"gather {k} random rows bfloat16 → float32 (default)", ms("get"), base, g["memmap"] / g["get"]),
        Row(f"gather {k} random rows bfloat16 → float32 vs a float32-output baseline", ms("get"),
            f"memmap + widen {ms('memmap_widen')}", g["memmap_widen"] / g["get"], 0.5)]


# -- lmprobe, memory --------------------------------------------------------------------------
RSS_CODE = r"""
import sys, time, actstore

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

ds = actstore.open_dataset(sys.argv[1])
ds.info
kw = {"dtype": sys.argv[2]} if len(sys.argv) > 2 else {}
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS")
t0 = time.perf_counter()
X = ds.layer(0, **kw)
seconds = time.perf_counter() - t0
print(before, status("VmHWM"), X.nbytes, seconds)
"""

FIRST_READINTO_CODE = r"""
import sys, time
import numpy as np
n = int(sys.argv[2])
t0 = time.perf_counter()
slack = np.empty(n + 4096, dtype=np.uint8)  # what a first read in a fresh process allocates
skip = -slack.ctypes.data % 4096  # page-aligned: no kernel-copy aliasing (see the notes)
buf = slack[skip : skip + n]
with open(sys.argv[1], "rb", buffering=0) as f:
    f.readinto(memoryview(buf))
print(time.perf_counter() - t0)
"""


def fresh_process_rows(path: str, raw_path: str, label: str, *args: str) -> list[Row]:
    """Peak RSS of one ``ds.layer`` in a fresh process, and that first call's time next to a
    first ``readinto`` into a new buffer in another fresh process (both pay first-touch page
    faults, where THP compaction can stall for up to a second on this machine)."""
    out = subprocess.run([sys.executable, "-c", RSS_CODE, path, *args], capture_output=True, text=True,
                         check=True)
    before, after, nbytes, seconds = out.stdout.split()
    rss, limit = int(after) - int(before), 1.2 * int(nbytes) + 100e6
    call = f"`ds.layer(L{', dtype=' + repr(args[0]) if args else ''})` {label}"
    base = subprocess.run([sys.executable, "-c", FIRST_READINTO_CODE, raw_path, str(os.path.getsize(raw_path))],
                          capture_output=True, text=True, check=True)
    first, raw_first = float(seconds), float(base.stdout)
    return [Row(f"peak RSS of {call} (fresh process)", f"{rss / 1e6:.0f} MB",
                f"array {int(nbytes) / 1e6:.0f} MB; limit 1.2× + 100 MB = {limit / 1e6:.0f} MB", limit / rss, 1.0),
            Row(f"first call of {call} in a fresh process", f"{first * 1e3:.0f} ms",
                f"first readinto into a new buffer {raw_first * 1e3:.0f} ms", raw_first / first)]


LMPROBE_CODE = r"""
import json, os, shutil, sys, time
src, cache = sys.argv[1], sys.argv[2]
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


def lmprobe_rows(work: str, path: str, n: int, d: int, reps: int) -> list[Row]:
    """lmprobe's ``load_activations`` of one layer of all prompts (per-prompt lookups; one run,
    it takes seconds) vs ``ds.layer`` on the same dataset."""
    env = dict(os.environ)
    env.update(HF_HOME=os.path.join(work, "hf"), HF_HUB_CACHE=os.path.join(work, "hf", "hub"),
               HF_HUB_OFFLINE="1", LMPROBE_CACHE_DIR=os.path.join(work, "lmprobe"))
    out = subprocess.run([sys.executable, "-c", LMPROBE_CODE, path, env["HF_HUB_CACHE"]],
                         capture_output=True, text=True, env=env, check=True)
    lm = json.loads(out.stdout.strip().splitlines()[-1])
    assert lm["shape"] == [n, d]
    ds = actstore.open_dataset(path)
    buf = np.zeros((n, d), dtype=np.float32)
    t = interleaved({"new": lambda: ds.layer(0), "out": lambda: ds.layer(0, out=buf)}, reps * 2)
    base = f"lmprobe `load_activations` {lm['seconds']:.2f} s"
    return [Row(f"one layer, all {n:,} prompts (float32, same dataset): `ds.layer(L)`",
                f"{t['new'] * 1e3:.1f} ms", base, lm["seconds"] / t["new"], 100, "× faster"),
            Row("the same into a preallocated array: `ds.layer(L, out=buf)`", f"{t['out'] * 1e3:.1f} ms",
                base, lm["seconds"] / t["out"], None, "× faster")]


# -- report ---------------------------------------------------------------------------------
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
    for name in ("actstore", "numpy", "pyarrow", "safetensors", "ml_dtypes", "lmprobe"):
        try:
            out.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(out)


NOTES = """\
- Writes: every call starts after the previous call's files are deleted and `sync` has run, so
  neither side is slowed by the other's dirty pages. The writer always commits durably (every
  file fsync'ed before its rename) and hashes every shard (sha256, part of the format), so the
  baseline does the same work without the format: `tofile` + `fsync` of the stored bytes while
  `hashlib.sha256` of the same bytes runs on a second thread. (Earlier versions compared with a
  bare `tofile` into the page cache, which did neither, and reported 0.25.) One file's sha256
  cannot be split, so both sides are bounded by the "sha256 alone" row on a fast disk.
  A bfloat16 write from float32 input also rounds every value, so its baseline rounds with
  `ml_dtypes` (`astype(bfloat16)`) before it writes and hashes.
- Reads: the baseline reads the raw bytes with one `readinto` into a page-aligned buffer. On AMD
  Zen CPUs the kernel's copy (`rep movsb`) runs ~3x slower when the destination lies 1-31 bytes
  past the source modulo 4 KiB, which is exactly a plain `np.empty` buffer (16 mod 4096) read
  from file offset 0: the "baseline check" row. Earlier runs used that buffer, so their read
  ratios on this CPU were inflated up to 4x. The reader bounces such reads through a
  phase-matched scratch buffer.
- A fresh array costs its page faults (the kernel zeroes every page first); the fresh-array
  rows are compared with `np.fromfile`, which pays the same faults, and `out=` with `readinto`
  into a preallocated buffer. The ratio in parentheses is the spread (min–max) over the runs.
- bfloat16 read as float32 (the default, exact) writes twice the stored bytes, so it is
  compared with baselines that read the same bfloat16 rows and produce the same float32 output
  (`np.fromfile` + widen, `readinto` + widen into a preallocated array). `dtype="bfloat16"`
  (numpy bfloat16 via ml_dtypes) and `ds.torch(L)` return the stored bits and are compared with
  the raw bytes directly (informative).
- lmprobe reads the same float32 dataset through an offline HF-cache layout (route A of
  reference/lmprobe-v2.md §10); it is timed once (seconds), actstore as the median of repeats.
- Peak RSS ratios are limit ÷ measured peak (≥ 1 meets the limit). The first call in a fresh
  process pays first-touch page faults on both sides; with transparent huge pages (numpy asks
  for them; defrag is `madvise` here) the kernel may compact memory first, so these single
  timings swing between tens of milliseconds and over a second from run to run.
"""


def render(rows: list[Row], n: int, d: int, reps: int, quick: bool, runs: int) -> str:
    lines = [
        "## Format: writer and reader (`benchmarks/bench_format.py`)",
        "",
        f"Command: `python benchmarks/bench_format.py{' --quick' if quick else ''}`; {n:,} × {d:,} per "
        f"layer, float32 and bfloat16; medians of {reps}-{reps * 4} calls, each baseline called in turn "
        f"with what it is compared to; write and read ratios are the median (min–max) of {runs} runs. "
        f"Machine: {machine()}. Versions: {versions()}.",
        "",
        "| figure | actstore | baseline (same run, same bytes) | ratio | goal |",
        "|---|---:|---:|---:|---|",
        *(r.render() for r in rows),
        "",
        "Notes:",
        NOTES,
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    ap.add_argument("--runs", type=int, default=3, help="repeat the write and read sections (spread)")
    ap.add_argument("--output", default=str(HERE / "results" / "format.md"), help="where the section goes")
    args = ap.parse_args()
    n, d, reps = (2000, 1024, 3) if args.quick else (20000, 4096, 5)
    n = int(os.environ.get("ACTSTORE_BENCH_ROWS", n))
    d = int(os.environ.get("ACTSTORE_BENCH_DIM", d))
    work = tempfile.mkdtemp(prefix="bench-format-")
    rows: list[Row] = []
    try:
        X = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
        paths: dict[str, str] = {}
        runs: list[list[Row]] = []
        for run in range(max(1, args.runs)):
            this: list[Row] = []
            folder = os.path.join(work, f"run{run}")
            os.makedirs(folder)
            for dtype in ("float32", "bfloat16"):
                written, paths[dtype] = write_rows(folder, X, dtype, reps)
                this += written
                this += read_rows(work, paths[dtype], X, dtype, reps)
            runs.append(this)
        rows += over_runs(runs)
        rows += lmprobe_rows(work, paths["float32"], n, d, reps)
        raw = {dt: os.path.join(work, f"raw-read-{dt}") for dt in paths}
        rows += fresh_process_rows(paths["float32"], raw["float32"], "float32")
        rows += fresh_process_rows(paths["bfloat16"], raw["bfloat16"], "bfloat16 → float32")
        rows += fresh_process_rows(paths["bfloat16"], raw["bfloat16"], "bfloat16", "bfloat16")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = render(rows, n, d, reps, args.quick, args.runs)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
