"""The sharded, resumable extraction runner.

Prompts are cut into fixed shards in input order. Worker ``rank`` of ``world_size`` takes
shards ``rank, rank + world_size, ...``; each finished shard is committed on its own as a
complete part dataset under ``<out>/_parts/shard-NNNNN`` (its index is its commit point;
see :mod:`actstore.extract.layout`).
A rerun skips committed parts, so a run killed at any moment finishes, when rerun with the
same command, with the same dataset an uninterrupted run writes. ``merge`` joins the parts
in shard order into the single dataset at ``<out>`` and removes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigMismatchError, InvalidArgumentError
from ..format.codecs import float_dtype
from ..format.layersel import request
from ..format.reader import open_dataset
from ..format.writer import DatasetWriter
from .cached import cache_space, check_cacheable, run_cached_group
from .forward import GroupResult, run_group
from .generate import generated_views, run_generate_group
from .inputs import PromptSet
from .layout import RunDir
from .merge import merge
from .models import LoadedModel

__all__ = ["RunSpec", "check_writable", "fingerprint", "merge", "precheck_config", "resumed_prompts", "run_shards",
           "start_over", "worker_from_env"]

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


def fingerprint(prompts: PromptSet) -> str:
    h = hashlib.sha256()
    for t in prompts.texts:
        h.update(t.encode("utf-8") + b"\x00")
    h.update(json.dumps(prompts.labels, default=str).encode())
    return h.hexdigest()


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
            tmp = f"{run.config_path}.tmp-{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump(config, f, indent=2, sort_keys=True)
            os.replace(tmp, run.config_path)
    except OSError as exc:
        raise InvalidArgumentError(
            f"Cannot write to the output folder {run.out!r} ({exc.strerror or exc}); choose a "
            "writable folder."
        ) from None
    return False


@dataclass
class RunSpec:
    """What a run computes and stores; recorded in the metadata and compared on rerun."""

    layers: list[int]
    pooling: list[str]
    dtype: str = "float32"
    batch_size: int = 32
    max_length: int | None = None
    shard_size: int = 1024
    logits_k: int | None = None
    perplexity: bool = False
    generate: dict[str, Any] | None = None

    @property
    def views(self) -> list[str]:
        return generated_views(self.pooling) if self.generate else list(self.pooling)


def run_shards(lm: LoadedModel, prompts: PromptSet, run: RunDir, spec: RunSpec, *, rank: int = 0,
               world_size: int = 1, record: dict[str, Any] | None = None,
               progress: Any = None, cache: Any = None) -> list[int]:
    """Extract and commit every shard assigned to this worker; returns the shards done now.

    ``record`` (model, revision, template, ...) is stored with ``spec`` as the run's config.
    With ``cache`` (a UnifiedCache), only prompts it lacks are computed
    (see :mod:`actstore.extract.cached`).
    """
    if cache is not None:
        check_cacheable(spec)
        rec = record or {}
        cache = (cache, cache_space(spec.dtype, spec.max_length, rec.get("template"),
                                    bool(rec.get("chat_template"))))
    config = {**(record or {}), **asdict(spec), "prompts_sha256": fingerprint(prompts),
              "num_prompts": len(prompts.texts)}
    if _check_config(run, config, world_size):
        run.remove_parts()  # a merge that was killed while deleting the parts
        return []
    n, done = len(prompts.texts), []
    # one part is written (sha256, safetensors, index) while the next is computed; at most
    # two shards of results are in memory at once
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="actstore-part") as pool:
        pending: Future[None] | None = None
        for shard in range(rank, -(-n // spec.shard_size), world_size):
            lo, hi = shard * spec.shard_size, min(n, (shard + 1) * spec.shard_size)
            if run.part_done(shard):
                continue  # counted in the bar's start (see ``resumed_prompts``)
            res, src = _compute(lm, prompts, lo, hi, spec, _ticker(progress), cache)
            if pending is not None:
                pending.result()
            pending = pool.submit(_write_part, prompts, run.part(shard), lo, res, src, spec, config)
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


def _compute(lm: LoadedModel, prompts: PromptSet, lo: int, hi: int, spec: RunSpec,
             tick: Callable[[int, int], None] | None,
             cache: tuple[Any, dict[str, Any]] | None) -> tuple[GroupResult, list[int]]:
    """Views for prompts ``lo:hi`` and, per output row, the prompt it came from."""
    texts = prompts.texts[lo:hi]
    if cache is not None:
        res = run_cached_group(lm, texts, prompts.given[lo:hi], spec, cache[0], cache[1], tick)
        res.extra["texts"] = texts
        return res, list(range(hi - lo))
    if spec.generate:
        res = run_generate_group(lm, texts, spec.layers, spec.pooling, spec.generate, first_row=lo,
                                 batch_size=spec.batch_size, max_length=spec.max_length, on_batch=tick)
        return res, res.extra["source_rows"]
    res = run_group(lm, texts, spec.layers, spec.pooling, batch_size=spec.batch_size,
                    max_length=spec.max_length, logits_k=spec.logits_k, perplexity=spec.perplexity,
                    on_batch=tick)
    res.extra["texts"] = texts
    return res, list(range(hi - lo))


def _write_part(prompts: PromptSet, part: str, lo: int, res: GroupResult, src: list[int],
                spec: RunSpec, config: dict[str, Any]) -> None:
    """Commit one shard's rows as a complete part dataset (its index last)."""
    views = spec.views
    dim = next(iter(res.views[views[0]].values()))[0].shape[-1]
    meta = {k: [v[lo + i] for i in src] for k, v in prompts.metadata.items()}
    meta.update(res.extra.get("columns", {}))
    meta["truncated"] = res.truncated
    if res.perplexity is not None:
        meta["perplexity"] = res.perplexity
    labels = None if prompts.labels is None else [prompts.labels[lo + i] for i in src]
    if os.path.exists(part):
        shutil.rmtree(part)  # an uncommitted part from a killed run: start it again
    with DatasetWriter(part, model=config["model"], revision=config.get("revision"),
                       layers=[request(L) for L in spec.layers], dim=dim, dtype=float_dtype(spec.dtype), pooling=views,
                       logits_k=spec.logits_k, extraction={"run": config}, num_rows=len(src)) as w:
        # the writer takes the embeddings by name (the stored -1 would be refused)
        named = {p: {request(L): a for L, a in res.views[p].items()} for p in views}
        w.add(res.extra["texts"], hidden=named[views[0]],
              views={p: named[p] for p in views[1:]}, labels=labels, metadata=meta,
              num_tokens=None if views[0] == "all" else res.num_tokens, logits_topk=res.logits)
