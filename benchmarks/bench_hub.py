"""Hub push/pull against the loopback Hub server, Xet on and off, with the client's own bulk
calls as baselines, the cost of the hashing pass push avoids, and requests per ``hf://`` get.

Each figure is measured ``--repeats`` times (default 5) on a fresh server store each time (so
Xet deduplication against an earlier upload never flatters a number); the table gives the
median and the spread (min–max). Modes: ``xet`` (the server speaks Xet, the client as a user
has it: uploads and downloads through ``hf_xet`` and a ``local://`` CAS folder) and ``lfs``
(classic LFS, the client as with ``HF_HUB_DISABLE_XET=1``). The server runs in this process
(threads), so peak RSS covers client and server together.

Figures:

- push: ``push_dataset`` vs ``HfApi.upload_folder`` of the same folder (goal >= 1.0x: push
  hands the client the writer's sha256, so it does not hash every byte again);
- pull one layer: ``pull_dataset(layers=[L])`` vs ``snapshot_download`` of that layer's files
  plus the index (goal >= 0.9x); pull all vs ``snapshot_download`` of the repo;
- sha256 pass: what hashing every shard once more costs (what push skips);
- requests per ``get()`` of 1 % of the rows over ``hf://`` (the Hub rate-limits resolve).

Usage: ``python benchmarks/bench_hub.py [--quick] [--mb N] [--repeats N] [--modes xet,lfs]``
-> ``benchmarks/results/hub.md``. ``--quick`` is ~32 MB; the default ~1 GB.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

_TMP = tempfile.mkdtemp(prefix="bench-hub-")
# huggingface_hub reads these at import time; each server's endpoint is passed explicitly
os.environ.update({"HF_HOME": os.path.join(_TMP, "hf_home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                   "HF_HUB_DISABLE_TELEMETRY": "1", "ACTSTORE_CACHE_DIR": os.path.join(_TMP, "c")})
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_HUB_DISABLE_XET", None)
for _var in ("ACTSTORE_HUB_GAP", "ACTSTORE_HUB_MAX_SPAN"):
    os.environ.pop(_var, None)  # the defaults are what is measured

import numpy as np  # noqa: E402

import actstore  # noqa: E402
from actstore.testing import HubServer  # noqa: E402

TOKEN = "hf_bench"
LAYER = 3


def _write(path: Path, layers: int, rows: int, dim: int) -> int:
    rng = np.random.default_rng(0)
    with actstore.DatasetWriter(str(path), model="bench/model", layers=list(range(layers)),
                                dim=dim, shard_bytes=256 << 20, num_rows=rows) as w:
        step = 1024
        for start in range(0, rows, step):
            n = min(step, rows - start)
            block = rng.standard_normal((n, dim), dtype=np.float32)
            w.add([f"p{start + i}" for i in range(n)], hidden={L: block for L in range(layers)},
                  labels=[i % 2 for i in range(n)])
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _timed(fn):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class _Run:
    """A fresh server store, in one mode, for one measurement."""

    n = 0

    def __init__(self, xet: bool) -> None:
        import huggingface_hub.constants as hf_constants

        _Run.n += 1
        self.root = Path(_TMP) / f"run{_Run.n}"
        hf_constants.HF_HUB_DISABLE_XET = not xet  # the client as a user in this mode has it
        self.hub = HubServer(self.root / "store", tokens={TOKEN: "write"}, xet=xet).start()
        self.endpoint = self.hub.endpoint

    def api(self):  # type: ignore[no-untyped-def]
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=TOKEN)

    def close(self) -> None:
        self.hub.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _measure(ds_dir: Path, xet: bool) -> dict[str, float]:
    from huggingface_hub import snapshot_download

    out: dict[str, float] = {}
    run = _Run(xet)  # baseline push
    try:
        run.api().create_repo("bench/base", repo_type="dataset")
        out["upload_folder"] = _timed(lambda: run.api().upload_folder(
            folder_path=ds_dir, repo_id="bench/base", repo_type="dataset"))
    finally:
        run.close()
    run = _Run(xet)  # actstore push, then the pulls from that repo
    try:
        out["push_dataset"] = _timed(lambda: actstore.push_dataset(
            ds_dir, "bench/acts", token=TOKEN, endpoint=run.endpoint, progress=False))
        layer_files = [f"tensors/hidden_layer{LAYER:03d}_*", "index/*"]
        out["snapshot_layer"] = _timed(lambda: snapshot_download(
            "bench/acts", repo_type="dataset", allow_patterns=layer_files, token=TOKEN,
            endpoint=run.endpoint, local_dir=run.root / "snap_one"))
        out["pull_layer"] = _timed(lambda: actstore.pull_dataset(
            "bench/acts", layers=[LAYER], token=TOKEN, endpoint=run.endpoint,
            out=run.root / "pull_one", progress=False))
        out["snapshot_all"] = _timed(lambda: snapshot_download(
            "bench/acts", repo_type="dataset", token=TOKEN, endpoint=run.endpoint,
            local_dir=run.root / "snap_all"))
        out["pull_all"] = _timed(lambda: actstore.pull_dataset(
            "bench/acts", token=TOKEN, endpoint=run.endpoint, out=run.root / "pull_all",
            progress=False))
        out.update(_get_figures(run))
    finally:
        run.close()
    return out


def _get_figures(run: _Run) -> dict[str, float]:
    """Requests, bytes and time of one ``get()`` of 1 % of the rows of one layer over ``hf://``,
    with the Hub's coalescing policy and with exact per-row ranges (``ACTSTORE_HUB_GAP=0``, the policy
    before #16), each on a freshly opened dataset (its shard headers read by an earlier get)."""
    out: dict[str, float] = {}
    for tag, gap in (("", None), ("exact_", "0")):
        if gap is not None:  # the user setting (actstore.config.range_policy)
            os.environ["ACTSTORE_HUB_GAP"] = gap
        try:
            ds = actstore.open_dataset("hf://datasets/bench/acts", cache=False,
                                       storage_options={"token": TOKEN, "endpoint": run.endpoint})
            n = ds.info.num_prompts
            ds.get([0, n - 1], layers=[LAYER])  # the shard headers
            rows = np.linspace(0, n - 1, max(n // 100, 1)).astype(int)
            run.hub.reset_counters()
            before = ds.source.counters["requests"]
            t = time.perf_counter()
            ds.get(rows, layers=[LAYER])
            t = time.perf_counter() - t
        finally:
            os.environ.pop("ACTSTORE_HUB_GAP", None)
        out[f"{tag}get_requests"] = float(sum(m == "GET" and "/resolve/" in p for m, p, _ in run.hub.requests))
        out[f"{tag}get_all_requests"] = float(len(run.hub.requests))
        out[f"{tag}get_counted"] = float(ds.source.counters["requests"] - before)
        out[f"{tag}get_mb"] = run.hub.bytes_served("bench/acts", "tensors/") / 1e6
        out[f"{tag}get_s"] = t
        out["get_rows"] = float(rows.size)
        out["get_asked_mb"] = rows.size * ds.info.dim * 4 / 1e6
    return out


def _sha_pass(ds_dir: Path) -> float:
    def go() -> None:
        for p in sorted((ds_dir / "tensors").rglob("*.safetensors")):
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
    return _timed(go)


def _fmt(values: list[float], unit: str = "s") -> str:
    med = statistics.median(values)
    if not unit:  # counts
        return f"{med:g} ({min(values):g}–{max(values):g})"
    return f"{med:.2f} {unit} ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="~32 MB instead of ~1 GB")
    ap.add_argument("--mb", type=float, default=None, help="dataset size in MB (overrides --quick)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--modes", default="xet,lfs")
    args = ap.parse_args()
    layers, dim = 8, 1024 if args.quick or args.mb else 4096
    target = args.mb if args.mb is not None else (32 if args.quick else 1074)
    rows = max(int(target * 1e6 / (layers * dim * 4)), 8)
    ds_dir = Path(_TMP) / "ds"
    size = _write(ds_dir, layers, rows, dim)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    sha = [_sha_pass(ds_dir) for _ in range(args.repeats)]
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for done in range(1, args.repeats + 1):  # the modes interleaved; the table rewritten per round
        for m in modes:
            results[m].append(_measure(ds_dir, m == "xet"))
        _report(args, results, sha, layers, rows, dim, size, load0, t0, done)
    shutil.rmtree(_TMP, ignore_errors=True)


def _report(args: argparse.Namespace, results: dict[str, list[dict[str, float]]], sha: list[float],
            layers: int, rows: int, dim: int, size: int, load0: tuple[float, float, float],
            t0: float, done: int) -> None:
    mb = size / 1e6
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load1, wall = os.getloadavg(), time.perf_counter() - t0
    cmd = "python benchmarks/bench_hub.py " + " ".join(sys.argv[1:])
    partial = "" if done == args.repeats else f" (partial: {done} of {args.repeats} rounds so far)"
    lines = ["## Hub push / pull (loopback Hub server, real huggingface_hub + hf_xet)", "",
             f"Command: `{cmd.strip()}`; machine: {platform.machine()}, {os.cpu_count()} cores, "
             f"Python {sys.version.split()[0]}. Dataset: {layers} layers x {rows:,} rows x {dim} "
             f"float32 = {mb:,.0f} MB on disk. {done} runs each{partial}, modes interleaved, a "
             f"fresh server store per run; median (min–max). Load average (1/5/15 min) {load0[0]:.2f}/{load0[1]:.2f}/"
             f"{load0[2]:.2f} at the start, {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} at the end "
             f"({wall / 60:.1f} min of runs); other sessions' tests ran at nice 19 meanwhile.", "",
             "| mode | figure | actstore | baseline | ratio (baseline / actstore time) | goal |",
             "|---|---|---|---|---|---|"]
    for mode, runs in results.items():
        col = {k: [r[k] for r in runs] for k in runs[0]}
        pairs = [("push", "push_dataset", "upload_folder"),
                 (f"pull layer {LAYER}", "pull_layer", "snapshot_layer"),
                 ("pull all", "pull_all", "snapshot_all")]
        goals = {"push": 1.0, f"pull layer {LAYER}": 0.9}
        for name, ours, base in pairs:
            ratios = [b / a for a, b in zip(col[ours], col[base], strict=True)]
            goal = goals.get(name)
            mark = "–" if goal is None else \
                f"≥ {goal:.1f}x {'✅' if statistics.median(ratios) >= goal else '❌'}"
            lines.append(f"| {mode} | {name} | {_fmt(col[ours])} | {_fmt(col[base])} "
                         f"| {_fmt(ratios, 'x')} | {mark} |")
    lines += ["", f"Requests per `ds.get()` of 1 % of the rows of layer {LAYER} over `hf://` (no cache; "
              "shard headers already read): resolve GETs the server answered, all requests it "
              "answered, the requests `ds.source.counters` counted, tensor bytes served, time. "
              "`HUB_GAP` is the Hub coalescing policy (ranges up to 4 MiB apart are one request, "
              "merged reads up to 16 MiB); `exact` is one request per row (`ACTSTORE_HUB_GAP=0`, the "
              "policy before #16).", "",
              "| mode | policy | rows | resolve GETs | all requests | counted | MB served (asked) | time |",
              "|---|---|---|---|---|---|---|---|"]
    for mode, runs in results.items():
        col = {k: [r[k] for r in runs] for k in runs[0]}
        for name, tag in (("HUB_GAP", ""), ("exact", "exact_")):
            lines.append(f"| {mode} | {name} | {int(col['get_rows'][0])} | {_fmt(col[tag + 'get_requests'], '')} "
                         f"| {_fmt(col[tag + 'get_all_requests'], '')} | {_fmt(col[tag + 'get_counted'], '')} "
                         f"| {_fmt(col[tag + 'get_mb'], 'MB')} ({col['get_asked_mb'][0]:.2f}) "
                         f"| {_fmt(col[tag + 'get_s'])} |")
    lines += ["", f"The sha256 pass push skips (every shard hashed once more): {_fmt(sha)} "
              f"= {mb / statistics.median(sha):,.0f} MB/s.", "",
              f"Peak RSS (client + server): {rss:,.0f} MB.", ""]
    out = Path(__file__).resolve().parent / "results" / "hub.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
