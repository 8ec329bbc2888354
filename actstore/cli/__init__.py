"""The ``actstore`` command line: thin commands over the library.

Each command group lives in its own module with a ``register(subparsers)`` function that
adds its sub-commands; a command's handler takes the parsed arguments and returns an exit
code. Known errors print one line, ``actstore: error: <what happened and the fix>``, and
exit with status 2; ``--debug`` (or ``ACTSTORE_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .._version import __version__
from ..config import debug
from ..errors import ActstoreError

# command-group modules, in the order their commands appear in --help
_GROUPS = ("_format", "_convert", "_extract", "_cache", "_hub", "_probe", "_demo")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every command group registered."""
    parser = argparse.ArgumentParser(
        prog="actstore",
        description="Publish, share and load language-model activations; train probes on them.",
    )
    parser.add_argument("--version", action="version", version=f"actstore {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (or set ACTSTORE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _GROUPS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    for p in _subparsers(parser)[1:]:  # `actstore info URL --debug` works too
        if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions):
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                           help="show the full traceback of an error")
    _show_defaults(parser)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every (nested) sub-command parser under it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += _subparsers(child)
    return found


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option's help ends with its default (``--help`` then documents every option)."""
    for p in _subparsers(parser):
        for action in p._actions:
            if (action.help and action.option_strings and "%(default)" not in action.help
                    and "default" not in action.help and action.default not in (None, False)
                    and action.default is not argparse.SUPPRESS):
                action.help += " (default: %(default)s)"


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
        if debug() or args.debug:
            raise
        print(f"actstore: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    """The error's message on one line (a multi-line message is joined, not cut)."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
