"""``actstore cache ls | stats | evict --max-bytes 50G | compact | clear``."""

from __future__ import annotations

import argparse
import datetime
import json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``cache`` command group to the ``actstore`` parser."""
    p = sub.add_parser("cache", help="inspect and bound the local (or team) cache")
    p.add_argument("--location", default=None,
                   help="cache folder or fsspec URL (default: ACTSTORE_CACHE_DIR or ~/.cache/actstore)")
    cmds = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    cmds.add_parser("ls", help="list segments, least recently used first").set_defaults(handler=_ls)
    cmds.add_parser("stats", help="entries, bytes and bound (JSON)").set_defaults(handler=_stats)
    e = cmds.add_parser("evict", help="evict least-recently-used data down to a size")
    e.add_argument("--max-bytes", default=None, help="e.g. 50G (default: ACTSTORE_CACHE_MAX_BYTES)")
    e.set_defaults(handler=_evict)
    cmds.add_parser("compact", help="merge small segments (many remote reads leave many)"
                    ).set_defaults(handler=_compact)
    cmds.add_parser("clear", help="delete everything in the cache").set_defaults(handler=_clear)


def _cache(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ..cache import UnifiedCache

    return UnifiedCache(args.location)


def _ls(args: argparse.Namespace) -> int:
    rows = _cache(args).ls()
    print(f"{'segment':<48} {'entries':>8} {'bytes':>12}  last used")
    for r in rows:
        when = datetime.datetime.fromtimestamp(r["last_used"]).isoformat(timespec="seconds")
        mark = "  (orphan of a killed writer; `evict` reclaims it)" if r.get("orphan") else ""
        print(f"{r['segment']:<48} {r['entries']:>8} {r['bytes']:>12}  {when}{mark}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    print(json.dumps(_cache(args).stats(), indent=2))
    return 0


def _evict(args: argparse.Namespace) -> int:
    from ..config import parse_bytes

    bound = parse_bytes(args.max_bytes) if args.max_bytes is not None else None
    evicted = _cache(args).evict(max_bytes=bound)
    print(f"evicted {len(evicted)} segment(s)")
    return 0


def _compact(args: argparse.Namespace) -> int:
    print(f"merged {_cache(args).compact()} small segment(s)")
    return 0


def _clear(args: argparse.Namespace) -> int:
    cache = _cache(args)
    cache.clear()
    print(f"cleared {cache.url}")
    return 0
