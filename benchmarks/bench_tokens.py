"""Token-scale datasets (issue #14): index size, open time and RSS, and token reads.

Writes ``benchmarks/results/tokens.md``. Figures, each against a goal or a baseline of the
same run:

1. A full-sequence dataset of ``--rows`` prompts x ``--tokens`` tokens (small ``--dim``), in the
   compact layout (spec section 5b) and, at ``--compat-rows`` prompts (the per-token lists do
   not fit in memory at full size), the lmprobe-compatible layout: index bytes per row, open
   time (``open_dataset`` with its imports done, and the imports a fresh process pays), the
   index bytes read at open, peak RSS (VmHWM) after the open and after the first
   ``token_range`` (which builds the token map); both layouts are also opened over the
   loopback HTTP range server (``tests/cache/conftest.py``, its own process): open time and
   the bytes the server sent over the index's size (goals <= 1.5 s, <= 2 %).
1b. A pooled index of ``--pooled-rows`` short prompts (10^7): the same open figures, local and
   over HTTP.
2. ``get_tokens`` of ``--ids`` random token ids vs numpy memmap fancy indexing of the same
   stored rows (locations computed outside the timing); goal >= 0.5.
3. ``tokens(row)`` latency (median over random rows).

Usage: ``python benchmarks/bench_tokens.py`` (10^6 x 128, the issue's size) or
``python benchmarks/bench_tokens.py --quick`` (2,000 x 16: only checks that it runs).
"""

from __future__ import annotations

import argparse
import json
import os
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

import actstore  # noqa: E402
from actstore.format import spec  # noqa: E402
from actstore.format.writer import DatasetWriter  # noqa: E402

OPEN_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import actstore
from actstore.open import open_dataset  # what open imports (numpy, pyarrow, pyarrow.parquet)
t1 = time.perf_counter()
# peak RSS of this process image (VmHWM; ru_maxrss would carry the forking parent's peak)
rss = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
base = rss()
ds = open_dataset(sys.argv[1], cache=False)
t2 = time.perf_counter()
out = {"open_s": t2 - t1, "import_s": t1 - t0, "open_rss_mb": rss(), "import_rss_mb": base,
       "fetched": ds._s.table.fetched}
if sys.argv[2] == "map":
    t1 = time.perf_counter()
    ds.token_range(len(ds) - 1)
    out["map_s"] = time.perf_counter() - t1
    out["rss_mb"] = rss()
print(json.dumps(out))
"""


def write(path: Path, rows: int, tokens: int, dim: int, compat: bool) -> float:
    rng = np.random.default_rng(0)
    block = 10_000
    t0 = time.perf_counter()
    with DatasetWriter(str(path), model="bench", layers=[0], dim=dim, dtype="float16",
                       pooling="all", num_rows=rows, lmprobe_compat=compat, shard_bytes=256 << 20) as w:
        for a in range(0, rows, block):
            n = min(block, rows - a)
            x = rng.standard_normal((n, tokens, dim), dtype=np.float32).astype(np.float16)
            w.add([f"prompt {i}" for i in range(a, a + n)], hidden={0: list(x)})
    return time.perf_counter() - t0


def write_pooled(path: Path, rows: int, dim: int) -> float:
    """A pooled (last-token) dataset of ``rows`` short prompts."""
    rng = np.random.default_rng(0)
    block = 100_000
    t0 = time.perf_counter()
    with DatasetWriter(str(path), model="bench", layers=[0], dim=dim, dtype="float16",
                       num_rows=rows, shard_bytes=256 << 20) as w:
        for a in range(0, rows, block):
            n = min(block, rows - a)
            x = rng.standard_normal((n, dim), dtype=np.float32).astype(np.float16)
            w.add([f"p{i}" for i in range(a, a + n)], hidden={0: x})
    return time.perf_counter() - t0


class Server:
    """The loopback range server of ``tests/cache/conftest.py``, in its own process."""

    def __init__(self, root: Path) -> None:
        script = HERE.parent / "tests" / "cache" / "conftest.py"
        self.proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()  # type: ignore[union-attr]

    def sent(self, reset: bool = False) -> int:
        with urllib.request.urlopen(f"{self.url}/__control?{'reset=1' if reset else 'x=1'}") as r:
            return int(json.loads(r.read())["bytes"])

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def child(code: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=True, env=env).stdout.strip()


def open_figures(path: Path, repeats: int, *, url: str | None = None, server: Server | None = None,
                 token_map: bool = True) -> dict[str, float]:
    """Medians over ``repeats`` fresh processes, with the min-max spread of the open time;
    over HTTP (``url``), the bytes the server sent for each open."""
    runs = []
    for _ in range(repeats):
        if server is not None:
            server.sent(reset=True)
        runs.append(json.loads(child(OPEN_CHILD, url or str(path), "map" if token_map else "-")))
        if server is not None:
            runs[-1]["sent"] = server.sent()
    out = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    out["open_min"] = min(r["open_s"] for r in runs)
    out["open_max"] = max(r["open_s"] for r in runs)
    out["index_bytes"] = (path / spec.INDEX_PATH).stat().st_size
    return out


def spread(f: dict[str, float]) -> str:
    return f"{f['open_s']:.3f} ({f['open_min']:.3f}–{f['open_max']:.3f})"


def mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def memmaps(ds: actstore.Dataset) -> list[np.ndarray]:
    v = ds._view(None)
    maps = []
    for sh in range(len(v.shard_rows)):
        e = ds._entry(v, 0, sh)
        p = Path(ds.url) / v.path(0, sh)
        maps.append(np.memmap(p, dtype=np.float16, mode="r", offset=e.start, shape=tuple(e.shape)))
    return maps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--dim", type=int, default=4)
    ap.add_argument("--compat-rows", type=int, default=40_000)
    ap.add_argument("--pooled-rows", type=int, default=10_000_000,
                    help="rows of the pooled index (short texts); 0 skips it")
    ap.add_argument("--ids", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="2,000 x 16 tokens: only checks that it runs")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "tokens.md")
    a = ap.parse_args()
    if a.quick:
        a.rows, a.tokens, a.compat_rows, a.ids, a.repeats, a.pooled_rows = 2_000, 16, 1_000, 5_000, 1, 20_000
    work = Path(tempfile.mkdtemp(prefix="bench_tokens_"))
    server = Server(work)
    try:
        lines = ["# Token-scale datasets (`benchmarks/bench_tokens.py`)", "",
                 f"Command: `python benchmarks/bench_tokens.py --rows {a.rows} --tokens {a.tokens} "
                 f"--dim {a.dim} --compat-rows {a.compat_rows} --pooled-rows {a.pooled_rows}`; float16, "
                 f"medians of {a.repeats} fresh processes (open time: median (min–max)); "
                 f"load at start: `{os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
                 f"{os.getloadavg()[2]:.2f}` (other helpers' tests run at nice 19 alongside).", "",
                 "`open s` is `open_dataset` with its imports done (a notebook that has imported "
                 "actstore); `imports s` is what a fresh process pays once before it (numpy, pyarrow, "
                 "actstore's format modules). RSS is the process's peak (VmHWM), imports included.", "",
                 "| layout | rows × tokens | write s | index B/row | open s | imports s | index bytes read at open | "
                 "RSS after open MB | + token map s | peak RSS with map MB | imports alone MB |",
                 "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        remote: list[str] = []
        for name, rows, compat in (("compact", a.rows, False), ("lmprobe-compatible", a.compat_rows, True)):
            path = work / name
            wt = write(path, rows, a.tokens, a.dim, compat)
            f = open_figures(path, a.repeats)
            lines.append(f"| {name} | {rows:,} × {a.tokens} | {wt:.1f} | {f['index_bytes'] / rows:.1f} | "
                         f"{spread(f)} | {f['import_s']:.2f} | {f['fetched'] / f['index_bytes']:.1%} | {f['open_rss_mb']:.0f} | "
                         f"{f['map_s']:.3f} | {f['rss_mb']:.0f} | {f['import_rss_mb']:.0f} |")
            # both layouts over HTTP (issue #14 point 6 asks for the same figures for both)
            h = open_figures(path, a.repeats, url=f"{server.url}/{name}", server=server, token_map=False)
            remote.append(f"| HTTP (loopback), {name} | {rows:,} × {a.tokens} | {spread(h)} "
                          f"{mark(h['open_s'] <= 1.5)} | {h['sent'] / h['index_bytes']:.2%} "
                          f"{mark(h['sent'] <= 0.02 * h['index_bytes'])} | {h['open_rss_mb']:.0f} |")
            if name == "compact":
                compact = f
            if name != "compact":
                shutil.rmtree(path)
        if a.pooled_rows:
            path = work / "pooled"
            wt = write_pooled(path, a.pooled_rows, a.dim)
            p = open_figures(path, a.repeats, token_map=False)
            h = open_figures(path, a.repeats, url=f"{server.url}/pooled", server=server, token_map=False)
            lines.append(f"| pooled (last token), texts `p<i>` | {a.pooled_rows:,} × 1 | {wt:.1f} | "
                         f"{p['index_bytes'] / a.pooled_rows:.1f} | {spread(p)} | {p['import_s']:.2f} | "
                         f"{p['fetched'] / p['index_bytes']:.1%} | {p['open_rss_mb']:.0f} | | | "
                         f"{p['import_rss_mb']:.0f} |")
            remote.append(f"| HTTP (loopback), pooled | {a.pooled_rows:,} × 1 | {spread(h)} "
                          f"{mark(h['open_s'] <= 1.5)} | {h['sent'] / h['index_bytes']:.2%} "
                          f"{mark(h['sent'] <= 0.02 * h['index_bytes'])} | {h['open_rss_mb']:.0f} |")
            shutil.rmtree(path)
        lines += ["", "Goals (issue #14): index ≤ 24 B/row plus the texts, open ≤ 0.5 s, RSS of "
                  "`open_dataset` ≤ 300 MB, for the compact layout at 10^6 × 128 and a pooled index of "
                  "10^7 rows:", "",
                  f"- compact 10^6 × 128: open {compact['open_s']:.3f} s {mark(compact['open_s'] <= 0.5)} "
                  f"(a fresh process, imports included: {compact['open_s'] + compact['import_s']:.2f} s "
                  f"{mark(compact['open_s'] + compact['import_s'] <= 0.5)}), "
                  f"RSS after open {compact['open_rss_mb']:.0f} MB {mark(compact['open_rss_mb'] <= 300)}, "
                  f"index {compact['index_bytes'] / a.rows:.1f} B/row {mark(compact['index_bytes'] / a.rows <= 24)}"]
        if a.pooled_rows:
            lines.append(f"- pooled {a.pooled_rows:,} rows: open {p['open_s']:.3f} s {mark(p['open_s'] <= 0.5)} "
                         f"(fresh process, imports included: {p['open_s'] + p['import_s']:.2f} s "
                         f"{mark(p['open_s'] + p['import_s'] <= 0.5)}), "
                         f"RSS after open {p['open_rss_mb']:.0f} MB {mark(p['open_rss_mb'] <= 300)}")
        lines += ["", "Remote opens (`open_dataset(url, cache=False)`, the loopback range server of "
                  "`tests/cache/conftest.py` in its own process; bytes = what the server sent for the open, "
                  "over the index file's size; goals ≤ 1.5 s and ≤ 2 % without texts):", "",
                  "| open | rows × tokens | open s | bytes sent / index bytes | RSS after open MB |",
                  "|---|---|---:|---:|---:|", *remote, "",
                  f"Load while it ran: `{os.getloadavg()[0]:.2f}` at the end (1-minute average).", ""]
        ds = actstore.open_dataset(str(work / "compact"))
        rng = np.random.default_rng(1)
        ids = rng.integers(0, ds.num_tokens_total, a.ids)
        t = ds._token_layout()
        s, o = t.locate(ids)
        maps = memmaps(ds)
        ds.get_tokens(ids[:10], layers=[0])  # headers read once
        ours, base = [], []
        for _ in range(max(3, a.repeats)):
            t0 = time.perf_counter()
            got = ds.get_tokens(ids, layers=[0], dtype=np.float16)[:, 0]
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ref = np.empty((ids.size, a.dim), np.float16)
            for sh in np.unique(s):
                sel = np.flatnonzero(s == sh)
                ref[sel] = maps[sh][o[sel]]
            base.append(time.perf_counter() - t0)
        assert np.array_equal(got, ref)
        mo, mb = float(np.median(ours)), float(np.median(base))
        ratios = [b / o for b, o in zip(base, ours)]  # each round against its own baseline
        rows = rng.integers(0, len(ds), 200)
        lat = []
        for r in rows:
            t0 = time.perf_counter()
            ds.tokens(int(r), 0)
            lat.append(time.perf_counter() - t0)
        lines += ["| figure | actstore | baseline | ratio | goal |", "|---|---:|---:|---:|---|",
                  f"| `get_tokens` of {a.ids:,} random token ids | {mo * 1e3:.1f} ms | memmap fancy index "
                  f"{mb * 1e3:.1f} ms | {np.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}, "
                  f"{len(ratios)} rounds) | ≥ 0.5 {'✅' if np.median(ratios) >= 0.5 else '❌'} |",
                  f"| `tokens(row)` latency ({a.tokens} tokens, median of {rows.size}) | "
                  f"{np.median(lat) * 1e6:.0f} µs | | | info |", ""]
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text("\n".join(lines))
        print("\n".join(lines))
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
