"""The stream loader before and after a change: DataLoader workers and epochs, old and new
alternating, each run in its own process over the same 1 GB dataset (page cache warm).

Writes ``benchmarks/results/stream_before_after.md``. Per run and version: one epoch through
``DataLoader(num_workers=2)`` and ``num_workers=0`` (fresh streams), and three epochs of one
in-process stream (``set_epoch`` between them: the first allocates its buffers, the later ones
may reuse them). Reported: medians over the runs and the min-max.

Usage: ``git archive <commit> actstore | tar -x -C /tmp/old && python
benchmarks/stream_before_after.py --before /tmp/old --label <commit> [--runs 5]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_stream import readinto_baseline, write  # noqa: E402

CHILD = r'''
import sys, time, actstore
from torch.utils.data import DataLoader
ds = actstore.open_dataset(sys.argv[1]); out = []
for w in (2, 0):
    s = actstore.stream(ds, layers=[12], batch_size=4096, seed=0)
    t = time.perf_counter()
    for b in DataLoader(s, batch_size=None, num_workers=w):
        pass
    out.append(time.perf_counter() - t)
s = actstore.stream(ds, layers=[12], batch_size=4096, seed=0)
for e in range(3):
    s.set_epoch(e)
    t = time.perf_counter()
    for b in s:
        pass
    out.append(time.perf_counter() - t)
print(actstore.__file__, *out)
'''
NAMES = ["DataLoader(num_workers=2), one epoch", "DataLoader(num_workers=0), one epoch",
         "one stream, epoch 0 (allocates)", "one stream, epoch 1", "one stream, epoch 2"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="a directory holding the old actstore package")
    ap.add_argument("--label", default="before")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    trees = {"before": os.path.abspath(args.before), "after": str(HERE.parent)}
    load = os.getloadavg()
    res: dict[str, list[list[float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="bench-stream-ab-") as tmp:
        path = os.path.join(tmp, "ds")
        rows = int(1e9 // (4096 * 2))
        write(path, rows)
        readinto_baseline(path)
        for r in range(args.runs):
            for name in (["before", "after"] if r % 2 == 0 else ["after", "before"]):
                env = {**os.environ, "PYTHONPATH": trees[name]}
                out = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True,
                                     cwd=tmp, env=env, check=True).stdout.split()
                assert out[0].startswith(trees[name]), out  # the intended tree was imported
                res[name].append([float(x) for x in out[1:]])
    gb = rows * 4096 * 2 / 1e9

    def cell(v: np.ndarray, i: int) -> str:
        s = gb / v[:, i]
        return f"{np.median(s):.2f} ({s.min():.2f}-{s.max():.2f})"

    b, a = np.array(res["before"]), np.array(res["after"])
    lines = ["## Stream before/after (`benchmarks/stream_before_after.py`)", "",
             f"{gb:.2f} GB, one 4096-dim bf16 layer, batch 4096, default block/window; before = "
             f"{args.label}, after = this tree; {args.runs} runs each, alternating, each in its own "
             f"process; load average before {tuple(round(x, 2) for x in load)}, after "
             f"{tuple(round(x, 2) for x in os.getloadavg())} on {os.cpu_count()} cores. GB/s, median (min-max).", "",
             "| figure | before GB/s | after GB/s | after / before (per-run median, min-max) |", "|---|---:|---:|---:|"]
    for i, name in enumerate(NAMES):
        r = b[:, i] / a[:, i]
        lines.append(f"| {name} | {cell(b, i)} | {cell(a, i)} | {np.median(r):.2f} ({r.min():.2f}-{r.max():.2f}) |")
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "results" / "stream_before_after.md").write_text(text)


if __name__ == "__main__":
    main()
