"""``actstore demo`` and ``actstore env``."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import platform
import re
import sys

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""\bextra\s*==\s*["']([^"']+)["']""")


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


def extras_table(dist: str = "actstore") -> tuple[list[str], dict[str, list[str]]]:
    """The core requirements and each extra's requirements (distribution names), as the
    installed package's metadata declares them (``importlib.metadata``).

    An extra made only of other extras of the package (``all``) is left out; one name
    required twice in an extra (with and without a marker) is listed once.

    Raises
    ------
    importlib.metadata.PackageNotFoundError
        ``dist`` is not installed.
    """
    own = dist.replace("_", "-").lower()
    core: list[str] = []
    extras: dict[str, list[str]] = {name: [] for name in md.metadata(dist).get_all("Provides-Extra") or []}
    for req in md.requires(dist) or []:
        spec, _, marker = req.partition(";")
        match = _NAME.match(spec)
        if match is None:
            continue
        name = match.group(1)
        extra = _EXTRA.search(marker)
        if name.replace("_", "-").lower() == own:
            continue  # actstore[...]: an extra of extras
        target = extras.setdefault(extra.group(1), []) if extra else core
        if name not in target:
            target.append(name)
    return core, {k: v for k, v in extras.items() if v}


def env_report() -> str:
    """Versions of the core dependencies and of each extra's, one line each; the extras and
    their packages come from the installed package's metadata."""
    from .. import __version__

    lines = [f"actstore {__version__}", f"python {platform.python_version()} ({sys.platform})"]
    try:
        core, extras = extras_table()
    except md.PackageNotFoundError:
        core, extras = ["numpy", "pyarrow", "safetensors", "fsspec", "zstandard"], {}
        lines.append("extras: unknown (actstore is not installed as a package; `pip install -e .` "
                     "in the source folder lists them)")
    for dist in core:
        lines.append(f"{dist} {_version(dist) or 'MISSING'}")
    for extra, dists in extras.items():
        found = [d for d in dists if _version(d) is not None]
        missing = [d for d in dists if d not in found]
        state = "installed" if not missing else f"missing {missing}"
        vers = ", ".join(f"{d} {_version(d)}" for d in found)
        lines.append(f"[{extra}] {state}" + (f": {vers}" if vers else ""))
    lmprobe = _version("lmprobe")
    lines.append(f"lmprobe {lmprobe or 'not installed'}")
    return "\n".join(lines)


def _env(args: argparse.Namespace) -> int:
    print(env_report())
    return 0
