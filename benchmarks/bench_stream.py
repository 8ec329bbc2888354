"""Stream benchmark: the training loader against plain reads of the same bytes.

Writes ``benchmarks/results/stream.md``. Every figure is a ratio against a baseline measured in
the same run on the same data (one 4096-dim bfloat16 layer, ``--size-gb`` of it):

1. Local, page cache warm: ``ds.stream`` throughput with shuffle on and off vs ``readinto`` of
   the same tensor bytes sequentially into one reused buffer (goals >= 0.8 and >= 0.9).
2. Over the loopback HTTP range server (its own process): stream throughput and request count
   vs a plain sequential fsspec download of the same files (goal >= 0.7).
3. vs ``iter_batches(shuffle=True)`` on the same data, locally and over HTTP (first batches).
4. Peak RSS of a process streaming one epoch, at two dataset sizes (should be flat).
5. Time to resume mid-epoch (load_state_dict, then the first batch) vs the first batch of a
   fresh stream.

Usage: ``python benchmarks/bench_stream.py [--size-gb 2] [--repeats 5] [--quick]``
(``--quick``: 16 MB, to check that it runs). The local figures are interleaved rounds: each
round times ``readinto`` and then every contender once (the contenders' order reversed every
other round, so none always runs first after the baseline), and each ratio is the median of the
per-round ratios against that round's baseline, with their min-max. The stream contenders are
the epochs of one stream (``set_epoch`` per round, after one untimed epoch), as a training run
uses it, except "fresh stream", a new stream per round (its first epoch allocates its buffers).
DataLoader(num_workers=0/1/2) run over that stream too, worker start included, and against
DataLoader's own ceiling with workers (:class:`Ceiling`: workers that read nothing and yield a
fresh tensor per batch, which DataLoader moves into shared memory). Resume and fresh
start alternate, median of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from torch.utils.data import IterableDataset

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import actstore  # noqa: E402
from actstore.format.writer import DatasetWriter  # noqa: E402

DIM = 4096
BATCH = 4096
LAYER = 12


def write(path: str, rows: int) -> None:
    """One bf16 layer of ``rows`` x 4096, in 256 MiB shards, written in 8k-row pieces."""
    rng = np.random.default_rng(0)
    piece = rng.standard_normal((8192, DIM)).astype(np.float32)
    with DatasetWriter(path, model="bench", layers=[LAYER], dim=DIM, dtype="bfloat16",
                       shard_bytes=256 << 20, overwrite=True, check_finite=False) as w:
        for lo in range(0, rows, 8192):
            n = min(8192, rows - lo)
            w.add([str(i) for i in range(lo, lo + n)], hidden={LAYER: piece[:n]})


def tensor_files(root: str) -> list[str]:
    return sorted(str(p) for p in Path(root, "tensors").glob("*.safetensors"))


def readinto_baseline(root: str) -> float:
    """Seconds to read every tensor file sequentially into one reused 64 MiB buffer."""
    buf = bytearray(64 << 20)
    view = memoryview(buf)
    t = time.perf_counter()
    for f in tensor_files(root):
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(view):
                pass
    return time.perf_counter() - t


def epoch_time(s) -> tuple[float, int]:
    """Seconds and layer bytes for one epoch of batches of stream ``s``."""
    t = time.perf_counter()
    nbytes = 0
    for b in s:
        nbytes += b[f"layer_{LAYER}"].numel() * 2
    return time.perf_counter() - t, nbytes


def loader_time(s, workers: int) -> tuple[float, int]:
    """Seconds and layer bytes for one epoch through DataLoader(num_workers=workers), worker
    start included."""
    from torch.utils.data import DataLoader

    t = time.perf_counter()
    nbytes = 0
    for b in DataLoader(s, batch_size=None, num_workers=workers):
        nbytes += b[f"layer_{LAYER}"].numel() * 2
    return time.perf_counter() - t, nbytes


class Ceiling(IterableDataset):
    """DataLoader's own cost of moving batches from workers: an IterableDataset that reads
    nothing and yields a fresh (never written) bf16 tensor per batch of the epoch (worker ``w``
    yields batches ``w, w + W, ...``, as the stream does). DataLoader moves every tensor a
    worker yields into shared memory, so this is what any dataset that does not write over
    batches the training loop may still hold pays per batch with workers."""

    def __init__(self, rows: int) -> None:
        self.sizes = [min(BATCH, rows - lo) for lo in range(0, rows, BATCH)]

    def __iter__(self):
        import torch
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        w, nw = (0, 1) if info is None else (info.id, info.num_workers)
        for n in self.sizes[w::nw]:
            yield {f"layer_{LAYER}": torch.empty((n, DIM), dtype=torch.bfloat16)}


def first_batches(it, k: int) -> float:
    t = time.perf_counter()
    for i, _ in enumerate(it):
        if i + 1 == k:
            break
    return time.perf_counter() - t


class _Server:
    """The loopback range server of tests/cache, in its own process (no shared GIL)."""

    def __init__(self, root: str) -> None:
        script = HERE.parent / "tests" / "cache" / "conftest.py"
        self.proc = subprocess.Popen([sys.executable, str(script), root], stdout=subprocess.PIPE, text=True)
        self.base = self.proc.stdout.readline().strip()  # type: ignore[union-attr]

    def stats(self, reset: bool = False) -> dict:
        q = "reset=1" if reset else "x=1"
        with urllib.request.urlopen(f"{self.base}/__control?{q}") as r:
            return json.loads(r.read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def rss_child(path: str) -> int:
    """Peak RSS growth (bytes) of a fresh process while it streams one epoch of ``path``:
    RSS sampled every 2 ms from /proc/self/statm, minus the RSS just before the epoch."""
    code = (
        "import os, threading, time, torch, actstore\n"
        "page = os.sysconf('SC_PAGE_SIZE')\n"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * page\n"
        f"ds = actstore.open_dataset({path!r})\n"
        f"s = actstore.stream(ds, layers=[{LAYER}], batch_size={BATCH})\n"
        "base, peak, done = rss(), [0], []\n"
        "def watch():\n"
        "    while not done:\n"
        "        peak[0] = max(peak[0], rss()); time.sleep(0.002)\n"
        "t = threading.Thread(target=watch); t.start()\n"
        "for b in s: pass\n"
        "done.append(1); t.join()\n"
        "print(peak[0] - base)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds of the local figures")
    ap.add_argument("--quick", action="store_true", help="16 MB of data: only checks that it runs")
    args = ap.parse_args()
    load_before = os.getloadavg()
    size = 16e6 if args.quick else args.size_gb * 1e9
    rows = max(2 * BATCH, int(size // (DIM * 2)))
    out = ["## Stream: the training loader (`benchmarks/bench_stream.py`)", "",
           f"Command: `python benchmarks/bench_stream.py {'--quick' if args.quick else f'--size-gb {args.size_gb}'}`; "
           f"{rows:,} rows x {DIM} bfloat16 ({rows * DIM * 2 / 1e9:.2f} GB), batch {BATCH}, default "
           "block (4 MiB) and window (16 blocks).", ""]
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        root = os.path.join(tmp, "http")
        path = os.path.join(root, "ds")
        write(path, rows)
        ds = actstore.open_dataset(path)
        readinto_baseline(path)  # page cache warm for both sides
        payload = rows * DIM * 2
        on = actstore.stream(ds, layers=[LAYER], batch_size=BATCH, shuffle=True, seed=0)
        off = actstore.stream(ds, layers=[LAYER], batch_size=BATCH, shuffle=False)
        dl = actstore.stream(ds, layers=[LAYER], batch_size=BATCH, shuffle=True, seed=0)
        assert epoch_time(on)[1] == epoch_time(off)[1] == payload  # untimed first epochs
        contenders = {
            "on": lambda: epoch_time(on),
            "off": lambda: epoch_time(off),
            "fresh": lambda: epoch_time(actstore.stream(ds, layers=[LAYER], batch_size=BATCH, shuffle=True, seed=0)),
            "dl0": lambda: loader_time(dl, 0),
            "dl1": lambda: loader_time(dl, 1),
            "dl2": lambda: loader_time(dl, 2),
            "ceil1": lambda: loader_time(Ceiling(rows), 1),
            "ceil2": lambda: loader_time(Ceiling(rows), 2),
        }
        times: dict[str, list[float]] = {name: [] for name in ["base", *contenders]}
        for r in range(args.repeats):  # interleaved: a burst of machine load hits every one
            for st in (on, off, dl):
                st.set_epoch(r + 1)
            times["base"].append(readinto_baseline(path))
            for name in (list(contenders) if r % 2 == 0 else list(contenders)[::-1]):
                t, nb = contenders[name]()
                assert nb == payload, (name, nb, payload)
                times[name].append(t)
        k = min(8, rows // BATCH)
        t_ours_k = first_batches(actstore.stream(ds, layers=[LAYER], batch_size=BATCH), k)
        t_iter_k = first_batches(ds.iter_batches(LAYER, BATCH, shuffle=True, seed=0, dtype="bfloat16"), k)

        server = _Server(root)
        try:
            url = f"{server.base}/ds"
            rds = actstore.open_dataset(url, cache=False)
            server.stats(reset=True)
            t_remote, _ = epoch_time(actstore.stream(rds, layers=[LAYER], batch_size=BATCH, shuffle=True, seed=0))
            n_req = server.stats()["requests"]
            import fsspec

            fs = fsspec.filesystem("http", skip_instance_cache=True)
            t = time.perf_counter()
            for f in tensor_files(path):
                rel = os.path.relpath(f, path)
                fs.get(f"{url}/{rel}", os.path.join(tmp, "dl.bin"))
                os.remove(os.path.join(tmp, "dl.bin"))
            t_dl = time.perf_counter() - t
            t_rours = first_batches(actstore.stream(rds, layers=[LAYER], batch_size=BATCH), k)
            server.stats(reset=True)
            t_riter = first_batches(rds.iter_batches(LAYER, BATCH, shuffle=True, seed=0, dtype="bfloat16"), k)
            n_req_iter = server.stats()["requests"]
        finally:
            server.close()

        # resume mid-epoch vs a fresh start (time to the first batch), alternated
        s = actstore.stream(ds, layers=[LAYER], batch_size=BATCH)
        state = s.state_dict(batch=len(s) // 2)
        resumes, freshes = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            r = actstore.stream(actstore.open_dataset(path), layers=[LAYER], batch_size=BATCH)
            r.load_state_dict(state)
            it = iter(r)
            next(it)
            resumes.append(time.perf_counter() - t)
            it.close()
            t = time.perf_counter()
            it = iter(actstore.stream(actstore.open_dataset(path), layers=[LAYER], batch_size=BATCH))
            next(it)
            freshes.append(time.perf_counter() - t)
            it.close()
        t_resume, t_fresh = float(np.median(resumes)), float(np.median(freshes))

        rss_big = rss_child(path)
        small = os.path.join(tmp, "small")
        small_rows = max(2 * BATCH, rows // 4)
        write(small, small_rows)
        rss_small = rss_child(small)

    gb = payload / 1e9
    load_after = os.getloadavg()

    def ratio(num: list[float], den: list[float]) -> str:
        """Median of the per-round ratios ``num / den`` (times), and their min-max."""
        r = [x / y for x, y in zip(num, den)]
        return f"{np.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"

    def speed(name: str) -> str:
        return f"{gb / float(np.median(times[name])):.2f} GB/s"

    base = times["base"]
    out += [f"Load average (1, 5, 15 min) before {tuple(round(x, 2) for x in load_before)}, after "
            f"{tuple(round(x, 2) for x in load_after)} on {os.cpu_count()} cores (other sessions' tests "
            f"may run at nice 19 meanwhile); {args.repeats} interleaved rounds for the local rows: median "
            "throughput, ratio = median of the per-round ratios (min-max in brackets).", ""]
    out += [
        "| figure | stream | baseline (same run, same bytes) | ratio | goal |",
        "|---|---:|---:|---:|---|",
        f"| local, shuffle on | {speed('on')} | readinto {speed('base')} | {ratio(base, times['on'])} | >= 0.8 |",
        f"| local, shuffle off | {speed('off')} | readinto {speed('base')} | {ratio(base, times['off'])} | >= 0.9 |",
        f"| local, shuffle on, first epoch of a fresh stream | {speed('fresh')} | readinto {speed('base')} | "
        f"{ratio(base, times['fresh'])} | info |",
    ]
    for w in (0, 1, 2):
        out.append(f"| local, shuffle on, DataLoader(num_workers={w}) | {speed(f'dl{w}')} | single process "
                   f"{speed('on')} (readinto {ratio(base, times[f'dl{w}'])}) | {ratio(times['on'], times[f'dl{w}'])} | "
                   "info |")
    for w in (1, 2):
        out.append(f"| local, shuffle on, DataLoader(num_workers={w}) vs DataLoader's transport ceiling "
                   f"(workers read nothing, yield fresh tensors) | {speed(f'dl{w}')} | ceiling {speed(f'ceil{w}')} | "
                   f"{ratio(times[f'ceil{w}'], times[f'dl{w}'])} | info |")
    out += [
        f"| loopback HTTP, shuffle on ({n_req} requests) | {gb / t_remote:.2f} GB/s | sequential fsspec "
        f"download {gb / t_dl:.2f} GB/s | {t_dl / t_remote:.2f} | >= 0.7 |",
        f"| first {k} batches vs `iter_batches(shuffle=True)`, local | {t_ours_k:.3f} s | {t_iter_k:.3f} s | "
        f"{t_iter_k / t_ours_k:.1f}x faster | info |",
        f"| first {k} batches vs `iter_batches(shuffle=True)`, HTTP ({n_req_iter} requests) | {t_rours:.3f} s | "
        f"{t_riter:.3f} s | {t_riter / t_rours:.1f}x faster | >= 10x |",
        f"| peak RSS growth, one epoch: {gb:.2f} GB vs {small_rows * DIM * 2 / 1e9:.2f} GB dataset | {rss_big / 1e6:.0f} MB | "
        f"{rss_small / 1e6:.0f} MB | {rss_big / max(rss_small, 1):.2f} | flat (~1) |",
        f"| resume mid-epoch to first batch (median of {len(resumes)}, alternated; rounds "
        f"{min(resumes):.3f}-{max(resumes):.3f} s vs {min(freshes):.3f}-{max(freshes):.3f} s) | {t_resume:.3f} s | "
        f"fresh start {t_fresh:.3f} s | {ratio(resumes, freshes)} | ~1 |",
        "",
    ]
    if args.quick:
        out.append("(--quick: too small to mean anything; run without it for real figures.)\n")
    text = "\n".join(out)
    print(text)
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    (res / "stream.md").write_text(text)


if __name__ == "__main__":
    main()
