"""The loopback Hub's Xet storage: a ``local://`` CAS folder that ``hf_xet`` writes and reads.

The client uploads through ``hf_xet`` straight into the folder (``hf_xet`` 1.8.0 accepts a
``local://`` CAS URL); the commit then names each file only by its sha256. As the real Hub
asks its CAS, the server reads the shard files ``hf_xet`` wrote (``xet/xorbs/shards/*.mdb``)
to map a sha256 to the Xet file hash and size, and materialises a file's bytes (for plain
HTTP reads of ``resolve``, the "LFS bridge") by downloading it from the CAS with ``hf_xet``.

Shard layout read here (xet-core MDB v2, little-endian): a 48-byte header (32-byte magic,
u64 version, u64 footer size), then the file-info section: per file a 48-byte header (file
hash as 4 x u64, u32 flags, u32 entry count, 8 bytes unused), ``count`` 48-byte segment
entries (cas hash, u32 flags, u32 unpacked bytes, u32 chunk start, u32 chunk end), then
``count`` 48-byte verification entries if flag bit 31 is set, and one 48-byte metadata
extension (sha256 as 4 x u64, 16 bytes padding) if bit 30 is set; a header whose hash is all
``0xff`` ends the section.
"""

from __future__ import annotations

import glob
import hashlib
import os
import struct
import threading
import time

from ._store import HubStoreError

__all__ = ["XetCas", "hash_hex", "parse_shard"]

_MAGIC_LEN, _HEADER = 32, 48
_ENTRY = 48
_WITH_VERIFICATION, _WITH_METADATA = 1 << 31, 1 << 30
_BOOKEND = b"\xff" * 32


def hash_hex(raw: bytes) -> str:
    """A 32-byte Xet hash (4 little-endian u64) as Xet prints it (each u64 as 16 hex digits)."""
    return "".join(f"{v:016x}" for v in struct.unpack("<4Q", raw))


def parse_shard(data: bytes) -> list[tuple[str, str | None, int]]:
    """``(xet file hash, sha256 or None, size)`` of every file a shard describes.

    Raises
    ------
    HubStoreError
        The bytes are not a shard this parser understands.
    """
    if len(data) < _HEADER or not data.startswith(b"HFRepoMetaData"):
        raise HubStoreError(500, "BadShard", "not a Xet shard (no HFRepoMetaData magic)")
    out: list[tuple[str, str | None, int]] = []
    pos = _HEADER
    while pos + _ENTRY <= len(data):
        file_hash = data[pos:pos + 32]
        if file_hash == _BOOKEND:
            return out
        flags, count = struct.unpack_from("<II", data, pos + 32)
        pos += _ENTRY
        need = count * _ENTRY * (2 if flags & _WITH_VERIFICATION else 1)
        need += _ENTRY if flags & _WITH_METADATA else 0
        if pos + need > len(data):  # a count the bytes cannot hold: never read past them
            raise HubStoreError(500, "BadShard",
                                f"Xet shard file entry claims {count} segments past its end")
        size = sum(struct.unpack_from("<I", data, pos + i * _ENTRY + 36)[0] for i in range(count))
        pos += count * _ENTRY
        if flags & _WITH_VERIFICATION:
            pos += count * _ENTRY
        sha = None
        if flags & _WITH_METADATA:
            sha = hash_hex(data[pos:pos + 32])
            pos += _ENTRY
        out.append((hash_hex(file_hash), sha, size))
    raise HubStoreError(500, "BadShard", "Xet shard file-info section has no end marker")


class XetCas:
    """The CAS folder under ``<root>/xet-cas`` and what the server knows of it."""

    def __init__(self, root: str) -> None:
        self.dir = os.path.abspath(os.path.join(root, "xet-cas"))
        os.makedirs(self.dir, exist_ok=True)
        self.url = "local://" + self.dir
        self._lock = threading.Lock()
        self._seen: dict[str, list[tuple[str, str | None, int]]] = {}

    def _scan(self) -> dict[str, list[tuple[str, str | None, int]]]:
        """Shard path -> its files, newest shard first."""
        with self._lock:
            paths = glob.glob(os.path.join(self.dir, "xet", "xorbs", "shards", "*.mdb"))
            for path in paths:
                if path not in self._seen:
                    with open(path, "rb") as f:
                        self._seen[path] = parse_shard(f.read())
            order = sorted(paths, key=lambda p: os.stat(p).st_mtime_ns, reverse=True)
            return {p: self._seen[p] for p in order}

    def lookup(self, sha256: str) -> tuple[str, int] | None:
        """The Xet hash and size of the latest uploaded file whose sha256 is ``sha256``."""
        for files in self._scan().values():
            for xet_hash, sha, size in files:
                if sha == sha256:
                    return xet_hash, size
        return None

    def file_uploads(self) -> int:
        """How many file uploads the shards record (one per file per upload session)."""
        return sum(len(files) for files in self._scan().values())

    def stored_bytes(self) -> int:
        """Bytes of Xet data (xorbs) the CAS folder holds; deduplicated uploads add none."""
        xorbs = glob.glob(os.path.join(self.dir, "xet", "xorbs", "xorbs", "*"))
        return sum(os.path.getsize(p) for p in xorbs if not p.endswith(".tagset"))

    def materialise(self, xet_hash: str, size: int, sha256: str, dest: str) -> None:
        """Download a Xet file from the CAS to ``dest``, checking its sha256 first."""
        import hf_xet

        tmp = f"{dest}.{os.getpid()}.{threading.get_ident()}.xet"
        session = hf_xet.XetSession()
        with session.new_file_download_group(
            endpoint=self.url, token="local", token_expiry_unix_secs=int(time.time()) + 3600,
        ) as group:
            group.start_download_file(hf_xet.XetFileInfo(xet_hash, size), tmp)
        h = hashlib.sha256()
        with open(tmp, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        if h.hexdigest() != sha256:
            os.unlink(tmp)
            raise HubStoreError(500, "XetCorrupt", f"Xet file {xet_hash} does not hash to {sha256}")
        os.replace(tmp, dest)
