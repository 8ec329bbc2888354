"""``actstore extract`` and ``actstore merge``.

Under torchrun (``RANK``/``WORLD_SIZE``) or a SLURM array (``SLURM_ARRAY_TASK_ID``/
``SLURM_ARRAY_TASK_COUNT``) each process takes its own shards; run ``actstore merge DIR``
once all are done. ``--rank``/``--world-size`` set the share by hand.
"""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

from ..errors import InvalidArgumentError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``extract`` and ``merge`` to the ``actstore`` parser."""
    p = sub.add_parser("extract", help="run a transformers model over prompts into a v2 dataset")
    p.add_argument("model", help="model name on the Hub or local path")
    p.add_argument("input", help="prompts: .txt (one per line), .jsonl, .csv or .parquet")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--layers", default="all", help="e.g. 4,8,-1 | all | middle | last | embeddings,0")
    p.add_argument("--pooling", default="last_token", help="comma list of last_token, first_token, mean, all")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default=None)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="storage dtype")
    p.add_argument("--model-dtype", default="auto", help="dtype to load the model in (auto = its own)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=None, help="truncate longer prompts (flagged)")
    p.add_argument("--shard-size", type=int, default=None,
                   help="prompts per resumable shard (default 1024; 64 with --pooling all)")
    p.add_argument("--template", default=None, help='prompt template, e.g. "Q: {prompt}\\nA:"')
    p.add_argument("--chat-template", action="store_true", help="apply the tokenizer's chat template")
    p.add_argument("--logits-k", type=int, default=None, help="store top-k logits at the last token")
    p.add_argument("--perplexity", action="store_true", help="store per-prompt perplexity")
    p.add_argument("--generate", default=None, metavar="JSON",
                   help='generate first, e.g. \'{"max_new_tokens": 20, "num_return_sequences": 4}\'')
    p.add_argument("--revision", default=None, help="model revision (branch, tag or commit)")
    p.add_argument("--device", default="auto")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--rank", type=int, default=None, help="this worker (default: from the environment)")
    p.add_argument("--world-size", type=int, default=None, help="number of workers")
    p.add_argument("--work-dir", default=None,
                   help="where per-shard parts live until the merge (default: OUT/_parts)")
    p.add_argument("--model-name", default=None,
                   help="the model's name in the metadata and card (default: the Hub id, or a "
                        "local folder's recorded _name_or_path)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over: delete an earlier run's parts and any dataset at --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_extract)
    p = sub.add_parser("merge", help="join the finished shards of a multi-worker extraction")
    p.add_argument("out", help="the --out folder of the extraction")
    p.add_argument("--keep-parts", action="store_true", help="keep the per-shard parts")
    p.add_argument("--work-dir", default=None, help="the --work-dir the workers used")
    p.set_defaults(handler=_merge)


def parse_layers(text: str) -> Any:
    """``"4,8,-1"`` -> ``["4", "8", "-1"]``; ``"all"``/``"middle"``/``"last"`` stay strings."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items[0] if len(items) == 1 and items[0] in ("all", "middle", "last") else items


def _generate(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"--generate must be a JSON object; got {text!r} ({exc}).") from None
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"--generate must be a JSON object; got {text!r}.")
    return value


def _lib() -> Any:
    # the package, not ``actstore.extract`` (which may be the function of the same name)
    return importlib.import_module("actstore.extract")


def _extract(args: argparse.Namespace) -> int:
    ex = _lib()

    ds = ex.extract(
        args.model, args.input, out=args.out, layers=parse_layers(args.layers),
        pooling=[p.strip() for p in args.pooling.split(",") if p.strip()], dtype=args.dtype,
        text_column=args.text_column, label_column=args.label_column, batch_size=args.batch_size,
        max_length=args.max_length, shard_size=args.shard_size, template=args.template,
        chat_template=args.chat_template, logits_k=args.logits_k, perplexity=args.perplexity,
        generate=_generate(args.generate), revision=args.revision, device=args.device,
        model_dtype=args.model_dtype, trust_remote_code=args.trust_remote_code, rank=args.rank,
        world_size=args.world_size, work_dir=args.work_dir, progress=not args.no_progress,
        model_name=args.model_name, overwrite=args.overwrite,
    )
    print(f"wrote {len(ds)} rows to {args.out}" if ds is not None else
          f"shards done; run `actstore merge {args.out}` once every worker has finished")
    return 0


def _merge(args: argparse.Namespace) -> int:
    ex = _lib()

    ds = ex.merge(args.out, keep_parts=args.keep_parts, work_dir=args.work_dir)
    print(f"merged {len(ds)} rows into {args.out}")
    return 0
