"""``actstore info`` and ``actstore verify``."""

from __future__ import annotations

import argparse
import json

from ..format.metadata import DatasetInfo


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


def format_info(info: DatasetInfo, url: str) -> str:
    """A human-readable table of a dataset's info."""
    size = sum(f["size"] for f in info.files.values())
    rows = [
        ("dataset", url),
        ("model", info.model + (f" @ {info.revision}" if info.revision else "")),
        ("prompts", str(info.num_prompts)),
        ("layers", ", ".join(map(str, info.layers))),
        ("dim", str(info.dim)),
        ("dtype", info.dtype),
        ("storage", info.storage),
        ("views", ", ".join(info.views)),
        ("logits top-k", str(info.logits_k) if info.logits_k else "-"),
        ("labels", str(info.labels.get("kind") or "-")),
        ("format", f"v{info.format_version}" + (f" (actstore {info.actstore_version})" if info.actstore_version else "")),
        ("tensor bytes", f"{size / 1e6:.1f} MB in {len(info.files)} files" if info.files else "-"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _info(args: argparse.Namespace) -> int:
    ds = _open(args.url)
    if args.json:
        print(json.dumps(ds.info.to_dict(), indent=2, default=str))
    else:
        print(format_info(ds.info, args.url))
    return 0


def _verify(args: argparse.Namespace) -> int:
    report = _open(args.url).verify(checksums=not args.no_checksums)
    print(report)
    return 0 if report.ok else 1
