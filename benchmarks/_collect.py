"""Join benchmarks/results/*.md into benchmarks/RESULTS.md under a machine/version header."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import os
import platform
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["format", "codecs", "extract", "cache", "hub", "probe"]


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> str:
    names = ["actstore", "numpy", "pyarrow", "safetensors", "fsspec", "torch", "transformers",
             "huggingface_hub", "scikit-learn", "lmprobe"]
    out = []
    for n in names:
        try:
            out.append(f"{n} {md.version(n)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(out)


def main() -> None:
    sections = sorted((HERE / "results").glob("*.md"), key=lambda p: (
        ORDER.index(p.stem) if p.stem in ORDER else len(ORDER), p.stem))
    head = [
        "# actstore benchmark results",
        "",
        "Regenerate with `benchmarks/run_all` (all sections) or `python benchmarks/bench_<area>.py`",
        "(one section, then `python benchmarks/_collect.py`). Every figure is a ratio against a",
        "baseline measured in the same run on the same machine; absolute numbers drift between runs.",
        "",
        f"- collected: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {_cpu()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        f"- versions: {_versions()}",
        "",
    ]
    body = [p.read_text().strip() + "\n" for p in sections]
    (HERE / "RESULTS.md").write_text("\n".join(head) + "\n" + "\n".join(body))


if __name__ == "__main__":
    main()
