"""``actstore demo`` and ``actstore env``."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import platform
import sys

EXTRAS = {
    "extract": ["torch", "transformers", "tqdm"],
    "hub": ["huggingface_hub", "datasets"],
    "s3": ["s3fs"],
    "http": ["aiohttp"],
    "probe": ["sklearn", "matplotlib"],
    "bf16": ["ml_dtypes"],
}
DISTS = {"sklearn": "scikit-learn"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``demo`` and ``env``."""
    p = sub.add_parser("demo", help="extract → publish → load → probe, offline, on a packaged model")
    p.add_argument("--out", default="actstore-demo", help="folder for everything the demo writes")
    p.add_argument("--model", default=None, help="model path (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--prompts-per-task", type=int, default=200, help="prompts generated per task")
    p.add_argument("--cv", type=int, default=5, help="cross-validation folds of the layer sweep")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=_demo)
    p = sub.add_parser("env", help="versions of actstore and its dependencies, for bug reports")
    p.set_defaults(handler=_env)


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(args.out, model=args.model, n_per_task=args.prompts_per_task, cv=args.cv,
             progress=not args.no_progress)
    return 0


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def env_report() -> str:
    """Versions and installed extras, one per line."""
    from .. import __version__

    lines = [f"actstore {__version__}", f"python {platform.python_version()} ({sys.platform})"]
    for dist in ("numpy", "pyarrow", "safetensors", "fsspec", "zstandard"):
        lines.append(f"{dist} {_version(dist) or 'MISSING'}")
    for extra, modules in EXTRAS.items():
        found = [m for m in modules if importlib.util.find_spec(m) is not None]
        state = "installed" if len(found) == len(modules) else f"missing {sorted(set(modules) - set(found))}"
        vers = ", ".join(f"{DISTS.get(m, m)} {_version(DISTS.get(m, m)) or '?'}" for m in found)
        lines.append(f"[{extra}] {state}" + (f": {vers}" if vers else ""))
    lmprobe = _version("lmprobe")
    lines.append(f"lmprobe {lmprobe or 'not installed'}")
    return "\n".join(lines)


def _env(args: argparse.Namespace) -> int:
    print(env_report())
    return 0
