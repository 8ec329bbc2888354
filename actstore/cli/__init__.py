"""The ``actstore`` command line: thin commands over the library.

Each command group lives in its own module with a ``register(subparsers)`` function that
adds its sub-commands; a command's handler takes the parsed arguments and returns an exit
code. Known errors print one line with the fix; ``ACTSTORE_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..config import debug
from ..errors import ActstoreError

# command-group modules, in the order their commands appear in --help
_GROUPS = ("_format", "_extract", "_cache", "_hub", "_probe", "_demo")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every command group registered."""
    parser = argparse.ArgumentParser(
        prog="actstore",
        description="Publish, share and load language-model activations; train probes on them.",
    )
    parser.add_argument("--version", action="version", version=f"actstore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _GROUPS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except ActstoreError as exc:
        if debug():
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
