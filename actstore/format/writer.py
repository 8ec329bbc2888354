"""``DatasetWriter``: stream rows into a v2 dataset; shards first, the index last.

Rows arrive in batches through :meth:`DatasetWriter.add` and go straight to per-layer shard
files, so memory is bounded by the batch, not by the dataset. Leaving the ``with`` block
normally commits (the index is written last, atomically); leaving it with an exception
aborts and deletes every file the writer made, so no half dataset is ever readable.

Faults and concurrency (``specs/format-v2.md``, section 6b):

- A failed or short write never commits. Every write is checked for its full length, every
  finished file's size is checked against the bytes written (again just before the commit),
  and the index is read back; an ``OSError`` (disk full, file-size limit) or a short file
  aborts the writer and raises :class:`~actstore.errors.WriteError`. A writer whose
  :meth:`~DatasetWriter.add` failed part-way is aborted: it cannot commit a half batch.
- One writer per local path: the writer holds an exclusive lock on the folder from
  construction to commit/abort; a second one raises
  :class:`~actstore.errors.ConcurrentWriteError`.
- Local overwrite keeps the old dataset until the commit: new files wait in the staging
  folder, and the commit removes the old index, renames the new files into place (new
  inodes: an open reader keeps or refuses the old ones, never mixes) and writes the new
  index last. A failed overwrite leaves the old dataset as it was.
- Local commits are durable: every file is ``fsync``'ed before the rename that puts it in
  place and every folder that gained a name after it (:mod:`actstore.format.durable`), so a
  power loss leaves the old dataset or the new one, never an index naming unwritten shards.
- Object stores have no lock and no rename. A remote writer uploads each finished file at
  once and checks its size; with ``overwrite=True`` the old index is deleted first, so a
  failed remote overwrite leaves no dataset (never a mixed one). Two concurrent writers
  into one remote path are not detected: keep to one writer per remote path.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import DatasetExistsError, InvalidArgumentError, LayerNotFoundError, WriteError
from . import spec
from .checks import check_counts, check_finite, check_layers, check_texts, check_views, positive_int
from .codecs import (
    CODEC_MAX_SHARD_BYTES,
    CodecShardFile,
    ErrorStats,
    check_codec,
    codec_record,
    float_dtype,
)
from .columns import normalize_labels, normalize_metadata
from .dtypes import to_storage
from .index_builder import IndexBuilder
from .layersel import explicit_layer, explicit_layers, request
from .linked import LinkedFile, LinkedTokens
from .shardfile import StreamingTensorFile, write_tensor_file
from .target import Target
from .token_masks import check_mask_values

__all__ = ["DatasetWriter"]

#: Most threads hashing shard files at once (sha256 runs ~1.5-2 GB/s per core).
MAX_HASH_LANES = 8


class DatasetWriter:
    """Write a v2 activation dataset that actstore and lmprobe 0.10.3 both read.

    Parameters
    ----------
    path : str
        Local folder or fsspec URL of the dataset.
    model : str
        Model name or path the activations come from.
    layers : sequence of int or "embeddings"
        Layers to store (unique): block numbers ``>= 0`` and ``"embeddings"`` for the
        embedding output (stored as layer ``-1``, lmprobe's number). Negatives are refused:
        the writer does not know the model's depth, so ``-1`` (the deepest block elsewhere in
        the API) cannot be resolved here. ``hidden``/``views`` are keyed the same way.
    dim : int
        Hidden size.
    dtype : {"float32", "float16", "bfloat16", "int8", "fp8_e4m3"}
        Shard dtype; the metadata always records this true dtype. ``"int8"`` and
        ``"fp8_e4m3"`` are the lossy compact codecs (spec section 2b, :mod:`.codecs`): one
        byte per value plus float32 scales; their error is measured per layer while writing
        and recorded (``ds.info.codec``). NaN/inf are always refused for them.
    pooling : str or sequence of str
        View names; the first is the primary view (lmprobe's ``hidden_layers``). ``"all"``
        as the primary view stores full sequences (last-token shards kept separate).
    revision : str, optional
        Model revision (commit sha) used for extraction.
    shard_bytes : int
        Target size of one per-layer shard file. Codec dtypes cap it at
        ``codecs.CODEC_MAX_SHARD_BYTES`` (64 MiB of codes): until a codec file closes, its
        rows wait as float32 in the staging folder (4x its size, one per open layer and view).
    num_rows : int, optional
        Total rows, if known: lets every shard be hashed in a single pass.
    logits_k : int, optional
        Store top-k logits at the last token (values + int32 indices).
    extraction : dict, optional
        Extraction configuration, recorded as ``actstore:extraction``.
    description : str, optional
        Free text recorded in the metadata and shown on the dataset card.
    overwrite : bool
        Replace an existing dataset at ``path``: locally at the commit (a failed write keeps
        the old one), remotely its index is removed first.
    storage_options : dict, optional
        fsspec options for remote paths.
    check_finite : bool
        Refuse NaN/inf activations (default). Set False to store them as they are.
    scale : {"per_channel", "per_row", "per_channel_affine"}, optional
        Codec dtypes only: the scale granularity (default ``"per_channel_affine"``: a
        float32 scale and offset per channel per shard file, ``x = code * scale + offset``,
        so channels that ride on a large constant keep their variation; ``"per_channel"``:
        one scale per channel per shard file, no offset; ``"per_row"``: one scale per row).
    lmprobe_compat : bool, optional
        Full sequence (``pooling="all"``) only: also write lmprobe's per-token index columns
        ``token_shard_ids``/``token_shard_offsets`` (16 bytes a token) so lmprobe 0.10.3 reads
        the dataset (True), or write only the compact layout, 24 bytes a row (False). By
        default (None) the lists are written while the dataset holds at most
        ``spec.COMPAT_MAX_TOKENS`` (2**20) tokens, compact only above (spec section 5b).

    Examples
    --------
    >>> import numpy as np
    >>> with DatasetWriter("/tmp/ds", model="m", layers=[0], dim=4, overwrite=True) as w:
    ...     w.add(["a", "b"], hidden={0: np.ones((2, 4))}, labels=[0, 1])
    """

    def __init__(
        self,
        path: str,
        *,
        model: str,
        layers: Sequence[int | str],
        dim: int,
        dtype: str = "float32",
        pooling: str | Sequence[str] = "last_token",
        revision: str | None = None,
        shard_bytes: int = 1 << 30,
        num_rows: int | None = None,
        logits_k: int | None = None,
        extraction: Mapping[str, Any] | None = None,
        description: str | None = None,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
        check_finite: bool = True,
        scale: str | None = None,
        lmprobe_compat: bool | None = None,
    ) -> None:
        # stored numbers from here on (-1 = the embeddings, as on disk)
        self.layers = check_layers(explicit_layers(layers, what="DatasetWriter(layers=...)"))
        self.views = check_views(pooling)
        if not isinstance(dim, int) or dim <= 0:
            raise InvalidArgumentError(f"dim must be a positive integer; got {dim!r}.")
        if dtype not in spec.STORED_DTYPES:
            raise InvalidArgumentError(
                f"The 'dtype' argument of DatasetWriter must be one of "
                f"{', '.join(repr(d) for d in spec.STORED_DTYPES)}; got {dtype!r}."
            )
        self.codec = check_codec(dtype, scale, what="DatasetWriter")
        self._storage = float_dtype(dtype)  # what rows are converted to before encoding
        self._codec_stats: dict[tuple[str, int], ErrorStats] = {}
        if logits_k is not None and (not isinstance(logits_k, int) or logits_k <= 0):
            raise InvalidArgumentError(f"logits_k must be a positive integer; got {logits_k!r}.")
        self.dim, self.dtype, self.logits_k = dim, dtype, logits_k
        self.code, itemsize = spec.STORED_DTYPES[dtype]
        self.full_sequence = self.views[0] == "all"
        self.shard_bytes = positive_int(shard_bytes, "shard_bytes")
        if self.codec is not None:  # each open file spills 4 bytes a value until it closes
            self.shard_bytes = min(self.shard_bytes, CODEC_MAX_SHARD_BYTES)
        self.rows_per_shard = max(1, self.shard_bytes // (dim * itemsize))
        self.num_rows = num_rows
        self.check_finite = check_finite or self.codec is not None  # a scale needs finite rows
        self.index = IndexBuilder(
            model=model, revision=revision, layers=self.layers, dim=dim, dtype=dtype,
            views=self.views, shard_bytes=self.shard_bytes, logits_k=logits_k,
            extraction=dict(extraction or {}), description=description,
        )
        self.index.codec = self.codec
        if lmprobe_compat is not None and not isinstance(lmprobe_compat, bool):
            raise InvalidArgumentError(f"lmprobe_compat must be True, False or None; got {lmprobe_compat!r}.")
        self.index.lmprobe_compat = lmprobe_compat
        self._target = Target(path, storage_options)
        self.url = self._target.url
        self._index_rel = spec.INDEX_PATH
        if self._target.exists(self._index_rel):
            if not overwrite:
                self._target.cleanup()
                raise DatasetExistsError(
                    f"{self.url!r} already holds a dataset; pass overwrite=True to replace it "
                    "or choose another path."
                )
            if self._target.remote:  # uploads replace files in place: the old index goes first
                self._target.remove(self._index_rel)
        self._overwrite = overwrite
        # one single-thread lane per core: a file's blocks hash in order on its lane, while
        # the files of other layers and shards hash on the others
        self._hashers = [ThreadPoolExecutor(max_workers=1, thread_name_prefix="actstore-hash")
                         for _ in range(max(1, min(os.cpu_count() or 1, MAX_HASH_LANES)))]
        self._lanes = itertools.cycle(self._hashers)  # each new file takes the next lane
        self._open: dict[tuple[str, int], StreamingTensorFile] = {}
        self._shard, self._shard_fill = 0, 0
        self._rest: dict[int, StreamingTensorFile] = {}
        self._rest_done: list[dict[int, StreamingTensorFile]] = []
        self._rest_fill = 0
        self._logits: list[tuple[np.ndarray, np.ndarray]] = []
        self._logits_fill, self._logits_shard = 0, 0
        self._logits_rows = (
            max(1, self.shard_bytes // (logits_k * 8)) if logits_k else 0
        )
        self._done = False

    # -- context manager -------------------------------------------------------------
    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    # -- adding rows -----------------------------------------------------------------
    def add(
        self,
        texts: Sequence[str],
        hidden: Mapping[int | str, Any] | None = None,
        *,
        views: Mapping[str, Mapping[int | str, Any]] | None = None,
        labels: Sequence[Any] | None = None,
        metadata: Any = None,
        num_tokens: Sequence[int] | None = None,
        logits_topk: tuple[Any, Any] | None = None,
        prompt_tokens: Sequence[int] | None = None,
        special_first_token: Sequence[bool] | None = None,
        token_shards: LinkedTokens | None = None,
    ) -> None:
        """Append a batch of rows.

        Parameters
        ----------
        texts : sequence of str
            One prompt text per row.
        hidden : dict of layer to array
            Primary view, keyed as in ``layers`` (block number or ``"embeddings"``):
            layer -> ``(n, dim)`` array; for full-sequence storage,
            layer -> list of ``(n_tokens_i, dim)`` arrays.
        views : dict, optional
            Extra pooled views: view name -> layer -> ``(n, dim)`` array.
        labels : sequence, optional
            int, bool, str or float (regression) per row.
        metadata : list of dict or dict of columns, optional
            Extra index columns.
        num_tokens : sequence of int, optional
            Token count per row (derived automatically for full-sequence storage).
        logits_topk : (values, indices), optional
            ``(n, k)`` arrays of top-k logits at the last token.
        prompt_tokens : sequence of int, optional
            Token masks (spec section 5c): per row, how many of its first tokens are the
            prompt (``0..n_tokens``); the rest are a generated continuation.
        special_first_token : sequence of bool, optional
            Token masks: per row, whether its token 0 is a special token the tokenizer
            added (BOS, CLS). Masks are given on every ``add`` or on none.
        token_shards : LinkedTokens, optional
            Full sequence, float dtypes: the rows' tokens before their last one are already in
            these finished token shards (another dataset's, same dtype and dim), which are
            hard-linked (or byte-copied) into this dataset instead of written again
            (:mod:`.linked`; what ``merge`` does). ``hidden`` then holds only each row's last
            token, ``(n, dim)`` per layer.
        """
        self._check_open()
        texts = check_texts(texts)
        n = len(texts)
        if n == 0:
            return
        if token_shards is not None:
            self._check_linked(token_shards, n)
            primary = self._pooled_blocks("hidden", hidden, n)  # the last tokens
        else:
            primary = self._primary_blocks(hidden, n)
        extra = {
            name: self._pooled_blocks(f"views[{name!r}]", (views or {}).get(name), n)
            for name in self.views[1:]
        }
        unknown = set(views or {}) - set(self.views[1:])
        if unknown:
            raise LayerNotFoundError(
                f"views {sorted(unknown)} were not declared; the writer's pooling is "
                f"{list(self.views)}. Declare every view in pooling=[...]."
            )
        lab = normalize_labels(labels, n) if labels is not None else None
        meta = normalize_metadata(metadata, n) if metadata is not None else None
        logits = self._logit_blocks(logits_topk, n)
        if token_shards is not None:
            tok = token_shards.counts.tolist()
        elif self.full_sequence:
            tok = [len(primary[self.layers[0]][i]) for i in range(n)]
        else:
            tok = check_counts(num_tokens, n)
        masks = {name: check_mask_values(name, values, tok) for name, values in
                 (("prompt_tokens", prompt_tokens), ("special_first_token", special_first_token))
                 if values is not None}
        try:  # from here on a failure leaves half a batch behind: the writer is aborted
            self.index.add_rows(texts, labels=lab, metadata=meta, num_tokens=tok, masks=masks)
            if token_shards is not None:
                self._write_linked(primary, extra, n, token_shards)
            elif self.full_sequence:
                self._write_full(primary, extra, n)
            else:
                self._write_pooled({self.views[0]: primary, **extra}, n)
            if logits is not None:
                self._write_logits(*logits)
        except BaseException as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: BaseException) -> None:
        """Abort after a failure while writing; an ``OSError`` becomes a ``WriteError``."""
        self.abort()
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(
                f"Writing {self.url!r} failed ({exc}); nothing was committed and the files "
                "written so far were removed. Free space (or raise the file-size limit) and "
                "write again."
            ) from exc

    # -- validation of one batch -------------------------------------------------------
    def _check_open(self) -> None:
        if self._done:
            raise InvalidArgumentError("This DatasetWriter is already committed or aborted.")

    def _layer_map(self, name: str, data: Mapping[int | str, Any] | None) -> Mapping[int, Any]:
        """``data`` keyed by stored layer number; keys as in ``layers`` (``"embeddings"``)."""
        shown = [request(L) for L in self.layers]
        if data is None or not isinstance(data, Mapping):
            raise InvalidArgumentError(f"{name} needs a dict of layer -> array for layers {shown}.")
        keyed = {explicit_layer(k, what=f"{name} key"): v for k, v in data.items()}
        missing = [request(L) for L in self.layers if L not in keyed]
        extra = [request(L) for L in sorted(set(keyed) - set(self.layers))]
        if missing or extra:
            raise LayerNotFoundError(
                f"{name} must give exactly layers {shown}; missing {missing}, unexpected {extra}."
            )
        return keyed

    def _block(self, name: str, layer: int, x: Any, n: int) -> np.ndarray:
        block = to_storage(x, self._storage, what=f"{name}[{request(layer)!r}]")
        if block.shape != (n, self.dim):
            raise InvalidArgumentError(
                f"{name}[{request(layer)!r}] has shape {block.shape}; expected ({n}, {self.dim}) "
                "(one row per text, dim columns)."
            )
        if self.check_finite:
            check_finite(x, block, name=f"{name}[{request(layer)!r}]")
        return block

    def _pooled_blocks(self, name: str, data: Mapping[int, Any] | None, n: int) -> dict[int, np.ndarray]:
        data = self._layer_map(name, data)
        return {L: self._block(name, L, data[L], n) for L in self.layers}

    def _primary_blocks(self, hidden: Mapping[int, Any] | None, n: int) -> dict[int, Any]:
        if not self.full_sequence:
            return self._pooled_blocks("hidden", hidden, n)
        data = self._layer_map("hidden", hidden)
        out: dict[int, list[np.ndarray]] = {}
        for L in self.layers:
            seqs = list(data[L])
            if len(seqs) != n:
                raise InvalidArgumentError(
                    f"hidden[{request(L)!r}] has {len(seqs)} sequences but texts has {n}."
                )
            out[L] = [self._seq_block(L, i, s) for i, s in enumerate(seqs)]
        lengths = [len(s) for s in out[self.layers[0]]]
        for L in self.layers[1:]:
            if [len(s) for s in out[L]] != lengths:
                raise InvalidArgumentError(
                    f"hidden[{request(L)!r}] token counts differ from hidden[{request(self.layers[0])!r}]; every "
                    "layer must hold the same tokens."
                )
        return out

    def _seq_block(self, layer: int, i: int, x: Any) -> np.ndarray:
        block = to_storage(x, self._storage, what=f"hidden[{request(layer)!r}][{i}]")
        if block.ndim != 2 or block.shape[1] != self.dim or block.shape[0] < 1:
            raise InvalidArgumentError(
                f"hidden[{request(layer)!r}][{i}] has shape {block.shape}; expected (n_tokens >= 1, {self.dim})."
            )
        if self.check_finite:
            check_finite(x, block, name=f"hidden[{request(layer)!r}][{i}]")
        return block

    def _logit_blocks(self, logits: tuple[Any, Any] | None, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        if (logits is None) != (self.logits_k is None):
            raise InvalidArgumentError(
                "logits_topk must be given on every add() exactly when the writer has logits_k "
                f"(logits_k={self.logits_k})."
            )
        if logits is None:
            return None
        values = np.ascontiguousarray(to_storage(logits[0], "float32", what="logits values"))
        raw = np.asarray(logits[1])
        # stored as I32 like lmprobe's: a cast would silently wrap ids that do not fit
        if raw.size and not bool(np.all((raw >= -(2**31)) & (raw < 2**31))):
            raise InvalidArgumentError(
                f"logits_topk indices must be token ids that fit in int32; got values from "
                f"{raw.min()} to {raw.max()}."
            )
        indices = np.ascontiguousarray(raw, dtype=np.int32)
        if values.shape != (n, self.logits_k) or indices.shape != (n, self.logits_k):
            raise InvalidArgumentError(
                f"logits_topk arrays have shapes {values.shape} and {indices.shape}; "
                f"expected ({n}, {self.logits_k}) each."
            )
        return values, indices

    # -- writing -----------------------------------------------------------------------
    def _planned(self, shard: int) -> int | None:
        if self.num_rows is None:
            return None
        return max(0, min(self.rows_per_shard, self.num_rows - shard * self.rows_per_shard)) or None

    def _file(self, view: str, layer: int) -> StreamingTensorFile:
        f = self._open.get((view, layer))
        if f is None:
            rel = self._rel(view, layer, self._shard)
            f = self._new_file(self._target.stage(rel), view, layer, self._planned(self._shard))
            self._open[(view, layer)] = f
        return f

    def _new_file(self, path: str, view: str, layer: int, planned: int | None) -> Any:
        """A shard file being written: streamed floats, or codes encoded at close."""
        if self.codec is not None:
            stats = self._codec_stats.setdefault((view, layer), ErrorStats())
            return CodecShardFile(path, layer=layer, dim=self.dim, codec=self.codec, stats=stats)
        return StreamingTensorFile(
            path, key=spec.HIDDEN_KEY.format(layer=layer), dtype=self.code, dim=self.dim,
            planned_rows=planned, hasher=next(self._lanes), durable=not self._target.remote,
        )

    def _rel(self, view: str, layer: int, shard: int) -> str:
        if view == self.views[0]:
            return spec.HIDDEN_PATTERN.format(layer=layer, shard=shard)
        return spec.VIEW_PATTERN.format(view=view, layer=layer, shard=shard)

    def _write_pooled(self, blocks: dict[str, Mapping[int, Any]], n: int) -> None:
        start = 0
        while start < n:
            take = min(n - start, self.rows_per_shard - self._shard_fill)
            for view, per_layer in blocks.items():
                for layer in self.layers:
                    self._file(view, layer).append(per_layer[layer][start : start + take])
            self.index.add_locations(self._shard, self._shard_fill, take)
            self._shard_fill += take
            start += take
            if self._shard_fill == self.rows_per_shard:
                self._close_shard()
        for f in self._open.values():
            f.wait()

    def _close_shard(self) -> None:
        for (view, layer), f in self._open.items():
            self._publish(f, self._rel(view, layer, self._shard))
        self._open.clear()
        self.index.add_shard(self._shard_fill)
        self._shard += 1
        self._shard_fill = 0

    def _publish(self, f: StreamingTensorFile, rel: str) -> None:
        size, sha = f.close(sync=not self._target.remote)  # flush while the hash finishes
        self._target.publish(f.path, rel, size)
        self.index.add_file(rel, size, sha)

    def _write_full(self, seqs: dict[int, list[np.ndarray]], extra: dict[str, Any], n: int) -> None:
        itemsize = spec.STORED_DTYPES[self.dtype][1]
        last = {L: np.stack([s[-1] for s in seqs[L]]) for L in self.layers}
        self._write_pooled({"all": last, **extra}, n)
        for i in range(n):
            rest_rows = len(seqs[self.layers[0]][i]) - 1
            if self._rest and self._rest_fill and (
                (self._rest_fill + rest_rows) * self.dim * itemsize > self.shard_bytes
            ):
                self._roll_rest()
            files = self._rest_files()
            offset = self._rest_fill
            for L in self.layers:
                if rest_rows:
                    files[L].append(seqs[L][i][:-1])
            for f in files.values():
                f.wait()
            self.index.add_tokens(len(self._rest_done), offset, rest_rows + 1)
            self._rest_fill += rest_rows

    def _check_linked(self, linked: LinkedTokens, n: int) -> None:
        """Refuse token shards this writer cannot adopt as they are (before any write)."""
        if not self.full_sequence or self.codec is not None:
            raise InvalidArgumentError(
                "token_shards needs a full-sequence writer (pooling='all') with a float dtype; "
                f"this one has pooling {list(self.views)} and dtype {self.dtype!r}: pass the "
                "rows' tokens in hidden instead."
            )
        if not (linked.shard.shape == linked.start.shape == linked.counts.shape == (n,)):
            raise InvalidArgumentError(
                f"token_shards gives {linked.counts.shape[0]} rows' tokens for {n} texts; give one "
                "shard, start and count per row."
            )
        for k, sh in enumerate(linked.shards):
            if set(sh.files) != set(self.layers):
                raise LayerNotFoundError(
                    f"token_shards.shards[{k}] has files for layers {sorted(sh.files)}; the writer "
                    f"stores {list(self.layers)}."
                )

    def _write_linked(self, last: dict[int, Any], extra: dict[str, Any], n: int,
                      linked: LinkedTokens) -> None:
        """The last tokens and pooled views written, the token shards adopted as they are."""
        self._write_pooled({"all": last, **extra}, n)
        if self._rest:  # the shard being filled is closed first: adopted ones follow it
            self._roll_rest()
        base = len(self._rest_done)
        for sh in linked.shards:
            k = len(self._rest_done)
            self._rest_done.append({
                L: LinkedFile(self._target.stage(f"rest{k:05d}_layer{L:03d}"), *sh.files[L])
                for L in self.layers})
            self.index.add_linked_rest_shard(sh.num_prompts, sh.num_tokens)
        for k, start, count in zip(linked.shard.tolist(), linked.start.tolist(), linked.counts.tolist()):
            self.index.add_tokens(base + k, start, count, counted=False)

    def _rest_files(self) -> dict[int, StreamingTensorFile]:
        if not self._rest:
            k = len(self._rest_done)
            self._rest = {
                L: self._new_file(self._target.stage(f"rest{k:05d}_layer{L:03d}"), "all", L, None)
                for L in self.layers
            }
        return self._rest

    def _roll_rest(self) -> None:
        self.index.add_rest_shard(self._rest_fill)
        self._rest_done.append(self._rest)
        self._rest, self._rest_fill = {}, 0

    def _write_logits(self, values: np.ndarray, indices: np.ndarray) -> None:
        start, n = 0, values.shape[0]
        while start < n:
            take = min(n - start, self._logits_rows - self._logits_fill)
            self._logits.append((values[start : start + take].copy(), indices[start : start + take].copy()))
            self.index.add_logit_locations(self._logits_shard, self._logits_fill, take)
            self._logits_fill += take
            start += take
            if self._logits_fill == self._logits_rows:
                self._flush_logits()

    def _flush_logits(self) -> None:
        if not self._logits:
            return
        rel = spec.LOGITS_PATTERN.format(shard=self._logits_shard)
        staged = self._target.stage(rel)
        size, sha = write_tensor_file(staged, [
            (spec.LOGITS_VALUES_KEY, "F32", np.concatenate([v for v, _ in self._logits])),
            (spec.LOGITS_INDICES_KEY, "I32", np.concatenate([i for _, i in self._logits])),
        ])
        self._target.publish(staged, rel, size)
        self.index.add_file(rel, size, sha)
        self.index.add_logits_shard(rel, self._logits_fill)
        self._logits, self._logits_fill = [], 0
        self._logits_shard += 1

    # -- commit / abort ----------------------------------------------------------------
    def commit(self) -> str:
        """Finish every shard, then write the index last; returns the dataset URL."""
        self._check_open()
        try:
            if self.index.num_rows == 0:
                raise InvalidArgumentError(
                    f"No rows were added to {self.url!r}; add at least one row before committing."
                )
            if self._shard_fill:
                self._close_shard()
            self._flush_logits()
            if self.full_sequence:
                self._publish_rest()
            self.index.codec_stats = codec_record(self._codec_stats)
            staged = self._target.stage("index.parquet")
            size = self.index.write(staged)
            self._target.check_size(staged, self._index_rel, size)
            if self._overwrite and not self._target.remote:
                self._target.remove(self._index_rel)  # the old dataset stops existing here
            self._target.commit_files()  # local: every shard into place, sizes checked again
            if self._overwrite:
                self._remove_stale()
            self._target.publish(staged, self._index_rel, size)
            self._target.commit_files()  # the commit point
        except BaseException as exc:
            self._fail(exc)
            raise
        self._finish()
        return self.url

    def _publish_rest(self) -> None:
        if self._rest:
            self._roll_rest()
        first = self._shard
        for k, files in enumerate(self._rest_done):
            for L, f in files.items():
                self._publish(f, spec.HIDDEN_PATTERN.format(layer=L, shard=first + k))
        self.index.set_last_token_shards(first)

    def _remove_stale(self) -> None:
        keep = set(self.index.files)
        for rel in self._target.list_tensor_files():
            if rel not in keep:
                self._target.remove(rel)

    def abort(self) -> None:
        """Delete every file this writer made; nothing readable is left behind."""
        if self._done:
            return
        for f in [*self._open.values(), *self._rest.values()]:
            f.discard()
        for files in self._rest_done:
            for f in files.values():
                f.discard()
        for rel in self._target.published:  # only what this writer put in place
            try:
                self._target.remove(rel)
            except OSError:
                pass  # best effort: the index is what makes a dataset, and it is not written
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self._open.clear()
        for lane in self._hashers:
            lane.shutdown(wait=True)
        self._target.cleanup()

