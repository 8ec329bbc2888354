"""On-storage layout of the cache: immutable segment files, each with a small index.

A segment is written once by one process and never modified::

    <root>/segments/<sid>.seg    entry payloads, concatenated
    <root>/segments/<sid>.idx    JSON: the entries of that segment (the commit point), and
                                 checksums of blocks of consecutive entries (see BLOCK_ENTRIES)
    <root>/access/<writer>.json  last-use times of segments, one file per writing process

A writer killed between the two publishes (or while writing a temporary file) leaves an
*orphan*: a ``.seg`` without its ``.idx``, or a ``*.tmp-<writer>-*`` file. Orphans are never
read; :meth:`SegmentStore.orphans` lists them and ``evict`` deletes those whose writer is
known to be dead (same host, process gone) or that are older than ``ORPHAN_GRACE_S``.

The data file is published first and the index last, each atomically (rename on local
disks, a single PUT on object stores, which are atomic per object), so a reader that sees
an index always sees its complete data file. Readers build their view by taking the union
of all indexes. Nothing is ever read-modify-written, so processes need no locks, which S3
does not offer: each writer only creates files with names no other process can choose.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from ..format.durable import atomic_write
from ..format.location import fs_is_local

__all__ = [
    "Entry",
    "SegmentInfo",
    "atomic_put",
    "block_digests",
    "decode_index",
    "check_digest",
    "digest",
    "split_digest",
    "encode_index",
    "new_segment_id",
    "writer_id",
]

INDEX_VERSION = 1

#: A segment's index also carries one checksum per *block*: up to ``BLOCK_ENTRIES``
#: consecutive entries (at most ``BLOCK_BYTES``) that lie back to back. A reader that reads
#: a whole block in one piece checks it with one hash instead of one per entry — a warm
#: scattered ``get`` of rows fetched together is thousands of small entries. The entries'
#: own checksums stay the proof for everything else; an index without blocks (older
#: writers), or whose blocks fail their own checksum, is read entry by entry.
BLOCK_ENTRIES = 64
BLOCK_BYTES = 1 << 20


try:  # optional: about 8x the speed of zlib.crc32 (0.3 vs 2.3 us per 4 KiB here)
    import xxhash as _xxhash
except ImportError:  # pragma: no cover - depends on the environment
    _xxhash = None


def digest(data: bytes | memoryview) -> str:
    """The checksum stored with every entry: XXH3-64 (``x3:``) or CRC-32, plus the length.

    It guards against accidental damage (bit flips, truncation, a file rewritten in place),
    not tampering: the cache never trusts a key it did not derive itself (see
    :mod:`actstore.cache.remote`). The check sits on every read, warm ones included, so it
    is the fastest installed: XXH3 from ``xxhash`` if importable, else zlib's CRC-32 (what
    zip, gzip and Parquet pages use). Both detect every burst error up to 32 bits.
    """
    if _xxhash is not None:
        return f"x3:{_xxhash.xxh3_64_hexdigest(data)}-{len(data)}"
    return f"{zlib.crc32(data):08x}-{len(data)}"


def split_digest(expected: str) -> tuple[Any, str, int]:
    """``(hash function, expected hex, expected length)`` of a stored checksum, for readers
    that check many pieces in a loop: ``len(d) == n and fn(d) == hex`` is
    :func:`check_digest`. An unknown kind gets a function that never matches."""
    body, _, length = expected.rpartition("-")
    n = int(length) if length.isdigit() else -1
    if body.startswith("x3:"):
        fn = _xxhash.xxh3_64_hexdigest if _xxhash is not None else _never
        return fn, body[3:], n
    return _crc_hex, body, n


def _crc_hex(data: bytes | memoryview) -> str:
    return f"{zlib.crc32(data):08x}"


def _never(data: bytes | memoryview) -> str:
    return ""


def check_digest(data: bytes | memoryview, expected: str) -> bool:
    """True when ``data`` has the checksum ``expected`` (either kind; an unknown or
    uncomputable kind counts as a mismatch, so the entry is refetched, never trusted)."""
    if expected.startswith("x3:"):
        if _xxhash is None:
            return False
        return expected == f"x3:{_xxhash.xxh3_64_hexdigest(data)}-{len(data)}"
    return expected == f"{zlib.crc32(data):08x}-{len(data)}"


_WRITER: tuple[int, str] | None = None


def host_tag() -> str:
    """Eight hex digits naming this machine (so a pid in a file name is only read here)."""
    import hashlib
    import socket

    return hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


def writer_id() -> str:
    """A name unique to this process (a fork gets its own): ``<pid>-<host tag>-<random>``."""
    global _WRITER
    pid = os.getpid()
    if _WRITER is None or _WRITER[0] != pid:
        _WRITER = (pid, f"{pid}-{host_tag()}-{uuid.uuid4().hex[:10]}")
    return _WRITER[1]


def writer_alive(name: str) -> bool | None:
    """Whether the writer whose id is embedded in a file ``name`` still runs: True/False
    when it ran on this host, None when unknown (another host, or an older name format)."""
    import re

    m = re.search(r"(?:^|-)(\d+)-([0-9a-f]{8})-[0-9a-f]{10}(?:-|$)", name)
    if m is None or m.group(2) != host_tag():
        return None
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def new_segment_id() -> str:
    """Sortable by creation time, unique across processes and machines."""
    return f"{time.time_ns():x}-{writer_id()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Entry:
    """Where one entry's stored bytes lie, and how to check and decode them."""

    key: str
    sid: str
    offset: int
    length: int
    digest: str
    codec: str = "raw"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class SegmentInfo:
    """One published segment: its data size, creation time and entry count."""

    sid: str
    size: int
    created: float
    entries: int
    #: ``(offset, length, checksum)`` of each block of consecutive entries (see BLOCK_ENTRIES)
    blocks: list[tuple[int, int, str]] = field(default_factory=list, compare=False)


def block_digests(data: bytes | memoryview, entries: list[Entry]) -> list[tuple[int, int, str]]:
    """Checksums of blocks of consecutive back-to-back ``entries`` of segment ``data``: up to
    ``BLOCK_ENTRIES`` entries and ``BLOCK_BYTES`` bytes each; a block has at least two."""
    view = memoryview(data).cast("B")
    out: list[tuple[int, int, str]] = []
    start = end = count = 0
    for e in entries:
        if count and (e.offset != end or count >= BLOCK_ENTRIES or end - start + e.length > BLOCK_BYTES):
            if count > 1:
                out.append((start, end - start, digest(view[start:end])))
            count = 0
        if not count:
            start = e.offset
        end, count = e.offset + e.length, count + 1
    if count > 1:
        out.append((start, end - start, digest(view[start:end])))
    return out


def encode_index(sid: str, size: int, entries: list[Entry],
                 blocks: list[tuple[int, int, str]] | None = None) -> bytes:
    """Serialise a segment index; the body, and the block list, carry their own checksums."""
    rows = [[e.key, e.offset, e.length, e.digest, e.codec, e.meta] for e in entries]
    body = json.dumps(rows, separators=(",", ":"), sort_keys=True)
    doc = {"version": INDEX_VERSION, "segment": sid, "size": size, "created": time.time(),
           "entries": body, "digest": digest(body.encode())}
    if blocks:
        text = json.dumps([list(b) for b in blocks], separators=(",", ":"))
        doc["blocks"], doc["blocks_digest"] = text, digest(text.encode())
    return json.dumps(doc, separators=(",", ":")).encode()


def _decode_blocks(doc: dict[str, Any], size: int) -> list[tuple[int, int, str]]:
    """The block list of an index, or none at all when it is absent or does not check out
    (entries are then read one by one: blocks only ever save work, they prove nothing more)."""
    text = doc.get("blocks")
    if not isinstance(text, str) or digest(text.encode()) != doc.get("blocks_digest"):
        return []
    try:
        blocks = [(int(o), int(n), str(d)) for o, n, d in json.loads(text)]
    except (ValueError, TypeError):
        return []
    end = 0
    for o, n, _ in blocks:  # sorted, disjoint, inside the segment
        if o < end or n <= 0 or o + n > size:
            return []
        end = o + n
    return blocks


def decode_index(raw: bytes, sid: str) -> tuple[SegmentInfo, list[Entry]]:
    """Parse and check a segment index; raises ``ValueError`` when it is damaged."""
    doc = json.loads(raw)
    if not isinstance(doc, dict) or doc.get("version") != INDEX_VERSION or doc.get("segment") != sid:
        raise ValueError("not a version-1 segment index for this segment")
    body = doc["entries"]
    if digest(body.encode()) != doc["digest"]:
        raise ValueError("index checksum mismatch")
    size = int(doc["size"])
    entries = []
    for key, off, length, dig, codec, meta in json.loads(body):
        if off < 0 or length < 0 or off + length > size:
            raise ValueError(f"entry {key} lies outside the segment")
        entries.append(Entry(key, sid, int(off), int(length), dig, codec, meta))
    return SegmentInfo(sid, size, float(doc["created"]), len(entries), _decode_blocks(doc, size)), entries


def is_local(fs: Any) -> bool:
    """Whether the cache's filesystem is the local disk (see :func:`~actstore.format.location.fs_is_local`)."""
    return fs_is_local(fs)


def atomic_put(fs: Any, path: str, data: bytes) -> None:
    """Write a whole file so that readers see all of it or nothing.

    Local disks: write a unique temporary name, then rename (atomic on POSIX). Object stores
    and ``memory://``: one PUT, which is atomic per object.
    """
    if is_local(fs):
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        atomic_write(path, data, durable=False)  # every cached piece is checked on read
    else:
        fs.pipe_file(path, data)
