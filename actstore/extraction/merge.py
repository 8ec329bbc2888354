"""``merge``: join the committed parts of a run into the one dataset at ``out``.

Parts are read back one at a time (memory is bounded by one part) and written through
``DatasetWriter`` in shard order, so the merged dataset is the same whichever workers
wrote which parts, and whatever runs were killed on the way. The token masks of
full-sequence parts (spec section 5c) are carried over.

Token shards are linked, not rewritten, when they can be (the rule of :func:`link_rule`,
spec section 5b "Merging parts"): full-sequence parts in the compact layout, in the merged
dataset's own float dtype, whose token shard files average at least
:data:`LINK_MIN_SHARD_BYTES`. Each part's token shard files are then hard-linked into the
merged dataset (byte-copied where a link is impossible: another file system, or a remote
``out``, which gets them uploaded), never decoded; only the last tokens, pooled views,
logits and the index are written again, the index with each row's ``token_shard`` shifted
to the merged shard numbers. Otherwise the tokens are rewritten: a codec run's parts hold
float32 that the merge encodes once, and small part shards (64 prompts by default with
``pooling="all"``) would give the merged dataset thousands of small files. A rewritten
part's tokens are read with one coalesced read per layer (``get_tokens`` of all its ids).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import DatasetNotFoundError, InvalidArgumentError
from ..format.linked import LinkedTokens, TokenShard
from ..format.reader import Dataset, open_dataset
from ..format.spec import CODEC_DTYPES, RESERVED_COLUMNS
from ..format.token_masks import mask_columns
from ..format.writer import DatasetWriter
from .layout import CONFIG, PARTS, RunDir

__all__ = ["LINK_MIN_SHARD_BYTES", "link_rule", "merge"]

#: The smallest mean size of the parts' token shard files (one per layer and shard) that
#: ``merge`` links as they are; below it the tokens are rewritten into full-size shards.
LINK_MIN_SHARD_BYTES = 16 << 20


def _part_rows(ds: Dataset, *, linked: bool = False) -> dict[str, Any]:
    """Everything ``DatasetWriter.add`` needs to write a part's rows again (``linked``:
    only each row's last token; the token shards come as ``token_shards``)."""
    info = ds.info
    layers = list(info.layers)  # the writer takes the embeddings by name, as info lists them
    if info.storage == "full_sequence" and not linked:
        ids = np.arange(ds.num_tokens_total, dtype=np.int64)
        cuts = np.cumsum(ds.column("num_tokens").astype(np.int64))[:-1]
        hidden: dict[int | str, Any] = {
            L: np.split(ds.get_tokens(ids, layers=[L])[:, 0], cuts) for L in layers}
    else:
        hidden = {L: _stored(ds, L, None) for L in layers}
    extra_cols = [c for c in ds.index.column_names if c not in RESERVED_COLUMNS]
    return {
        "texts": ds.texts,
        "hidden": hidden,
        "views": {v: {L: _stored(ds, L, v) for L in layers} for v in info.views[1:]},
        "labels": None if ds.labels is None else ds.labels.tolist(),
        "metadata": {c: ds.index.column(c).to_pylist() for c in extra_cols},
        "num_tokens": None if info.storage == "full_sequence" else ds.column("num_tokens").tolist(),
        "logits_topk": ds.logits_topk() if info.logits_k else None,
        **mask_columns(ds),
    }


def _token_shards(ds: Dataset, part: str) -> LinkedTokens:
    """A compact full-sequence part's token shards as they are, for ``DatasetWriter.add``."""
    desc = ds.info.tensors["hidden_layers"]
    lt = int(desc["last_token_shards"])
    shards = []
    for k, sh in enumerate(desc["shards"][lt:]):
        files = {}
        for L in desc["layers"]:
            rel = desc["file_pattern"].format(layer=L, shard=lt + k)
            rec = ds.info.files[rel]
            files[int(L)] = (os.path.join(part, rel), int(rec["size"]), str(rec["sha256"]))
        shards.append(TokenShard(files, int(sh["num_prompts"]), int(sh["num_tokens"])))
    return LinkedTokens(shards, ds.column("token_shard").astype(np.int64) - lt,
                        ds.column("token_start").astype(np.int64),
                        ds.column("num_tokens").astype(np.int64))


def link_rule(parts: Iterable[Dataset], dtype: str) -> str | None:
    """Why the parts' token shards must be rewritten, or None when ``merge`` links them.

    Parameters
    ----------
    parts : iterable of Dataset
        The committed parts (each is looked at once: a generator keeps one open at a time).
    dtype : str
        The merged dataset's dtype.

    Examples
    --------
    >>> link_rule([open_dataset("runs/x/_parts/shard-00000")], "float16")  # doctest: +SKIP
    'token shard files average 1.2 MB, below LINK_MIN_SHARD_BYTES (16.8 MB)'
    """
    if dtype in CODEC_DTYPES:
        return f"dtype {dtype!r} is a codec: the parts hold float32 that the merge encodes"
    sizes = []
    for ds in parts:
        if ds.info.storage != "full_sequence":
            return "pooled parts have no token shards"
        if ds.info.dtype != dtype:
            return f"a part holds {ds.info.dtype}, the merged dataset {dtype}"
        if not all(c in ds.index.column_names for c in ("token_shard", "token_start")):
            return "a part has no compact token columns (per-token lists only)"
        desc = ds.info.tensors["hidden_layers"]
        lt = int(desc["last_token_shards"])
        sizes += [int(rec["size"]) for rel, rec in ds.info.files.items()
                  if any(rel == desc["file_pattern"].format(layer=L, shard=s)
                         for L in desc["layers"] for s in range(lt, len(desc["shards"])))]
    mean = sum(sizes) / max(1, len(sizes))
    if mean < LINK_MIN_SHARD_BYTES:
        return (f"token shard files average {mean / 1e6:.1f} MB, below LINK_MIN_SHARD_BYTES "
                f"({LINK_MIN_SHARD_BYTES / 1e6:.1f} MB)")
    return None


def _stored(ds: Dataset, layer: int | str, view: str | None) -> Any:
    """One layer in its stored dtype: bfloat16 comes as a torch tensor, whose bits the writer
    keeps (no widening to float32 and rounding back)."""
    if ds.info.dtype == "bfloat16":
        return ds.torch(layer, view=view)
    return ds.layer(layer, view=view)


def merge(out: str, *, keep_parts: bool = False, work_dir: str | None = None,
          storage_options: dict[str, Any] | None = None,
          lmprobe_compat: bool | None = None) -> Dataset:
    """Join the committed parts of the extraction into ``out``, then remove the parts.

    Parameters
    ----------
    out : str
        The ``out`` the workers wrote to (local path or fsspec URL).
    keep_parts : bool
        Keep the per-shard parts after merging.
    work_dir : str, optional
        Where the parts are, if the run was given a ``work_dir``.
    storage_options : dict, optional
        fsspec options for a remote ``out``.
    lmprobe_compat : bool, optional
        Full-sequence runs: the token layout rule of ``DatasetWriter`` (True: also lmprobe
        0.10.3's per-token lists; False: compact only; None: by size, spec section 5b).

    Notes
    -----
    Full-sequence parts' token shards are hard-linked (byte-copied where a link is
    impossible, uploaded to a remote ``out``), never decoded, when :func:`link_rule` allows:
    compact parts in the merged float dtype whose token shard files average at least
    :data:`LINK_MIN_SHARD_BYTES`; otherwise they are rewritten into full-size shards.

    Examples
    --------
    >>> ds = merge("runs/llama-acts")      # doctest: +SKIP
    """
    run = RunDir(out, work_dir, storage_options)
    if run.final_exists():
        # only a merge writes the final index: this one finished, perhaps not its clean-up
        if not keep_parts:
            run.remove_parts()
        return open_dataset(out, storage_options=storage_options)
    if not os.path.exists(run.config_path):
        raise DatasetNotFoundError(
            f"{out!r} holds no extraction parts to merge (no {PARTS}/{CONFIG} in {run.parts!r})."
        )
    with open(run.config_path) as f:
        config = json.load(f)
    n_shards = -(-config["num_prompts"] // config["shard_size"])
    missing = [s for s in range(n_shards) if not run.part_done(s)]
    if missing:
        raise InvalidArgumentError(
            f"Cannot merge {out!r}: shards {missing[:10]} of {n_shards} are not finished yet; run "
            "the workers that own them (same command), then merge again."
        )
    if lmprobe_compat is not None and not isinstance(lmprobe_compat, bool):
        raise InvalidArgumentError(f"lmprobe_compat must be True, False or None; got {lmprobe_compat!r}.")
    _write(run, n_shards, storage_options, config.get("dtype"), lmprobe_compat)
    if not keep_parts:
        run.remove_parts()
    return open_dataset(out, storage_options=storage_options)


def _write(run: RunDir, n_shards: int, storage_options: dict[str, Any] | None,
           dtype: str | None = None, lmprobe_compat: bool | None = None) -> None:
    run.remove_stale_staging()
    first = open_dataset(run.part(0)).info
    dtype = dtype or first.dtype
    # one part open at a time: a run may have thousands
    rows = sum(open_dataset(run.part(s)).info.num_prompts for s in range(n_shards))
    link = link_rule((open_dataset(run.part(s)) for s in range(n_shards)), dtype) is None
    with DatasetWriter(run.out, model=first.model, revision=first.revision, layers=list(first.layers),
                       dim=first.dim, dtype=dtype, pooling=list(first.views),
                       logits_k=first.logits_k, extraction=first.extraction, overwrite=True,
                       num_rows=rows, storage_options=storage_options,
                       lmprobe_compat=lmprobe_compat) as w:
        for s in range(n_shards):
            ds = open_dataset(run.part(s))
            part = _part_rows(ds, linked=link)
            if link:
                part["token_shards"] = _token_shards(ds, run.part(s))
            w.add(**part)
