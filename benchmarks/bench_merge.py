"""``merge`` of full-sequence parts: token shards linked vs rewritten (issue #14 point 4).

Writes ``benchmarks/results/merge.md``. ``--parts`` parts of 64 prompts x ``--tokens`` tokens,
two layers of ``--dim`` float16 (the runner's part layout, written with ``DatasetWriter``),
merged alternately by rewriting (``LINK_MIN_SHARD_BYTES`` above every part) and by linking
(0), ``--rounds`` times each, the parts kept (``keep_parts=True``) and the merged dataset
removed between rounds; the parts' bytes are in the page cache for both. Each linked merge
is checked to read the same tokens as the rewritten one.

Usage: ``python benchmarks/bench_merge.py`` (8 parts x 64 x 128 tokens, dim 1024: 16.6 MB
token shard files, just above the default threshold) or ``--quick``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import actstore  # noqa: E402
from actstore.format.writer import DatasetWriter  # noqa: E402

merge_mod = importlib.import_module("actstore.extraction.merge")
ROWS = 64  # prompts per part (extract's default shard_size with pooling="all")


def write_parts(out: Path, parts: int, tokens: int, dim: int) -> None:
    run = out / "_parts"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"num_prompts": parts * ROWS, "shard_size": ROWS,
                                                 "dtype": "float16"}))
    rng = np.random.default_rng(0)
    for s in range(parts):
        x = rng.standard_normal((ROWS, tokens, dim), dtype=np.float32).astype(np.float16)
        with DatasetWriter(str(run / f"shard-{s:05d}"), model="bench", layers=[0, 1], dim=dim,
                           dtype="float16", pooling="all", lmprobe_compat=False) as w:
            w.add([f"p{s}-{i}" for i in range(ROWS)], hidden={0: list(x), 1: list(x[:, ::-1])})


def clear_merged(out: Path) -> None:
    for p in out.iterdir():
        if p.name != "_parts":
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "merge.md")
    a = ap.parse_args()
    if a.quick:
        a.parts, a.tokens, a.dim, a.rounds = 2, 16, 32, 1
    work = Path(tempfile.mkdtemp(prefix="bench_merge_"))
    try:
        out = work / "ds"
        write_parts(out, a.parts, a.tokens, a.dim)
        times: dict[str, list[float]] = {"rewrite": [], "link": []}
        first: dict[str, np.ndarray] = {}
        for _ in range(a.rounds):
            for mode in ("rewrite", "link"):
                clear_merged(out)
                merge_mod.LINK_MIN_SHARD_BYTES = 0 if mode == "link" else 1 << 62
                t0 = time.perf_counter()
                ds = actstore.merge(str(out), keep_parts=True, lmprobe_compat=False)
                times[mode].append(time.perf_counter() - t0)
                sample = ds.get_tokens(np.arange(0, ds.num_tokens_total, 97), layers=[0, 1])
                if mode in first:
                    assert np.array_equal(sample, first[mode])
                first[mode] = sample
        assert np.array_equal(first["link"], first["rewrite"])
        shard = a.tokens - 1
        mb = a.parts * ROWS * shard * a.dim * 2 * 2 / 1e6
        ratios = [r / x for r, x in zip(times["rewrite"], times["link"])]
        med = {k: float(np.median(v)) for k, v in times.items()}
        lines = [
            "# merge of full-sequence parts (`benchmarks/bench_merge.py`)", "",
            f"Command: `python benchmarks/bench_merge.py --parts {a.parts} --tokens {a.tokens} --dim {a.dim} "
            f"--rounds {a.rounds}`: {a.parts} parts of {ROWS} prompts x {a.tokens} tokens, 2 layers, float16 "
            f"({mb:.0f} MB of token shards, {ROWS * shard * a.dim * 2 / 1e6:.1f} MB per file); rounds "
            f"alternate, parts in the page cache; load at the end `{os.getloadavg()[0]:.2f}`.", "",
            "| merge | median s | range s |", "|---|---:|---:|",
            *(f"| {k} token shards | {med[k]:.2f} | {min(v):.2f}–{max(v):.2f} |" for k, v in times.items()), "",
            f"Linked over rewritten, per round: **{np.median(ratios):.1f}x** faster "
            f"({min(ratios):.1f}–{max(ratios):.1f}, {len(ratios)} rounds); the merged datasets read the same "
            "tokens.", "",
        ]
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text("\n".join(lines))
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
