#!/usr/bin/env python3
"""Do what a newcomer does: a fresh venv, then the README's commands, verbatim.

The commands are read from README.md (the ```bash blocks after the ``<!-- newcomer:NAME -->``
markers), so the README and this check cannot drift apart:

1. ``cpu-torch``: replaced here by ``pip install torch==2.13.0`` (the local CPU wheel; CI
   machines cannot reach download.pytorch.org). It is the only substitution.
2. ``install-and-demo``: the install half runs in the repository, the ``actstore demo`` half
   in a temporary folder (so the demo's output lands outside the checkout).
3. ``test``: its install half (no constraints) always; its test half (``python -m pytest
   -q``) unless ``--skip-tests`` (CI runs that same command right after, with its pinned set).

No constraints file is used: this proves the unconstrained install resolves quickly. The
venv's ``bin`` comes first on ``PATH``, so ``pip``, ``python`` and ``actstore`` are the
venv's. Each step's time is printed; the run fails on the first failing command.

Usage: ``python .ci/newcomer.py [--venv DIR] [--skip-tests] [--dry-run]``
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL_TORCH = "pip install torch==2.13.0"


def readme_commands(readme: str | None = None) -> dict[str, str]:
    """``{marker name: the one-line bash command after it}`` from the README."""
    text = readme if readme is not None else (ROOT / "README.md").read_text()
    found = dict(re.findall(r"<!-- newcomer:([\w-]+) -->\s*```bash\n(.*?)\n```", text, re.S))
    for name in ("cpu-torch", "install-and-demo", "test"):
        if name not in found:
            raise SystemExit(f"README.md has no <!-- newcomer:{name} --> bash block")
        if "\n" in found[name].strip():
            raise SystemExit(f"README.md's newcomer:{name} block must be one command")
    return {k: v.strip() for k, v in found.items()}


def plan(commands: dict[str, str], demo_dir: str) -> list[tuple[str, str, str]]:
    """``(label, command, cwd)`` for each step, in order."""
    install, _, demo = commands["install-and-demo"].partition(" && ")
    test_install, _, test_run = commands["test"].partition(" && ")
    if not demo.startswith("actstore demo") or not test_install.startswith("pip install"):
        raise SystemExit("expected '<install> && actstore demo' and '<install> && <tests>' in "
                         f"README.md; got {commands['install-and-demo']!r}, {commands['test']!r}")
    return [
        ("cpu torch (local wheel for the README's: " + commands["cpu-torch"] + ")", LOCAL_TORCH, str(ROOT)),
        ("README install", install, str(ROOT)),
        ("README demo", demo, demo_dir),
        ("README test install", test_install, str(ROOT)),
        ("README test run", test_run, str(ROOT)),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", default=None, help="venv folder (default: a new temporary one)")
    ap.add_argument("--skip-tests", action="store_true",
                    help="install the test extra but do not run the suite in the venv")
    ap.add_argument("--dry-run", action="store_true", help="print the steps, run nothing")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="actstore-newcomer-"))
    venv = Path(args.venv) if args.venv else work / "venv"
    demo_dir = work / "demo"
    steps = plan(readme_commands(), str(demo_dir))
    if args.skip_tests:
        steps = steps[:-1]
    if args.dry_run:
        for label, cmd, cwd in steps:
            print(f"{label}: (cd {cwd} && {cmd})")
        shutil.rmtree(work, ignore_errors=True)
        return 0
    try:
        demo_dir.mkdir()
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PIP_CONSTRAINT", "VIRTUAL_ENV", "PYTHONHOME")}
        env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
                   PIP_DISABLE_PIP_VERSION_CHECK="1")
        for label, cmd, cwd in steps:
            start = time.monotonic()
            print(f"newcomer: {label}: {cmd}", flush=True)
            done = subprocess.run(["bash", "-c", f"set -eo pipefail; {cmd}"], cwd=cwd, env=env)
            print(f"newcomer: {label}: exit {done.returncode} in {time.monotonic() - start:.0f} s",
                  flush=True)
            if done.returncode != 0:
                return done.returncode
        if not (demo_dir / "actstore-demo" / "sweep.png").is_file():
            print("newcomer: the demo wrote no actstore-demo/sweep.png", file=sys.stderr)
            return 1
        print(f"newcomer: all steps passed in {time.monotonic() - t0:.0f} s", flush=True)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
