"""``actstore info`` and ``actstore verify``."""

from __future__ import annotations

import argparse
import json

from ..format.info import DatasetInfo


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``info`` and ``verify`` to the ``actstore`` parser."""
    p = sub.add_parser("info", help="show what a dataset holds (reads the index only)")
    p.add_argument("url", help="local path or fsspec URL (s3://, hf://datasets/org/name, ...)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=_info)
    p = sub.add_parser("verify", help="check every file's size, header and sha256; exit 1 on problems")
    p.add_argument("url", help="local path or fsspec URL of the dataset")
    p.add_argument("--no-checksums", action="store_true", help="check structure and sizes only")
    p.set_defaults(handler=_verify)


def _open(url: str):  # type: ignore[no-untyped-def]
    from .. import open_dataset

    return open_dataset(url)


def format_info(info: DatasetInfo, url: str, columns: list[str] | None = None) -> str:
    """A human-readable table of a dataset's info (and its user columns, when given)."""
    from ..format.info import info_text

    return info_text(info, url, columns)


def _info(args: argparse.Namespace) -> int:
    ds = _open(args.url)
    if args.json:
        print(json.dumps(ds.info.to_dict(), indent=2, default=str))
    else:
        from ..format.spec import RESERVED_COLUMNS

        user = [c for c in ds.index.column_names if c not in RESERVED_COLUMNS]
        print(format_info(ds.info, args.url, user))
    return 0


def _verify(args: argparse.Namespace) -> int:
    report = _open(args.url).verify(checksums=not args.no_checksums)
    print(report)
    return 0 if report.ok else 1
