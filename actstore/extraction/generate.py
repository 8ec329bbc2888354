"""The aligned-probing workflow: generate continuations, then store how the model encodes
the prompt and what it generated.

Each prompt gives ``num_return_sequences`` rows, in input order (prompt 0's samples, then
prompt 1's, ...). A row's ``text`` is prompt + continuation (what the model processed);
the ``prompt``, ``continuation``, ``prompt_index`` and ``sample`` columns say which is which.
For each requested pooling ``p`` the row holds view ``p`` over the prompt tokens and view
``generated_<p>`` over the generated tokens (up to and including the first EOS), both taken
from one forward pass over the whole sequence.

With ``"all"`` among the poolings the primary view holds every token of the row, the
prompt's then the continuation's, and the token masks (spec section 5c: ``prompt_tokens``)
say where the continuation starts; there is no ``generated_all`` view.

Sampling is seeded per shard (``seed`` + the shard's first prompt index), so a shard that is
rerun after a crash draws the same continuations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .capture import capture
from .forward import GroupResult, check_lengths, special_first, tokenize
from .models import LoadedModel
from .pooling import pool

__all__ = ["GENERATE_COLUMNS", "GENERATE_KEYS", "check_generate", "generated_views", "run_generate_group"]

# the columns a generating run adds to the index, in this order
GENERATE_COLUMNS = ("prompt_index", "sample", "continuation", "prompt_tokens", "generated_tokens")

GENERATE_KEYS = ("max_new_tokens", "num_return_sequences", "do_sample", "top_p", "top_k",
                 "temperature", "seed")


def check_generate(options: dict[str, Any], poolings: list[str], lm: LoadedModel) -> dict[str, Any]:
    """Validated generation options with defaults filled in (what the metadata records)."""
    unknown = sorted(set(options) - set(GENERATE_KEYS))
    if unknown:
        raise InvalidArgumentError(
            f"Unknown generate option(s) {unknown}; expected some of {', '.join(GENERATE_KEYS)}."
        )
    if not lm.causal:
        raise InvalidArgumentError(f"generate= needs a causal LM; {lm.name!r} is an encoder.")
    opts = {"max_new_tokens": 20, "num_return_sequences": 1, "do_sample": False, "seed": 0, **options}
    for key in ("max_new_tokens", "num_return_sequences"):
        if not isinstance(opts[key], int) or opts[key] < 1:
            raise InvalidArgumentError(f"generate[{key!r}] must be a positive integer; got {opts[key]!r}.")
    return opts


def generated_views(poolings: list[str]) -> list[str]:
    """View names of a generation run: prompt views first (the primary view), then generated.

    ``"all"`` (full sequences, prompt then continuation) has no ``generated_all``: its token
    masks (spec section 5c) say which tokens are which.
    """
    return list(poolings) + [f"generated_{p}" for p in poolings if p != "all"]


def _generate(lm: LoadedModel, prompt_ids: list[list[int]], opts: dict[str, Any]) -> tuple[Any, Any, int]:
    """Left-padded prompts + continuations, their mask, and the prompt width."""
    import torch

    tok = lm.tokenizer
    side, tok.padding_side = tok.padding_side, "left"  # generation appends on the right
    try:
        batch = tok.pad({"input_ids": prompt_ids}, return_tensors="pt", padding=True)
    finally:
        tok.padding_side = side
    ids, mask = batch["input_ids"].to(lm.device), batch["attention_mask"].to(lm.device)
    kw = {k: opts[k] for k in ("do_sample", "top_p", "top_k", "temperature") if k in opts}
    seqs = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=opts["max_new_tokens"],
                             num_return_sequences=opts["num_return_sequences"],
                             pad_token_id=tok.pad_token_id, **kw)
    width = ids.shape[1]
    gen = seqs[:, width:]
    # generated tokens count up to and including the first EOS; what follows is padding
    eos = torch.tensor(_eos_ids(lm), device=gen.device)
    is_eos = torch.isin(gen, eos) if eos.numel() else torch.zeros_like(gen, dtype=torch.bool)
    after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
    gen_mask = (~after_eos).long()
    full_mask = torch.cat([mask.repeat_interleave(opts["num_return_sequences"], 0), gen_mask], 1)
    return seqs, full_mask, width


def _eos_ids(lm: LoadedModel) -> list[int]:
    eos = lm.model.generation_config.eos_token_id
    if eos is None:
        eos = lm.tokenizer.eos_token_id
    return [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))


def _continuation(tok: Any, prompt: list[int], generated: list[int]) -> str:
    # decode prompt + continuation and cut the prompt's decoding off, so the spacing between
    # them is the tokenizer's (decoding the continuation alone drops a leading space)
    head = tok.decode(prompt, skip_special_tokens=True)
    both = tok.decode(prompt + generated, skip_special_tokens=True)
    return both[len(head):] if both.startswith(head) else tok.decode(generated, skip_special_tokens=True)


def run_generate_group(
    lm: LoadedModel,
    texts: list[str],
    layers: list[int],
    poolings: list[str],
    opts: dict[str, Any],
    *,
    first_row: int,
    batch_size: int,
    max_length: int | None,
    on_batch: Callable[[int, int], None] | None = None,
) -> GroupResult:
    """Generate for ``texts`` and pool prompt and generated tokens (rows in input order)."""
    import torch

    ids, truncated = tokenize(lm, texts, max_length)
    check_lengths(lm, texts, [x + [0] * opts["max_new_tokens"] for x in ids], max_length)
    k = opts["num_return_sequences"]
    names = generated_views(poolings)
    pooled = [p for p in poolings if p != "all"]
    views: dict[str, dict[int, list[Any]]] = {v: {L: [] for L in layers} for v in names}
    extra: dict[str, list[Any]] = {name: [] for name in GENERATE_COLUMNS}
    out_texts, num_tokens = [], []
    torch.manual_seed(int(opts["seed"]) + first_row)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = list(range(start, min(start + batch_size, len(texts))))
            seqs, mask, width = _generate(lm, [ids[i] for i in rows], opts)
            inputs = {"input_ids": seqs, "attention_mask": mask}
            if lm.accepts("position_ids"):
                inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
            hidden, _ = capture(lm, inputs, layers)
            prompt_mask, gen_mask = mask.clone(), mask.clone()
            prompt_mask[:, width:] = 0
            gen_mask[:, :width] = 0
            for L in layers:
                h = hidden[L].float()
                for p in pooled:
                    views[p][L].append(pool(h, prompt_mask, p).cpu().numpy())
                    views[f"generated_{p}"][L].append(pool(h, gen_mask, p).cpu().numpy())
                if "all" in poolings:  # every real token: the prompt's, then the continuation's
                    views["all"][L].extend(x.cpu().numpy() for x in pool(h, mask, "all"))
            for j, seq in enumerate(seqs.cpu().tolist()):
                i = rows[j // k]
                n_gen = int(gen_mask[j].sum())
                cont = _continuation(lm.tokenizer, ids[i], seq[width : width + n_gen])
                out_texts.append(texts[i] + cont)
                num_tokens.append(len(ids[i]) + n_gen)
                for key, value in zip(extra, (first_row + i, j % k, cont, len(ids[i]), n_gen)):
                    extra[key].append(value)
            if on_batch:
                on_batch(len(rows), int(mask.sum()))
    stacked = {v: {L: views[v][L] if v == "all" else np.concatenate(views[v][L]) for L in layers}
               for v in names}
    # the prompt's length is a token mask (spec section 5c), not a plain column
    masks = {"prompt_tokens": extra.pop("prompt_tokens"),
             "special_first_token": [s for s in special_first(lm, ids) for _ in range(k)]}
    return GroupResult(stacked, num_tokens, [t for t in truncated for _ in range(k)], out_texts,
                       [r - first_row for r in extra["prompt_index"]], columns=extra, masks=masks)
