"""``actstore push`` and ``actstore pull``: thin commands over :mod:`actstore.hub`."""

from __future__ import annotations

import argparse


def _push(args: argparse.Namespace) -> int:
    from ..hub import push_dataset

    sha = push_dataset(args.dir, args.repo, private=True if args.private else None,
                       revision=args.revision, overwrite=args.overwrite, license=args.license)
    print(f"pushed {args.dir} to {args.repo} at commit {sha}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from ..hub import pull_dataset, pulled_revision

    ds = pull_dataset(args.repo, layers=args.layers, views=args.views, revision=args.revision,
                      out=args.out)
    rec = pulled_revision(ds.url) or {}
    print(f"pulled {args.repo}@{rec.get('revision')} ({len(rec.get('files', []))} tensor files, "
          f"{len(ds)} rows) into {ds.url}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``push`` and ``pull`` to the ``actstore`` parser."""
    p = sub.add_parser("push", help="push a local dataset to a Hugging Face Hub dataset repo")
    p.add_argument("dir", help="local dataset folder")
    p.add_argument("repo", help="Hub dataset repo id, e.g. org/name")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", default="main", help="branch to push to (default: main)")
    p.add_argument("--overwrite", action="store_true", help="replace a different dataset in the repo")
    p.add_argument("--license", default="cc-by-4.0", help="license in the dataset card")
    p.set_defaults(handler=_push)
    q = sub.add_parser("pull", help="download a Hub dataset (index + chosen layers only)")
    q.add_argument("repo", help="Hub dataset repo id, e.g. org/name")
    q.add_argument("--layers", type=int, nargs="+", help="layers to download (default: all)")
    q.add_argument("--views", nargs="+", help="pooled views to download (default: all)")
    q.add_argument("--revision", help="branch or commit sha (default: main)")
    q.add_argument("--out", help="local folder (default: under the actstore cache)")
    q.set_defaults(handler=_pull)
