"""The sharded, resumable extraction runner.

Prompts are cut into fixed shards in input order. Worker ``rank`` of ``world_size`` takes
shards ``rank, rank + world_size, ...``; each finished shard is committed on its own as a
complete part dataset under ``<out>/_parts/shard-NNNNN`` (its index is its commit point;
see :mod:`actstore.extraction.layout`).
A rerun skips committed parts, so a run killed at any moment finishes, when rerun with the
same command, with the same dataset an uninterrupted run writes. ``merge`` joins the parts
in shard order into the single dataset at ``<out>`` and removes them. One worker with one
shard writes the dataset at ``<out>`` directly (the part would be all of it; the merge would
only read it back and write it again).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..cache import UnifiedCache
from ..errors import ConfigMismatchError, InvalidArgumentError
from ..format.codecs import float_dtype
from ..format.durable import atomic_file
from ..format.layersel import request
from ..format.reader import open_dataset
from ..format.writer import DatasetWriter
from .cached import run_cached_group
from .forward import GroupResult, run_group
from .generate import run_generate_group
from .inputs import PromptSet
from .layout import RunDir
from .merge import merge
from .models import LoadedModel
from .runconfig import RunConfig, fingerprint

__all__ = ["RunConfig", "check_writable", "fingerprint", "merge", "precheck_config", "resumed_prompts",
           "run_shards", "start_over", "worker_from_env"]

def worker_from_env(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Rank and world size: arguments, else torchrun/accelerate, a SLURM array, or srun tasks.

    Examples
    --------
    >>> worker_from_env(1, 4)
    (1, 4)
    """
    if rank is None and world_size is None:
        rank, world_size = _env_worker(os.environ)
    rank, world_size = int(rank or 0), int(world_size or 1)
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidArgumentError(
            f"rank must be in [0, world_size); got rank={rank}, world_size={world_size}. Pass "
            "both --rank and --world-size, or neither."
        )
    return rank, world_size


def _env_worker(env: Any) -> tuple[int, int]:
    if "WORLD_SIZE" in env and "RANK" in env:  # torchrun, accelerate, deepspeed
        return int(env["RANK"]), int(env["WORLD_SIZE"])
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        # array ids may start anywhere (--array=5-8); shards are numbered from 0
        lo = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return int(env["SLURM_ARRAY_TASK_ID"]) - lo, int(env["SLURM_ARRAY_TASK_COUNT"])
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:  # srun --ntasks N
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
    return 0, 1


def _recorded_config(run: RunDir, world_size: int = 1) -> dict[str, Any] | None:
    """The configuration of an earlier run into ``out`` (parts first, else the merged dataset).

    A single-worker run that committed no shard left nothing to resume (it failed on its
    first shard, say): its configuration does not bind the corrected rerun. With several
    workers it does, since another worker may be computing under it right now.
    """
    if os.path.exists(run.config_path) and world_size == 1 and not run.any_part_done():
        return None
    if os.path.exists(run.config_path):
        with open(run.config_path) as f:
            return dict(json.load(f))
    if run.final_exists():
        ds = open_dataset(run.out, storage_options=run.storage_options)
        return dict(ds.info.extraction.get("run") or {})
    return None


def _mismatch(run: RunDir, old: dict[str, Any], config: dict[str, Any], keys: Any) -> ConfigMismatchError:
    diff = sorted(k for k in keys if old.get(k) != config.get(k))
    details = "; ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in diff[:6])
    where = f"the parts in {run.parts!r}" if os.path.exists(run.config_path) else \
        f"the dataset at {run.out!r}"
    return ConfigMismatchError(
        f"{run.out!r} holds an extraction with a different configuration ({details}). Rerun "
        "with the original settings to resume, choose a new output folder, or start over with "
        f"--overwrite (overwrite=True), which deletes {where}."
    )


def precheck_config(run: RunDir, partial: dict[str, Any], world_size: int = 1) -> None:
    """Refuse early (before the model loads) a rerun whose known settings differ.

    ``partial`` holds the configuration entries that are known without the model; the full
    comparison still happens in :func:`run_shards`.
    """
    old = _recorded_config(run, world_size)
    if old is not None and any(old.get(k) != v for k, v in partial.items()):
        raise _mismatch(run, old, partial, partial)
    check_writable(run)


def check_writable(run: RunDir) -> None:
    """Create the parts folder, or say the output folder cannot be written."""
    try:
        os.makedirs(run.parts, exist_ok=True)
    except OSError as exc:
        raise InvalidArgumentError(
            f"Cannot write to the output folder {run.out!r} ({exc.strerror or exc}); choose a "
            "writable folder."
        ) from None


def start_over(run: RunDir) -> None:
    """``overwrite=True``: delete the parts and a merged dataset at ``out`` (its index first)."""
    if run.final_exists():
        if run.local_out is not None:
            os.remove(os.path.join(run.local_out, "index", "train-00000-of-00001.parquet"))
            for sub in ("index", "tensors"):
                shutil.rmtree(os.path.join(run.local_out, sub), ignore_errors=True)
        else:
            import fsspec

            fs, root = fsspec.core.url_to_fs(run.out, **(run.storage_options or {}))
            root = root.rstrip("/")
            fs.rm(f"{root}/index/train-00000-of-00001.parquet")
            if fs.exists(f"{root}/tensors"):
                fs.rm(f"{root}/tensors", recursive=True)
    run.remove_parts()


def resumed_prompts(run: RunDir, n: int, shard_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """(prompts already committed, prompts this worker owns) for a rerun into ``run``."""
    done = mine = 0
    for shard in range(rank, -(-n // shard_size), world_size):
        rows = min(n, (shard + 1) * shard_size) - shard * shard_size
        mine += rows
        if run.part_done(shard):
            done += rows
    return done, mine


def _check_config(run: RunDir, config: dict[str, Any], world_size: int = 1) -> bool:
    """Refuse a rerun whose configuration differs; True when ``out`` is already merged.

    The configuration is recorded before any shard is written, so every worker of a run
    (and every rerun) is compared with the first one.
    """
    old = _recorded_config(run, world_size)
    if old is not None and old != config:
        raise _mismatch(run, old, config, set(old) | set(config))
    if run.final_exists():
        return True
    check_writable(run)
    try:
        if old is None:
            with atomic_file(run.config_path, "w") as f:
                json.dump(config, f, indent=2, sort_keys=True)
    except OSError as exc:
        raise InvalidArgumentError(
            f"Cannot write to the output folder {run.out!r} ({exc.strerror or exc}); choose a "
            "writable folder."
        ) from None
    return False


def run_shards(lm: LoadedModel, prompts: PromptSet, run: RunDir, cfg: RunConfig, *, rank: int = 0,
               world_size: int = 1, progress: Any = None,
               cache: UnifiedCache | None = None, lmprobe_compat: bool | None = None) -> list[int]:
    """Extract and commit every shard assigned to this worker; returns the shards done now.

    ``cfg`` (bound to the model: :meth:`RunConfig.bind`) is recorded as the run's
    configuration. With ``cache``, only prompts it lacks are computed
    (see :mod:`actstore.extraction.cached`). ``lmprobe_compat`` is the full-sequence layout
    rule of the dataset written at ``out`` (``DatasetWriter``; parts are always compact).
    """
    if cache is not None:
        cfg.check_cacheable()
    config = cfg.record()
    if _check_config(run, config, world_size):
        run.remove_parts()  # a merge that was killed while deleting the parts
        return []
    n, done = len(prompts.texts), []
    shards = range(rank, -(-n // cfg.shard_size), world_size)
    if world_size == 1 and len(shards) == 1 and not run.part_done(0):
        # one worker, one shard: the part would be the whole dataset, so it is written at
        # ``out`` at once (its index is the commit point there too) instead of as a part
        # that the merge reads back and writes again; a rerun after a kill recomputes the
        # one shard either way
        run.remove_stale_staging()
        res = _compute(lm, prompts, 0, n, cfg, _ticker(progress), cache)
        # overwrite=True as the merge writes: no dataset is there (checked above); tensor
        # files a killed earlier write left behind are removed at the commit
        _write_rows(prompts, run.out, 0, res, cfg, storage_options=run.storage_options,
                    overwrite=True, lmprobe_compat=lmprobe_compat)
        return [0]
    # one part is written (sha256, safetensors, index) while the next is computed; at most
    # two shards of results are in memory at once
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="actstore-part") as pool:
        pending: Future[None] | None = None
        for shard in shards:
            lo, hi = shard * cfg.shard_size, min(n, (shard + 1) * cfg.shard_size)
            if run.part_done(shard):
                continue  # counted in the bar's start (see ``resumed_prompts``)
            res = _compute(lm, prompts, lo, hi, cfg, _ticker(progress), cache)
            if pending is not None:
                pending.result()
            pending = pool.submit(_write_part, prompts, run.part(shard), lo, res, cfg)
            done.append(shard)
        if pending is not None:
            pending.result()
    return done


def _ticker(progress: Any) -> Callable[[int, int], None] | None:
    if progress is None:
        return None

    def tick(rows: int, tokens: int) -> None:
        progress.update(rows)
        progress.tokens = getattr(progress, "tokens", 0) + tokens
        elapsed = max(progress.format_dict.get("elapsed", 0) or 0, 1e-9)
        progress.set_postfix({"tok/s": f"{progress.tokens / elapsed:.0f}"}, refresh=False)

    return tick


def _compute(lm: LoadedModel, prompts: PromptSet, lo: int, hi: int, cfg: RunConfig,
             tick: Callable[[int, int], None] | None, cache: UnifiedCache | None) -> GroupResult:
    """The rows of prompts ``lo:hi`` (each names the prompt it came from: ``source_rows``)."""
    texts = prompts.texts[lo:hi]
    if cache is not None:
        return run_cached_group(lm, texts, prompts.given[lo:hi], cfg, cache, tick)
    if cfg.generate:
        return run_generate_group(lm, texts, cfg.stored_layers, list(cfg.pooling), dict(cfg.generate),
                                  first_row=lo, batch_size=cfg.batch_size,
                                  max_length=cfg.max_length, on_batch=tick)
    return run_group(lm, texts, cfg.stored_layers, list(cfg.pooling), batch_size=cfg.batch_size,
                     max_length=cfg.max_length, logits_k=cfg.logits_k, perplexity=cfg.perplexity,
                     on_batch=tick)


def _write_part(prompts: PromptSet, part: str, lo: int, res: GroupResult, cfg: RunConfig) -> None:
    """Commit one shard's rows as a complete part dataset (its index last)."""
    if os.path.exists(part):
        shutil.rmtree(part)  # an uncommitted part from a killed run: start it again
    _write_rows(prompts, part, lo, res, cfg, as_part=True)


def _write_rows(prompts: PromptSet, where: str, lo: int, res: GroupResult, cfg: RunConfig, *,
                storage_options: dict[str, Any] | None = None, overwrite: bool = False,
                as_part: bool = False, lmprobe_compat: bool | None = None) -> None:
    """Write ``res`` (the rows of prompts from ``lo`` on) as a dataset at ``where``; a part
    keeps a codec run's rows as float32 (the merge encodes them once)."""
    views = cfg.views
    src = res.source_rows
    dim = next(iter(res.views[views[0]].values()))[0].shape[-1]
    meta = {k: [v[lo + i] for i in src] for k, v in prompts.metadata.items()}
    meta.update(res.columns)
    meta["truncated"] = res.truncated
    if res.perplexity is not None:
        meta["perplexity"] = res.perplexity
    labels = None if prompts.labels is None else [prompts.labels[lo + i] for i in src]
    with DatasetWriter(where, model=cfg.model, revision=cfg.revision,
                       layers=[request(L) for L in cfg.stored_layers], dim=dim,
                       dtype=float_dtype(cfg.dtype) if as_part else cfg.dtype,
                       pooling=views, logits_k=cfg.logits_k, extraction={"run": cfg.record()},
                       num_rows=len(src), storage_options=storage_options, overwrite=overwrite,
                       lmprobe_compat=False if as_part and views[0] == "all" else lmprobe_compat) as w:
        # the writer takes the embeddings by name (the stored -1 would be refused)
        named = {p: {request(L): a for L, a in res.views[p].items()} for p in views}
        w.add(res.texts, hidden=named[views[0]],
              views={p: named[p] for p in views[1:]}, labels=labels, metadata=meta,
              num_tokens=None if views[0] == "all" else res.num_tokens, logits_topk=res.logits,
              **res.masks)
