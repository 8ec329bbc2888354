"""``fetch_metadata``: what a Hub dataset holds, read by range requests (the index's
Parquet footer and one shard header), without downloading it.
"""

from __future__ import annotations

import struct
from typing import Any
from urllib.parse import quote

from ..errors import DatasetNotFoundError, FormatError, IntegrityError, require
from ..format import spec
from ..format.header import header_length, parse_header
from ..format.info import DatasetInfo
from ..format.metadata import (
    ViewLayout,
    decode_schema_metadata,
    parse_files,
    parse_layout,
)
from ..hub_client import hub_errors
from ._common import INDEX_PATH

_HEADER_PROBE = 1024  # bytes of a shard read for its header (one more read if it is longer)

__all__ = ['fetch_metadata']


def _footer(f: Any, where: str) -> bytes:
    """The Parquet footer (with its length and magic) in one or two range reads."""
    size = f.size
    f.seek(max(size - 16384, 0))  # most footers fit; else one more read
    tail = f.read()
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise FormatError(f"{where}: not a Parquet file (no PAR1 footer in its {size} bytes).")
    (n,) = struct.unpack("<I", tail[-8:-4])
    if n + 12 > size:
        raise FormatError(f"{where}: the Parquet footer claims {n} bytes but the file is {size} bytes.")
    if n + 8 > len(tail):
        f.seek(size - 8 - n)
        tail = f.read(n - len(tail) + 8) + tail
    return tail[-(n + 8):]



def _header_dtype(fs: Any, base: str, view: ViewLayout, files: dict[str, Any]) -> str:
    """The dtype a view's first shard header records, checked as the reader checks it.

    Reads one header by range (the first layer's shard 0). A header that is not F32/F16/BF16,
    or (in a dataset with recorded files) that disagrees with the metadata dtype, raises
    :class:`~actstore.errors.IntegrityError`, like ``Dataset.info``.
    """
    if not view.shard_rows:
        return view.dtype
    path = view.path(view.layers[0], 0)
    try:
        with fs.open(f"{base}/{path}", "rb", cache_type="none") as f:
            size = int(f.size)
            rec = files.get(path)
            if rec is not None and rec["size"] != size:
                raise IntegrityError(
                    f"{path}: file is {size} bytes but the metadata records {rec['size']}; the "
                    "file is truncated or was replaced."
                )
            probe = f.read(min(size, _HEADER_PROBE))  # one shard's header: ~150 bytes
            n = header_length(probe, path=path, size=size)
            if 8 + n > len(probe):
                f.seek(0)
                probe = f.read(8 + n)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: shard file listed by the metadata is missing.") from None
    entry = parse_header(probe, path=path, size=size).get(view.key(view.layers[0]))
    if entry is None:
        raise IntegrityError(f"{path}: has no tensor {view.key(view.layers[0])!r}.")
    allowed = (view.codec.codec.code,) if view.codec is not None else ("F32", "F16", "BF16")
    if entry.dtype not in allowed:  # a codec view (int8/fp8, spec section 2b) holds its codes
        raise IntegrityError(f"{path}: hidden states must be {' or '.join(allowed)}; found {entry.dtype}.")
    if files and spec.STORED_DTYPES.get(view.dtype, ("",))[0] != entry.dtype:
        raise IntegrityError(
            f"{path}: header dtype {entry.dtype} disagrees with the metadata dtype {view.dtype!r}."
        )
    return spec.ST_DTYPES[entry.dtype][0]



def fetch_metadata(repo_id: str, *, revision: str | None = None, token: str | bool | None = None,
                   endpoint: str | None = None) -> DatasetInfo:
    """What a Hub dataset holds, read by range requests: the index's Parquet footer and one
    shard header.

    The ``dtype`` is the stored one, read from the first shard header of the primary view (as
    ``Dataset.info`` reports it); a header that disagrees with the dtype the metadata records
    raises :class:`~actstore.errors.IntegrityError`.

    Examples
    --------
    >>> info = actstore.fetch_metadata("org/acts")   # doctest: +SKIP
    >>> info.layers, info.num_prompts                 # doctest: +SKIP
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..format.arrowio import arrow_buffer
    from ..format.info import build_info

    hf = require("huggingface_hub", "hub")
    fs = hf.HfFileSystem(endpoint=endpoint, token=token, skip_instance_cache=True)  # type: ignore[attr-defined]
    rev = quote(revision or "main", safe="")
    base = f"datasets/{repo_id}@{rev}"
    with hub_errors(repo_id, "read metadata of", revision=revision):
        try:
            with fs.open(f"{base}/{INDEX_PATH}", "rb", cache_type="none") as f:
                footer = _footer(f, INDEX_PATH)
        except FileNotFoundError as exc:
            raise DatasetNotFoundError(
                f"No dataset index at {repo_id}@{revision or 'main'}/{INDEX_PATH} ({exc}); check "
                "the repo id and revision, and that a push to it finished."
            ) from None
    try:  # an Arrow-owned buffer, never io.BytesIO (the exit-134 crash, see format.arrowio)
        md = pq.read_metadata(pa.BufferReader(arrow_buffer(b"PAR1" + footer)))
        arrow_meta = md.schema.to_arrow_schema().metadata
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(f"{INDEX_PATH}: the Parquet footer cannot be read ({exc}).") from None
    meta = decode_schema_metadata(arrow_meta)
    views, logits = parse_layout(meta)
    files = parse_files(meta)
    primary = next(iter(views.values()))
    with hub_errors(repo_id, "read a shard header of", revision=revision):
        dtype = _header_dtype(fs, base, primary, files)
    return build_info(meta, views, logits, files, md.num_rows, dtype)
