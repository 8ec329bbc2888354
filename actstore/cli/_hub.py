"""``actstore push`` and ``actstore pull``: thin commands over :mod:`actstore.hub`."""

from __future__ import annotations

import argparse
import re

from ..errors import InvalidArgumentError

# org/name as the Hub allows it: letters, digits, "-", "_", "."; no leading/trailing "-"/"."
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"{_NAME}/{_NAME}")


def repo_argument(text: str, revision: str | None = None) -> tuple[str, str | None]:
    """``org/name`` or ``hf://datasets/org/name[@rev]`` -> ``(repo_id, revision)``.

    Raises
    ------
    InvalidArgumentError
        ``text`` is not a dataset repo id, or pins a revision that differs from ``revision``.
    """
    repo = text.strip()
    for prefix in ("hf://datasets/", "hf://", "datasets/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix):]
            break
    repo = repo.rstrip("/")
    if "@" in repo:
        repo, pinned = repo.split("@", 1)
        if revision is not None and revision != pinned:
            raise InvalidArgumentError(
                f"{text!r} pins revision {pinned!r} but --revision {revision!r} was given; give one."
            )
        revision = pinned
    if not _REPO_ID.fullmatch(repo) or ".." in repo:
        raise InvalidArgumentError(
            f"{text!r} is not a Hub dataset repo id; expected org/name (letters, digits, '-', '_', "
            "'.'), e.g. my-org/llama-acts or hf://datasets/my-org/llama-acts."
        )
    return repo, revision


def _comma_list(values: list[str] | None) -> list[str] | None:
    """``["2,3", "5"]`` -> ``["2", "3", "5"]`` (commas and spaces both separate)."""
    if values is None:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


#: Layer names the resolver knows (actstore.format.layersel), besides ints.
_LAYER_NAMES = ("embeddings", "all", "middle", "last")


def _layer_list(values: list[str] | None) -> list[int | str] | None:
    """``["embeddings,0", "-1"]`` -> ``["embeddings", 0, -1]``: ints (negatives count from the
    deepest block) and the resolver's names; anything else is refused before any download."""
    items = _comma_list(values)
    if items is None:
        return None
    bad = [v for v in items if v not in _LAYER_NAMES and not v.lstrip("-").isdigit()]
    if bad or not items:
        raise InvalidArgumentError(
            f"--layers {','.join(values or [])!r} is not a layer list ({', '.join(map(repr, bad))} "
            "unknown); give comma-separated integers (negatives count from the deepest block) or "
            "'embeddings', 'all', 'middle', 'last', e.g. --layers embeddings,2,-1."
        )
    return [v if v in _LAYER_NAMES else int(v) for v in items]


def _push(args: argparse.Namespace) -> int:
    from ..hub import push_dataset

    repo, revision = repo_argument(args.repo)
    if revision is not None:
        raise InvalidArgumentError(
            f"push takes the branch with --revision, not in the repo id; got {args.repo!r}."
        )
    sha = push_dataset(args.dir, repo, private=True if args.private else None,
                       revision=args.revision, overwrite=args.overwrite, license=args.license,
                       sweep_plot=args.sweep_plot)
    print(f"pushed {args.dir} to {repo} at commit {sha}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from ..hub import pull_dataset, pulled_revision

    repo, revision = repo_argument(args.repo, args.revision)
    ds = pull_dataset(repo, layers=_layer_list(args.layers), views=_comma_list(args.views),
                      revision=revision, out=args.out)
    rec = pulled_revision(ds.url) or {}
    print(f"pulled {repo}@{rec.get('revision')} ({len(rec.get('files', []))} tensor files, "
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
    p.add_argument("--sweep-plot", metavar="IMAGE",
                   help="a probe-sweep plot (PNG/JPEG/SVG, e.g. <demo out>/sweep.png) to show in the card")
    p.set_defaults(handler=_push)
    q = sub.add_parser("pull", help="download a Hub dataset (index + chosen layers only)")
    q.add_argument("repo", help="Hub dataset repo id, e.g. org/name or hf://datasets/org/name@rev")
    q.add_argument("--layers", nargs="+", metavar="LAYERS",
                   help="layers to download, comma list of ints (-1: the deepest block) and "
                        "'embeddings', 'all', 'middle', 'last', e.g. embeddings,2,-1 (default: all)")
    q.add_argument("--views", nargs="+", metavar="VIEWS",
                   help="pooled views to download, comma list (default: all)")
    q.add_argument("--revision", help="branch or commit sha (default: main)")
    q.add_argument("--out", help="local folder (default: under the actstore cache)")
    q.set_defaults(handler=_pull)
