"""``merge``: join the committed parts of a run into the one dataset at ``out``.

Parts are read back one at a time (memory is bounded by one part) and rewritten through
``DatasetWriter`` in shard order, so the merged dataset is the same whichever workers
wrote which parts, and whatever runs were killed on the way. The token masks of
full-sequence parts (spec section 5c) are carried over.

Token shards are rewritten, not linked: a part's files are sized for one part (64 prompts by
default with ``pooling="all"``), so linking them would give the merged dataset thousands of
small shards, and a codec run's parts hold float32 that the merge encodes once. A part's
tokens are read with one coalesced read per layer (``get_tokens`` of all its ids), not row by
row.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..errors import DatasetNotFoundError, InvalidArgumentError
from ..format.reader import Dataset, open_dataset
from ..format.spec import RESERVED_COLUMNS
from ..format.token_masks import mask_columns
from ..format.writer import DatasetWriter
from .layout import CONFIG, PARTS, RunDir

__all__ = ["merge"]


def _part_rows(ds: Dataset) -> dict[str, Any]:
    """Everything ``DatasetWriter.add`` needs to write a part's rows again."""
    info = ds.info
    layers = list(info.layers)  # the writer takes the embeddings by name, as info lists them
    if info.storage == "full_sequence":
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
    # one part open at a time: a run may have thousands
    rows = sum(open_dataset(run.part(s)).info.num_prompts for s in range(n_shards))
    with DatasetWriter(run.out, model=first.model, revision=first.revision, layers=list(first.layers),
                       dim=first.dim, dtype=dtype or first.dtype, pooling=list(first.views),
                       logits_k=first.logits_k, extraction=first.extraction, overwrite=True,
                       num_rows=rows, storage_options=storage_options,
                       lmprobe_compat=lmprobe_compat) as w:
        for s in range(n_shards):
            w.add(**_part_rows(open_dataset(run.part(s))))
