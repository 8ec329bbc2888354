"""Extraction: any transformers model → a v2 dataset, sharded, resumable, length-batched.

Needs the ``extract`` extra: ``pip install "actstore[extract]"``.

``actstore.extract`` is the function :func:`extract` of this package (``actstore.extraction``).

Modules: :mod:`.models` (loading, blocks), :mod:`.layers` (layer specs), :mod:`.runconfig`
(the one run configuration, checked once), :mod:`.capture` (hooks, early stop),
:mod:`.pooling`, :mod:`.forward` (length-grouped batches, logits), :mod:`.generate`,
:mod:`.inputs`, :mod:`.cached` (``cache=``), :mod:`.warmup` (fill the activation cache),
:mod:`.runner` (shards, workers, resume), :mod:`.layout` (where parts live), :mod:`.merge`.

Layer ``i`` is the output of block ``i`` (lmprobe's numbering; the last block's output is
taken before any final norm); ``"embeddings"`` asks for the embedding output, stored as
layer ``-1``; ``-1`` itself is the deepest block (:mod:`actstore.format.layersel`).

Several workers: each process gets its rank from ``RANK``/``WORLD_SIZE`` (torchrun,
accelerate), ``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT`` (a SLURM array),
``SLURM_PROCID``/``SLURM_NTASKS`` (``srun --ntasks``) or ``rank=``/``world_size=``, takes
shards ``rank, rank + world_size, ...``, and loads the model onto ``cuda:$LOCAL_RANK``.
Workers return None; ``merge(out)`` writes the dataset once all are done. The parts must
be visible to the merging process (a shared filesystem for multi-node runs).

Examples
--------
>>> ds = actstore.extract("gpt2", ["a prompt", "another"], out="acts/gpt2",
...                       layers=[4, 8, -1], pooling=["last_token", "mean"])   # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError, require

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

require("torch", "extract")
require("transformers", "extract")

from ..cache import UnifiedCache  # noqa: E402
from ..format.layersel import LayerSpec  # noqa: E402
from ..format.reader import Dataset  # noqa: E402
from ..format.spec import RESERVED_COLUMNS  # noqa: E402
from .cached import as_cache  # noqa: E402
from .forward import model_max_length  # noqa: E402
from .generate import GENERATE_COLUMNS  # noqa: E402
from .inputs import PromptSet, apply_template, read_prompts  # noqa: E402
from .layers import resolve_model_layers  # noqa: E402
from .layout import RunDir  # noqa: E402
from .merge import merge  # noqa: E402
from .models import LoadedModel, as_loaded, load_model, public_name  # noqa: E402
from .runconfig import RunConfig, fingerprint  # noqa: E402
from .runner import (  # noqa: E402
    check_writable,
    precheck_config,
    resumed_prompts,
    run_shards,
    start_over,
    worker_from_env,
)
from .warmup import warmup  # noqa: E402

__all__ = ["LoadedModel", "RunConfig", "extract", "load_model", "merge", "read_prompts",
           "resolve_model_layers", "warmup"]


def extract(
    model: str | os.PathLike[str] | LoadedModel | PreTrainedModel,
    prompts: Sequence[str] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    layers: LayerSpec = "all",
    pooling: str | Sequence[str] = "last_token",
    dtype: str = "float32",
    labels: Sequence[Any] | None = None,
    metadata: dict[str, Sequence[Any]] | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    text_column: str = "text",
    label_column: str | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    template: str | None = None,
    chat_template: bool = False,
    logits_k: int | None = None,
    perplexity: bool = False,
    generate: dict[str, Any] | None = None,
    revision: str | None = None,
    device: str = "auto",
    model_dtype: str | torch.dtype = "auto",
    trust_remote_code: bool = False,
    shard_size: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    cache: UnifiedCache | str | os.PathLike[str] | bool | None = None,
    work_dir: str | None = None,
    storage_options: dict[str, Any] | None = None,
    model_name: str | None = None,
    overwrite: bool = False,
    lmprobe_compat: bool | None = None,
) -> Dataset | None:
    """Extract hidden states of ``prompts`` from ``model`` into a v2 dataset at ``out``.

    Parameters
    ----------
    model : str, PreTrainedModel or LoadedModel
        A name/path (loaded with ``trust_remote_code`` off unless asked, ``revision``
        recorded), or a loaded model (pass its ``tokenizer``).
    prompts : list of str or path
        A list, or a ``.txt`` (one prompt per line), ``.jsonl``, ``.csv`` or ``.parquet``
        file; ``text_column``/``label_column`` pick columns and the rest become metadata.
    layers : int, list, "all", "middle", "last"
        Block outputs to keep (negatives from the deepest block; ``"middle"`` is one block,
        ``(n - 1) // 2``; ``"embeddings"`` = embedding output).
    pooling : str or list
        ``last_token``, ``first_token``, ``mean``, ``all`` (full sequence); several become views.
        ``all`` writes the compact token layout at scale (spec section 5b, see
        ``lmprobe_compat``) and the token masks (section 5c): each row's ``prompt_tokens``
        and whether its token 0 is a tokenizer-added special token (BOS/CLS).
    dtype : {"float32", "float16", "bfloat16", "int8", "fp8_e4m3"}
        Storage dtype. ``"int8"``/``"fp8_e4m3"`` are lossy one-byte codecs with per-channel
        scales and offsets (spec section 2b); parts are kept as float32 and encoded once, at the merge.
    max_length : int, optional
        Truncate longer prompts; each truncated row is flagged in the ``truncated`` column.
    logits_k : int, optional
        Store the top-k logits at the last token (computed on the device).
    perplexity : bool
        Store each prompt's perplexity in a ``perplexity`` column (computed on the device).
    generate : dict, optional
        Generate first (``max_new_tokens``, ``num_return_sequences``, ``do_sample``,
        ``top_p``, ``top_k``, ``temperature``, ``seed``), then store views over the prompt
        tokens and ``generated_<pooling>`` views over the generated tokens, one row per
        continuation (see :mod:`actstore.extraction.generate`). With ``pooling="all"`` each
        row holds the prompt's tokens then the continuation's; ``prompt_tokens`` (a token
        mask) says where the continuation starts.
    shard_size : int, optional
        Prompts per shard: the unit of resumption, of distribution across workers, and of
        memory (one shard's results, plus one being written, are held in host memory:
        about ``2 * shard_size * len(layers) * dim * 4`` bytes per pooled view, times the
        tokens per prompt for ``"all"``). Default 1024, or 64 with ``pooling="all"``.
    rank, world_size : int, optional
        This worker's share; read from torchrun/SLURM variables when not given.
    cache : UnifiedCache, str or True, optional
        Compute only prompts whose pooled vectors the activation cache lacks, and add the
        new ones (True = the default cache, a string = its location). Pooled views only.
    work_dir : str, optional
        Where the per-shard parts live until the merge: default ``<out>/_parts`` for a
        local ``out``, ``<cache dir>/extract-runs/<hash>`` for a URL (``s3://...``).
    storage_options : dict, optional
        fsspec options for a remote ``out``.
    model_name : str, optional
        The model's name in the metadata and on a pushed card (default: the Hub id, or for
        a local folder the ``_name_or_path`` its ``config.json`` records, else the folder's
        name; a local path is never recorded).
    overwrite : bool
        Start over: delete the parts of an earlier run into ``out`` and a dataset already
        there (default: resume an earlier run with the same settings, refuse other settings).
    lmprobe_compat : bool, optional
        ``pooling="all"`` only: also write lmprobe's per-token index lists so lmprobe 0.10.3
        reads the dataset (True), compact only (False), or by size (None: the lists up to
        2**20 tokens; spec section 5b). A multi-worker run passes it to ``merge`` as well.

    Returns
    -------
    Dataset or None
        The merged dataset, or None for a worker of a multi-worker run (run ``merge`` once
        every worker is done).

    Examples
    --------
    >>> import actstore
    >>> ds = actstore.extract("gpt2", ["The cat sat.", "Dogs bark."], out="acts/gpt2",  # doctest: +SKIP
    ...                       layers=[4, 8], pooling=["last_token", "mean"])
    >>> ds.layer(8).shape                                                            # doctest: +SKIP
    (2, 768)

    Notes
    -----
    Inputs, columns, the output folder and the settings are checked before the model
    loads; a rerun that resumes says how many prompts are already done.
    """
    cfg = RunConfig.create(pooling=pooling, dtype=dtype, batch_size=batch_size,
                           max_length=max_length, shard_size=shard_size, logits_k=logits_k,
                           perplexity=perplexity, template=template, chat_template=chat_template)
    ps = _prompt_set(prompts, text_column, label_column, labels, metadata)
    _check_columns(ps, prompts, label_column, templated=template is not None or chat_template,
                   perplexity=perplexity, generating=generate is not None)
    if template is not None:
        apply_template([], template, None, False)  # refuse a template without {prompt} now
    if lmprobe_compat is not None and not isinstance(lmprobe_compat, bool):
        raise InvalidArgumentError(f"lmprobe_compat must be True, False or None; got {lmprobe_compat!r}.")
    rank, world_size = worker_from_env(rank, world_size)
    run = RunDir(os.fspath(out), work_dir, storage_options)
    if overwrite and world_size > 1:
        raise InvalidArgumentError(
            "overwrite=True (--overwrite) with several workers would delete each other's "
            f"parts; delete {run.parts!r} (and any dataset at {run.out!r}) once, then start "
            "the workers without it."
        )
    cfg = cfg.with_prompts(
        len(ps.texts),
        None if chat_template else fingerprint(_templated(ps, template, None, False)),
        public_name(os.fspath(model), model_name) if isinstance(model, (str, os.PathLike)) else None,
    )
    # before the model loads: a mistake costs seconds, not hours
    if overwrite:
        check_writable(run)
    else:
        precheck_config(run, cfg.known(), world_size)
    lm = as_loaded(model, tokenizer, revision=revision, device=device, dtype=model_dtype,
                   trust_remote_code=trust_remote_code,
                   with_lm_head=bool(logits_k or perplexity or generate), model_name=model_name,
                   progress=progress)
    _check_model(lm, max_length, need_head=bool(logits_k or perplexity))
    if overwrite:
        start_over(run)  # only once the model is loaded: a typo must not cost the old dataset
    if template is not None or chat_template:
        ps = _templated(ps, template, lm.tokenizer, chat_template)
    cfg = cfg.bind(lm, layers, generate, ps)
    done, mine = resumed_prompts(run, len(ps.texts), cfg.shard_size, rank, world_size)
    if done and progress:
        print(f"actstore extract: resuming: {done} of {mine} prompts done", file=sys.stderr,
              flush=True)
    bar = _progress(mine, done, rank, world_size, progress)
    try:
        run_shards(lm, ps, run, cfg, rank=rank, world_size=world_size, progress=bar,
                   cache=as_cache(cache), lmprobe_compat=lmprobe_compat)
    finally:
        if bar is not None:
            bar.close()
    if world_size > 1:
        return None
    return merge(os.fspath(out), work_dir=work_dir, storage_options=storage_options,
                 lmprobe_compat=lmprobe_compat)


def _templated(ps: PromptSet, template: str | None, tokenizer: Any, chat: bool) -> PromptSet:
    """``ps`` with the template applied; the index holds what the model saw, the prompt as
    given stays as the ``prompt`` column."""
    if template is None and not chat:
        return ps
    texts = apply_template(list(ps.texts), template, tokenizer, chat)
    return PromptSet(texts, ps.labels, {"prompt": list(ps.texts), **ps.metadata}, list(ps.texts))


def _check_columns(ps: PromptSet, source: Any, label_column: str | None, *, templated: bool,
                   perplexity: bool, generating: bool) -> None:
    """Refuse metadata columns that the index or the run itself would write, before any prompt runs."""
    taken = dict.fromkeys(RESERVED_COLUMNS, "a reserved index column")
    taken["truncated"] = "the column extract writes for truncated prompts"
    if templated:
        taken["prompt"] = "the column that keeps each prompt as given when a template is used"
    if perplexity:
        taken["perplexity"] = "the perplexity column"
    if generating:
        taken.update(dict.fromkeys(GENERATE_COLUMNS, "a column that generation writes"))
    where = f"{os.fspath(source)}" if isinstance(source, (str, os.PathLike)) else "metadata"
    for name in ps.metadata:
        if name not in taken:
            continue
        if name == "label" and label_column is None and ps.labels is None:
            fix = ("pass --label-column label (label_column='label') to store it as the labels, "
                   "or rename the column") if where != "metadata" else \
                "pass the labels as labels= instead (the index keeps them in its 'label' column)"
            raise InvalidArgumentError(
                f"{where} has a column 'label' but no label column was chosen; {fix}."
            )
        raise InvalidArgumentError(
            f"{where} has a column {name!r}, which clashes with {taken[name]}; rename that "
            "column in the input."
        )


def _prompt_set(prompts: Any, text_column: str, label_column: str | None, labels: Any,
                metadata: dict[str, Sequence[Any]] | None) -> PromptSet:
    ps = read_prompts(prompts, text_column=text_column, label_column=label_column, labels=labels)
    for name, values in (metadata or {}).items():
        if len(values) != len(ps.texts):
            raise InvalidArgumentError(
                f"metadata column {name!r} has {len(values)} values but there are {len(ps.texts)} prompts."
            )
        ps.metadata[name] = list(values)
    return ps


def _check_model(lm: LoadedModel, max_length: int | None, *, need_head: bool) -> None:
    if need_head and not (lm.causal and lm.model.get_output_embeddings() is not None):
        raise InvalidArgumentError(
            f"logits_k / perplexity need a causal LM with its LM head; {lm.name!r} has none. "
            "Load it with AutoModelForCausalLM, or drop logits_k / perplexity."
        )
    limit = model_max_length(lm)
    if max_length is not None and limit is not None and max_length > limit:
        raise InvalidArgumentError(
            f"max_length={max_length} is longer than the model takes ({limit} tokens); pass "
            f"max_length <= {limit}."
        )


def _progress(mine: int, done: int, rank: int, world: int, enabled: bool) -> Any:
    """This worker's bar, starting at the prompts an earlier run already committed."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=mine, initial=done, unit="prompt",
                desc=f"extract[{rank}/{world}]" if world > 1 else "extract")
