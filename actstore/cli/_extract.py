"""``actstore extract`` and ``actstore merge``.

Under torchrun (``RANK``/``WORLD_SIZE``) or a SLURM array (``SLURM_ARRAY_TASK_ID``/
``SLURM_ARRAY_TASK_COUNT``) each process takes its own shards; run ``actstore merge DIR``
once all are done. ``--rank``/``--world-size`` set the share by hand.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ..errors import HubError, InvalidArgumentError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``extract`` and ``merge`` to the ``actstore`` parser."""
    p = sub.add_parser("extract", help="run a transformers model over prompts into a v2 dataset")
    p.add_argument("model", help="model name on the Hub or local path")
    p.add_argument("input", help="prompts: .txt (one per line), .jsonl, .csv or .parquet")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--layers", default="all", help="e.g. 4,8,-1 | all | middle | last | embeddings,0")
    p.add_argument("--pooling", default="last_token", help="comma list of last_token, first_token, mean, all")
    p.add_argument("--text-column", default="text", help="column holding the prompts (.jsonl/.csv/.parquet)")
    p.add_argument("--label-column", default=None, help="column holding the labels (default: none)")
    p.add_argument("--dtype", default="float32",
                   choices=["float32", "float16", "bfloat16", "int8", "fp8_e4m3"],
                   help="storage dtype (int8/fp8_e4m3: lossy one-byte codes with scales)")
    p.add_argument("--model-dtype", default="auto", help="dtype to load the model in (auto = its own)")
    p.add_argument("--batch-size", type=int, default=32, help="prompts per forward pass")
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
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps, or auto (a GPU if there is one)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model repo's own Python code to run")
    p.add_argument("--rank", type=int, default=None, help="this worker (default: from the environment)")
    p.add_argument("--world-size", type=int, default=None, help="number of workers")
    p.add_argument("--work-dir", default=None,
                   help="where per-shard parts live until the merge (default: OUT/_parts)")
    p.add_argument("--model-name", default=None,
                   help="the model's name in the metadata and card (default: the Hub id, or a "
                        "local folder's recorded _name_or_path)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over: delete an earlier run's parts and any dataset at --out")
    _lmprobe_compat(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from ._probe import negative_lists

    negative_lists(p)  # --layers -1,-2
    p.set_defaults(handler=_extract)
    p = sub.add_parser("merge", help="join the finished shards of a multi-worker extraction")
    p.add_argument("out", help="the --out folder of the extraction")
    p.add_argument("--keep-parts", action="store_true", help="keep the per-shard parts")
    p.add_argument("--work-dir", default=None, help="the --work-dir the workers used")
    _lmprobe_compat(p)
    p.set_defaults(handler=_merge)


def _lmprobe_compat(p: argparse.ArgumentParser) -> None:
    """``--lmprobe-compat``/``--no-lmprobe-compat``: the writer's ``lmprobe_compat``
    (True/False; neither: None, the size rule of spec section 5b)."""
    p.add_argument("--lmprobe-compat", action=argparse.BooleanOptionalAction, default=None,
                   help="--pooling all: also write lmprobe 0.10.3's per-token index lists so "
                        "lmprobe reads the dataset (--no-lmprobe-compat: compact only; default: "
                        "the lists up to 2**20 tokens). A multi-worker run passes it to merge")


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


# -- errors a newcomer hits before anything runs (one line each, with the fix) ---------------

def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes/contexts, outermost first."""
    found: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and all(cur is not e for e in found):
        found.append(cur)
        cur = cur.__cause__ or cur.__context__
    return found


def check_device(device: str) -> None:
    """Refuse ``--device cuda``/``mps`` that this torch cannot use (before loading anything)."""
    kind = device.split(":", 1)[0]
    if kind not in ("cuda", "mps"):
        return
    import torch

    if kind == "cuda" and not torch.cuda.is_available():
        why = ("this torch is a CPU-only build" if torch.version.cuda is None
               else "torch sees no CUDA device")
        raise InvalidArgumentError(
            f"--device {device}: {why} (torch {torch.__version__}); use --device cpu (or auto), "
            "or install a CUDA build of torch on a machine with a GPU."
        )
    if kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InvalidArgumentError(f"--device {device}: MPS is not available here; use --device cpu.")


def _looks_local(model: str) -> bool:
    """A path, not a Hub id (``name`` or ``org/name``)."""
    return model.startswith((".", "/", "~")) or os.path.exists(model) or model.count("/") > 1


def check_model(model: str, revision: str | None = None, trust_remote_code: bool = False) -> None:
    """Refuse a model argument that is neither a model folder nor a model on the Hub.

    A local path must be a folder holding ``config.json``; a Hub id's config is fetched (it is
    cached, so the model load that follows does not fetch it again).
    """
    if _looks_local(model):
        path = os.path.expanduser(model)
        if not os.path.exists(path):
            raise InvalidArgumentError(
                f"No model folder at {model!r}; give an existing folder holding config.json and "
                "the weights, or a Hub model id such as sentence-transformers/all-MiniLM-L6-v2."
            )
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise InvalidArgumentError(
                f"{model!r} is not a model folder: it has no config.json; point at the folder "
                "that holds config.json and the weights (what save_pretrained writes)."
            )
    else:
        _check_hub_reachable(model, revision)
    import transformers

    try:
        transformers.AutoConfig.from_pretrained(model, revision=revision,
                                                trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _model_error(exc, model, revision) from exc


HUB_PROBE_TIMEOUT = 5.0  # seconds for the one metadata request that tells if the Hub answers


def _check_hub_reachable(model: str, revision: str | None) -> None:
    """Ask the Hub once, without retries, for ``model``'s config; fail fast if it is unreachable.

    huggingface_hub retries a refused connection five times with backoff (about 20 s of
    "Retrying in ..." lines) before transformers gives up. One short request without
    retries decides instead: if the Hub does not answer and the model is in the local cache,
    the rest of this process runs offline on that copy (one notice line); if it is not
    cached, a one-line :class:`~actstore.errors.HubError`. A Hub that answers (even with a
    404) leaves everything to transformers, whose errors :func:`_model_error` words.
    """
    import sys

    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    endpoint = constants.ENDPOINT
    cached = try_to_load_from_cache(model, "config.json", revision=revision)
    if constants.HF_HUB_OFFLINE:
        if not isinstance(cached, str):
            raise HubError(
                f"HF_HUB_OFFLINE is set and the model {model!r} is not in the local cache "
                f"({constants.HF_HUB_CACHE}); unset HF_HUB_OFFLINE to download it, or use a "
                "local model folder."
            )
        return
    try:
        get_hf_file_metadata(hf_hub_url(model, "config.json", revision=revision),
                             timeout=HUB_PROBE_TIMEOUT, retry_on_errors=False)
    except Exception as exc:  # noqa: BLE001 - only a network failure changes what happens next
        if not _unreachable(exc):
            return
        if isinstance(cached, str):
            print(f"the Hub ({endpoint}) is unreachable; using the cached copy of {model!r} "
                  "(offline)", file=sys.stderr)
            constants.HF_HUB_OFFLINE = True  # no retries for the files that follow
            return
        raise HubError(
            f"Could not reach the Hub ({endpoint}) to load {model!r}, and it is not in the local "
            "cache; check your network (or HF_ENDPOINT), or use a local model folder."
        ) from None


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or its causes) is a failure to connect rather than an answer."""
    names = {type(e).__name__ for e in _chain(exc)}
    return bool(names & {"ConnectError", "ConnectionError", "ConnectTimeout", "ReadTimeout",
                         "TimeoutException", "ConnectionRefusedError", "TimeoutError",
                         "OfflineModeIsEnabled"}) or any(
        isinstance(e, (ConnectionError, TimeoutError)) for e in _chain(exc))


def _model_error(exc: BaseException, model: str, revision: str | None) -> Exception:
    names = {type(e).__name__ for e in _chain(exc)}
    text = " ".join(str(e) for e in _chain(exc))
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if "RevisionNotFoundError" in names or "is not a valid git identifier" in text:
        return InvalidArgumentError(
            f"Model {model!r} has no revision {revision!r}; pass a branch, tag or commit it has."
        )
    statuses = {getattr(getattr(e, "response", None), "status_code", None) for e in _chain(exc)}
    if "RepositoryNotFoundError" in names or "not a valid model identifier" in text or 404 in statuses:
        return InvalidArgumentError(
            f"Model {model!r} is not a local folder and was not found on the Hub ({endpoint}); "
            "check the name, or log in (hf auth login / HF_TOKEN) if it is private or gated."
        )
    if "GatedRepoError" in names:
        return InvalidArgumentError(
            f"Model {model!r} is gated; accept its terms on the Hub and log in (HF_TOKEN)."
        )
    if "trust_remote_code" in text:
        return InvalidArgumentError(
            f"Model {model!r} ships its own Python code; rerun with --trust-remote-code if you "
            "trust its repo."
        )
    if "Unrecognized model" in text or "model_type" in text:
        return InvalidArgumentError(
            f"{model!r} is not a transformers model: its config.json has no known model_type."
        )
    if "couldn't connect" in text.lower() or names & {"ConnectError", "ConnectionError",
                                                       "LocalEntryNotFoundError", "ConnectTimeout"}:
        return HubError(
            f"Could not reach the Hub ({endpoint}) to load {model!r}, and it is not in the local "
            "cache; check your network, or use a local model folder."
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InvalidArgumentError(f"Could not load the model {model!r}: {first}")


def _extract(args: argparse.Namespace) -> int:
    check_device(args.device)
    check_model(args.model, args.revision, args.trust_remote_code)
    from ..extraction import extract  # loads torch and transformers: only when run

    ds = extract(
        args.model, args.input, out=args.out, layers=parse_layers(args.layers),
        pooling=[p.strip() for p in args.pooling.split(",") if p.strip()], dtype=args.dtype,
        text_column=args.text_column, label_column=args.label_column, batch_size=args.batch_size,
        max_length=args.max_length, shard_size=args.shard_size, template=args.template,
        chat_template=args.chat_template, logits_k=args.logits_k, perplexity=args.perplexity,
        generate=_generate(args.generate), revision=args.revision, device=args.device,
        model_dtype=args.model_dtype, trust_remote_code=args.trust_remote_code, rank=args.rank,
        world_size=args.world_size, work_dir=args.work_dir, progress=not args.no_progress,
        model_name=args.model_name, overwrite=args.overwrite, lmprobe_compat=args.lmprobe_compat,
    )
    print(f"wrote {len(ds)} rows to {args.out}" if ds is not None else
          f"shards done; run `actstore merge {args.out}` once every worker has finished")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from ..extraction import merge

    ds = merge(args.out, keep_parts=args.keep_parts, work_dir=args.work_dir,
               lmprobe_compat=args.lmprobe_compat)
    print(f"merged {len(ds)} rows into {args.out}")
    return 0
