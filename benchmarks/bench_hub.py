"""Hub push/pull throughput against the loopback Hub server, and bytes pulled for one layer.

Baselines measured in the same run on the same bytes: the client's own ``upload_folder``
(for push) and ``snapshot_download`` of the whole repo (for pull). The server runs in this
process (threads), so the peak RSS covers client and server together.

Usage: ``python benchmarks/bench_hub.py [--quick]`` -> ``benchmarks/results/hub.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

_TMP = tempfile.mkdtemp(prefix="bench-hub-")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# huggingface_hub reads these at import time
PORT = _free_port()
os.environ.update({"HF_ENDPOINT": f"http://127.0.0.1:{PORT}", "HF_HUB_DISABLE_XET": "1",
                   "HF_HOME": os.path.join(_TMP, "hf_home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                   "HF_HUB_DISABLE_TELEMETRY": "1", "ACTSTORE_CACHE_DIR": os.path.join(_TMP, "c")})
os.environ.pop("HF_TOKEN", None)

import numpy as np  # noqa: E402

import actstore  # noqa: E402
from actstore.testing import HubServer  # noqa: E402

TOKEN = "hf_bench"


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
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="~32 MB instead of ~1 GB")
    args = ap.parse_args()
    layers, rows, dim = (8, 1024, 1024) if args.quick else (8, 8192, 4096)
    from huggingface_hub import HfApi, snapshot_download

    ds_dir = Path(_TMP) / "ds"
    size = _write(ds_dir, layers, rows, dim)
    mb = size / 1e6
    figures = []
    with HubServer(Path(_TMP) / "store", port=PORT, tokens={TOKEN: "write"}) as hub:
        api = HfApi(token=TOKEN)
        api.create_repo("bench/base", repo_type="dataset")
        _, t_base_up = _timed(lambda: api.upload_folder(folder_path=ds_dir, repo_id="bench/base",
                                                        repo_type="dataset"))
        _, t_push = _timed(lambda: actstore.push_dataset(ds_dir, "bench/acts", token=TOKEN,
                                                         progress=False))
        _, t_base_down = _timed(lambda: snapshot_download(
            "bench/base", repo_type="dataset", local_dir=Path(_TMP) / "base_dl", token=TOKEN))
        hub.reset_counters()
        _, t_pull = _timed(lambda: actstore.pull_dataset("bench/acts", token=TOKEN,
                                                         out=Path(_TMP) / "pull_all"))
        all_bytes = hub.bytes_served("bench/acts")
        hub.reset_counters()
        _, t_one = _timed(lambda: actstore.pull_dataset("bench/acts", layers=[3], token=TOKEN,
                                                        out=Path(_TMP) / "pull_one"))
        one_bytes = hub.bytes_served("bench/acts")
        _, t_meta = _timed(lambda: actstore.fetch_metadata("bench/acts", token=TOKEN))
        meta_bytes = hub.bytes_served("bench/acts") - one_bytes
    figures = [
        ("push_dataset", f"{mb / t_push:,.0f} MB/s", "HfApi.upload_folder",
         f"{mb / t_base_up:,.0f} MB/s", t_base_up / t_push),
        ("pull_dataset (all layers)", f"{mb / t_pull:,.0f} MB/s", "snapshot_download",
         f"{mb / t_base_down:,.0f} MB/s", t_base_down / t_pull),
        ("bytes pulled, 1 of 8 layers", f"{one_bytes / 1e6:,.1f} MB ({t_one:.2f} s)",
         "bytes pulled, whole dataset", f"{all_bytes / 1e6:,.1f} MB", one_bytes / all_bytes),
        ("fetch_metadata bytes", f"{meta_bytes:,} B ({t_meta * 1e3:.0f} ms)", "index size",
         f"{(ds_dir / 'index/train-00000-of-00001.parquet').stat().st_size:,} B", None),
    ]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cmd = "python benchmarks/bench_hub.py" + (" --quick" if args.quick else "")
    lines = ["## Hub push / pull (loopback Hub server, real huggingface_hub client)", "",
             f"Command: `{cmd}`; machine: {platform.machine()}, {os.cpu_count()} cores, "
             f"Python {sys.version.split()[0]}. Dataset: {layers} layers x {rows:,} rows x "
             f"{dim} float32 = {mb:,.0f} MB on disk; classic LFS (Xet off), server in-process.", "",
             "| figure | actstore | baseline | baseline value | ratio |", "|---|---|---|---|---|"]
    for name, val, base, bval, ratio in figures:
        r = f"{ratio:.2f}" if ratio is not None else "–"
        lines.append(f"| {name} | {val} | {base} | {bval} | {r} |")
    lines += ["", "Ratios: push and pull are baseline time / actstore time (1.0 = as fast as the "
              "client's own bulk call; push adds the card and the index-last commit, pull adds "
              "sha256 checks); bytes pulled is one layer / whole dataset (ideal 1/8 = 0.125 plus "
              "the index).", "", f"Peak RSS (client + server): {rss:,.0f} MB.", ""]
    out = Path(__file__).resolve().parent / "results" / "hub.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(_TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
