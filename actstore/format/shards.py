"""The shard catalog: the one owner of a dataset's tensor-file headers, entries and checksums.

The reader and :mod:`.verify` both go through a :class:`ShardCatalog`, so a header is read,
checked against the metadata and cached in one place, and a file is hashed by one loop.
Every header it returns has passed :func:`~.header.parse_header`, which enforces the
safetensors rule that tensors are laid out back to back from data offset 0, with no hole, no
overlap and nothing after the last one (as ``safetensors``' own ``validate()`` does).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import IntegrityError
from . import spec
from .codecs import Scales, load_scales
from .header import HEADER_PROBE_BYTES, TensorEntry, header_length, parse_header
from .metadata import ViewLayout
from .source import ByteSource, LocalSource

__all__ = ["HASH_CHUNK_BYTES", "ShardCatalog"]

#: Bytes read per request while hashing a file.
HASH_CHUNK_BYTES = 16 << 20


class ShardCatalog:
    """Headers, entries and checksums of the tensor files one dataset's metadata names.

    Parameters
    ----------
    source : ByteSource
        Where the files live.
    views : dict of str to ViewLayout
        The hidden-state views (the first is the primary one).
    logits : dict or None
        The ``logits_topk`` descriptor, if the dataset has one.
    files : dict of str to dict
        ``actstore:files``: path -> ``{"size", "sha256"}`` (empty for lmprobe datasets).
    verify_checksums : bool
        Hash every file against its recorded sha256 before its header is first used.
    """

    def __init__(
        self,
        source: ByteSource,
        views: Mapping[str, ViewLayout],
        logits: dict[str, Any] | None,
        files: Mapping[str, Mapping[str, Any]],
        *,
        verify_checksums: bool = False,
    ) -> None:
        self.source = source
        self.views = views
        self.logits = logits
        self.files = files
        self.verify_checksums = verify_checksums
        self._headers: dict[str, dict[str, TensorEntry]] = {}
        self._verified: set[str] = set()
        # (view, layer) -> (dtype code, shard number) of the first shard of that layer read
        self._layer_dtype: dict[tuple[str, int], tuple[str, int]] = {}
        self._present: dict[str, tuple[int, ...]] = {}
        self._scales: dict[str, Scales] = {}  # codec shards' checked scales

    # -- which files are here -----------------------------------------------------------
    def local_exists(self, path: str) -> bool:
        """Whether a local copy holds ``path`` (always True for a remote source)."""
        if not isinstance(self.source, LocalSource):
            return True
        return os.path.exists(os.path.join(self.source.root, path))

    def present_layers(self, view: ViewLayout) -> tuple[int, ...]:
        """The layers of ``view`` whose shard files are all here (a partial pull holds some).

        Only local copies are checked (one ``stat`` per file, once); remote datasets hold
        every layer their metadata lists, and a missing file fails its read.
        """
        if not isinstance(self.source, LocalSource):
            return view.layers
        cached = self._present.get(view.name)
        if cached is None:
            cached = tuple(L for L in view.layers if all(
                self.local_exists(view.path(L, sh)) for sh in range(len(view.shard_rows))))
            self._present[view.name] = cached
        return cached

    # -- headers ---------------------------------------------------------------------
    def header(self, path: str) -> dict[str, TensorEntry]:
        """The checked tensor entries of one file (read once, then cached).

        Raises :class:`~actstore.errors.IntegrityError` naming ``path`` when the file is
        missing, its size disagrees with ``actstore:files``, its header is malformed or its
        tensors are not laid out back to back (see :mod:`.header`).
        """
        cached = self._headers.get(path)
        if cached is not None:
            return cached
        src = self.source
        try:
            size = src.size(path)
        except FileNotFoundError:
            raise IntegrityError(f"{path}: shard file listed by the metadata is missing.") from None
        rec = self.files.get(path)
        if rec is not None and rec["size"] != size:
            raise IntegrityError(
                f"{path}: file is {size} bytes but the metadata records {rec['size']}; the file "
                "is truncated or was replaced."
            )
        (probe,) = src.read_ranges(path, [(0, min(size, HEADER_PROBE_BYTES))])
        n = header_length(probe, path=path, size=size)
        if 8 + n > len(probe):
            (probe,) = src.read_ranges(path, [(0, 8 + n)])
        entries = parse_header(probe, path=path, size=size)
        if self.verify_checksums:
            self.check_sha256(path, size)
        self._headers[path] = entries
        return entries

    def entry(self, view: ViewLayout, layer: int, shard: int) -> TensorEntry:
        """The hidden-state tensor of ``layer`` in ``shard`` of ``view``, checked against the
        metadata: its key, shape ``[shard rows, dim]`` and a float dtype, the one recorded
        by actstore and the one of every other shard of the layer read so far.

        No other shard's header is read: a layer's shards are compared as they are met.
        """
        path = view.path(layer, shard)
        entries = self.header(path)
        key = view.key(layer)
        if key not in entries:
            raise IntegrityError(f"{path}: has no tensor {key!r} (found {sorted(entries)}).")
        e = entries[key]
        want = view.shard_rows[shard]
        if len(e.shape) != 2 or e.shape[0] != want or e.shape[1] != view.dim:
            raise IntegrityError(
                f"{path}: tensor {key!r} has shape {list(e.shape)}; the metadata expects "
                f"[{want}, {view.dim}]."
            )
        allowed = (view.codec.codec.code,) if view.codec is not None else ("F32", "F16", "BF16")
        if e.dtype not in allowed:  # a codec view (int8/fp8, spec section 2b) holds its codes
            raise IntegrityError(f"{path}: hidden states must be {' or '.join(allowed)}; found {e.dtype}.")
        if self.files and spec.STORED_DTYPES.get(view.dtype, ("",))[0] != e.dtype:
            raise IntegrityError(
                f"{path}: header dtype {e.dtype} disagrees with the metadata dtype {view.dtype!r}."
            )
        # one dtype per layer: rows of another shard must not be reinterpreted
        code, first = self._layer_dtype.setdefault((view.name, layer), (e.dtype, shard))
        if code != e.dtype:
            raise IntegrityError(
                f"{path}: header dtype {e.dtype} differs from {code} in shard {first} of "
                f"layer {layer} ({view.path(layer, first)}); every shard of a layer must share "
                "one dtype (spec section 2)."
            )
        return e

    def scales(self, view: ViewLayout, layer: int, shard: int) -> Scales:
        """The checked float32 scales (and offsets) of one codec shard file (read once, then kept)."""
        path = view.path(layer, shard)
        cached = self._scales.get(path)
        if cached is None:
            if view.codec is None:
                raise IntegrityError(f"{path}: view {view.name!r} stores {view.dtype}, which has no scales.")
            e = self.entry(view, layer, shard)
            cached = load_scales(self.source, path, self.header(path), layer, view.codec,
                                 e.shape[0], view.dim)
            self._scales[path] = cached
        return cached

    def logits_entries(self, shard: int) -> dict[str, TensorEntry]:
        """The values and indices tensors of one top-k logits shard, checked against the
        descriptor (shape ``[num_prompts, k]``, F32 values, I32/I64 indices)."""
        if self.logits is None:
            raise IntegrityError("The dataset stores no top-k logits.")
        desc = self.logits["shards"][shard]
        path, k = desc["file"], self.logits.get("k")
        entries = self.header(path)
        for key in (spec.LOGITS_VALUES_KEY, spec.LOGITS_INDICES_KEY):
            e = entries.get(key)
            if e is None or len(e.shape) != 2 or e.shape != (desc["num_prompts"], k):
                raise IntegrityError(
                    f"{path}: tensor {key!r} missing or not shaped [{desc['num_prompts']}, {k}]."
                )
            allowed = ("F32",) if key == spec.LOGITS_VALUES_KEY else ("I32", "I64")
            if e.dtype not in allowed:  # another code of the same width would be reinterpreted
                raise IntegrityError(
                    f"{path}: tensor {key!r} has dtype {e.dtype}; expected {' or '.join(allowed)} "
                    "(spec section 2)."
                )
        return entries

    # -- checksums -------------------------------------------------------------------
    def size(self, path: str, *, origin: bool = False) -> int:
        """The file's size; ``origin=True`` asks a caching source for the remote's own."""
        size_of: Callable[[str], int] | None = getattr(self.source, "origin_size", None) if origin else None
        return (size_of or self.source.size)(path)

    def sha256(self, path: str, size: int, *, origin: bool = False) -> str:
        """The sha256 hex digest of the first ``size`` bytes of ``path``.

        ``origin=True`` hashes the remote's bytes when the source is a cache
        (``read_origin``), not copies already held in it.
        """
        read = (getattr(self.source, "read_origin", None) if origin else None) or self.source.read_ranges
        h = hashlib.sha256()
        for start in range(0, size, HASH_CHUNK_BYTES):
            (blob,) = read(path, [(start, min(size, start + HASH_CHUNK_BYTES))])
            h.update(blob)
        return h.hexdigest()

    def check_sha256(self, path: str, size: int) -> None:
        """Raise :class:`~actstore.errors.IntegrityError` unless ``path`` hashes to the
        sha256 recorded in ``actstore:files`` (files with no record, or already checked
        by this catalog, are skipped)."""
        rec = self.files.get(path)
        if rec is None or path in self._verified:
            return
        digest = self.sha256(path, size)
        if digest != rec["sha256"]:
            raise IntegrityError(
                f"{path}: sha256 {digest} does not match the recorded {rec['sha256']}; "
                "the file is corrupt. Re-download it or run `actstore verify`."
            )
        self._verified.add(path)
