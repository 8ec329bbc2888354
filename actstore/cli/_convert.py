"""``actstore convert``: re-encode a dataset in another storage dtype (e.g. bf16 -> int8)."""

from __future__ import annotations

import argparse

from ..format.spec import STORED_DTYPES


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``convert`` to the ``actstore`` parser."""
    p = sub.add_parser("convert", help="write a dataset again in another dtype (int8, fp8_e4m3, bfloat16, ...)")
    p.add_argument("src", help="local path or fsspec URL of the dataset to read")
    p.add_argument("dst", help="where to write the converted dataset")
    p.add_argument("--dtype", required=True, choices=list(STORED_DTYPES),
                   help="storage dtype of the new shards (int8/fp8_e4m3 are lossy, with scales)")
    p.add_argument("--scale", choices=["per_channel", "per_row", "per_channel_affine"], default=None,
                   help="codec scale granularity (default per_channel_affine)")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset at DST")
    p.set_defaults(handler=_convert)


def _convert(args: argparse.Namespace) -> int:
    from ..format.convert import convert
    from ..format.info import info_text

    ds = convert(args.src, args.dst, dtype=args.dtype, scale=args.scale, overwrite=args.overwrite)
    print(info_text(ds.info, args.dst))
    return 0
