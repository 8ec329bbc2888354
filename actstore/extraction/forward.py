"""Running the model over a group of prompts: length-grouped batches, pooled views, logits.

Prompts are tokenised once, sorted by length and batched, so little compute goes to
padding; results are put back in input order. For decoder models, position ids are taken
from the attention mask, so a left-padded prompt sees the same positions as when run alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .capture import capture
from .models import LoadedModel
from .pooling import pool

__all__ = ["GroupResult", "run_group"]


@dataclass
class GroupResult:
    """One group's output rows: per-view arrays in row order, and what each row records.

    ``texts[i]`` is row ``i``'s text (what the model processed) and ``source_rows[i]`` the
    position, within the group, of the prompt it came from (one row per prompt, except when
    generating several continuations); ``columns`` are index columns the run adds
    (generation's ``continuation``, ...); ``masks`` the token masks of spec section 5c
    (``prompt_tokens``, ``special_first_token``: ``DatasetWriter.add`` arguments).
    """

    views: dict[str, dict[int, Any]]
    num_tokens: list[int]
    truncated: list[bool]
    texts: list[str]
    source_rows: list[int]
    logits: tuple[np.ndarray, np.ndarray] | None = None
    perplexity: list[float] | None = None
    columns: dict[str, list[Any]] = field(default_factory=dict)
    masks: dict[str, list[Any]] = field(default_factory=dict)


def special_first(lm: LoadedModel, ids: list[list[int]]) -> list[bool]:
    """Per prompt, whether its token 0 is a special token the tokenizer added (BOS, CLS)."""
    special = set(lm.tokenizer.all_special_ids)
    return [bool(x) and x[0] in special for x in ids]


def tokenize(lm: LoadedModel, texts: list[str], max_length: int | None) -> tuple[list[list[int]], list[bool]]:
    """Token ids per prompt, truncated at ``max_length`` (each truncation is counted)."""
    full = lm.tokenizer(texts, add_special_tokens=True, return_attention_mask=False,
                        return_token_type_ids=False)["input_ids"]
    if max_length is None:
        return full, [False] * len(texts)
    truncated = [len(ids) > max_length for ids in full]
    long = [i for i, t in enumerate(truncated) if t]
    if long:
        # the tokenizer truncates the text but keeps special tokens (BERT's [SEP], ...)
        cut = lm.tokenizer([texts[i] for i in long], add_special_tokens=True, truncation=True,
                           max_length=max_length)["input_ids"]
        for i, ids in zip(long, cut):
            full[i] = ids
    return full, truncated


def model_max_length(lm: LoadedModel) -> int | None:
    """The longest input the model's position embeddings allow, when it says."""
    cfg = lm.model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            # BERT-style models offset positions by the padding index; those limits are exact
            return value
    return None


def check_lengths(lm: LoadedModel, texts: list[str], ids: list[list[int]], max_length: int | None) -> None:
    """Refuse prompts the model cannot take, naming the fix, instead of an IndexError."""
    empty = [i for i, x in enumerate(ids) if not x]
    if empty:
        raise InvalidArgumentError(
            f"The prompt {texts[empty[0]]!r} tokenises to no tokens, so it has no activations; "
            "remove it or add text."
        )
    limit = model_max_length(lm)
    longest = max(len(x) for x in ids)
    if limit is not None and longest > limit:
        row = max(range(len(ids)), key=lambda i: len(ids[i]))
        fix = f"pass max_length <= {limit} to truncate (truncated rows are flagged)"
        if max_length is not None:
            fix = f"lower max_length from {max_length} to at most {limit}"
        raise InvalidArgumentError(
            f"The prompt {texts[row][:40]!r}... has {longest} tokens but the model takes at most "
            f"{limit}; {fix}."
        )


def pad_batch(ids: list[list[int]], pad_id: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` as int64 arrays, padded on ``side``.

    Built with numpy: ``tokenizer.pad`` costs about as much as tokenising, per batch.

    Examples
    --------
    >>> pad_batch([[5, 6], [7]], 0, "left")[0].tolist()
    [[5, 6], [0, 7]]
    """
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for j, x in enumerate(ids):
        start = width - len(x) if side == "left" else 0
        input_ids[j, start : start + len(x)] = x
        mask[j, start : start + len(x)] = 1
    return input_ids, mask


def _batch_inputs(lm: LoadedModel, ids: list[list[int]]) -> dict[str, Any]:
    import torch

    tok = lm.tokenizer
    input_ids, mask = pad_batch(ids, tok.pad_token_id, tok.padding_side)
    inputs = {"input_ids": torch.from_numpy(input_ids).to(lm.device),
              "attention_mask": torch.from_numpy(mask).to(lm.device)}
    if lm.causal and lm.accepts("position_ids"):
        # positions count real tokens only, so left padding does not shift them
        inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    if lm.accepts("use_cache"):
        inputs["use_cache"] = False  # no KV cache: nothing reuses it, and it costs memory
    return inputs


def _lm_extras(lm: LoadedModel, output: Any, mask: Any, input_ids: Any, logits_k: int | None,
               perplexity: bool) -> tuple[Any, Any, list[float] | None]:
    import torch

    logits = output.logits
    last = (torch.arange(mask.shape[1], device=mask.device).expand_as(mask).masked_fill(mask == 0, -1)).amax(1)
    values = indices = None
    if logits_k:
        top = logits[torch.arange(logits.shape[0], device=logits.device), last].float().topk(logits_k, dim=-1)
        values, indices = top.values.cpu().numpy(), top.indices.cpu().numpy().astype(np.int32)
    ppl = None
    if perplexity:  # computed on the device; only one float per prompt leaves it
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        target = input_ids[:, 1:]
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        valid = (mask[:, 1:] * mask[:, :-1]).float()
        ppl = torch.exp((nll * valid).sum(1) / valid.sum(1).clamp(min=1)).cpu().tolist()
    return values, indices, ppl


def _store_pooled(hidden: dict[int, Any], mask: Any, layers: list[int], views: list[str],
                  rows: np.ndarray, out: dict[str, np.ndarray], n: int) -> None:
    """Pool every layer on the device; one device-to-host copy per view and batch."""
    import torch

    if not views:
        return
    per_view: dict[str, list[Any]] = {p: [] for p in views}
    for L in layers:
        h = hidden[L].float()  # pool in float32 whatever the model dtype
        for p in views:
            per_view[p].append(pool(h, mask, p))
    for p in views:
        got = torch.stack(per_view[p]).cpu().numpy()
        if p not in out:
            out[p] = np.empty((len(layers), n, got.shape[-1]), np.float32)
        out[p][:, rows] = got


def _store_full(hidden: dict[int, Any], mask: Any, layers: list[int], rows: np.ndarray,
                full: dict[int, list[Any]]) -> None:
    """Each row's real tokens (padding dropped), one device-to-host copy per layer and batch."""
    keep = mask.bool().cpu().numpy()
    for L in layers:
        h = hidden[L].float().cpu().numpy()
        for j, i in enumerate(rows):
            full[L][i] = h[j][keep[j]]


def run_group(
    lm: LoadedModel,
    texts: list[str],
    layers: list[int],
    poolings: list[str],
    *,
    batch_size: int,
    max_length: int | None,
    logits_k: int | None = None,
    perplexity: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> GroupResult:
    """Extract every requested view for ``texts`` (returned in input order)."""
    import torch

    ids, truncated = tokenize(lm, texts, max_length)
    check_lengths(lm, texts, ids, max_length)
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(lengths, kind="stable")
    n = len(texts)
    pooled_views = [p for p in poolings if p != "all"]
    out: dict[str, np.ndarray] = {}  # view -> (layers, n, dim), filled batch by batch
    full: dict[int, list[Any]] = {L: [None] * n for L in layers} if "all" in poolings else {}
    values = np.zeros((n, logits_k or 0), np.float32)
    indices = np.zeros((n, logits_k or 0), np.int32)
    ppl: list[float] = [float("nan")] * n
    need_head = bool(logits_k or perplexity)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            inputs = _batch_inputs(lm, [ids[i] for i in rows])
            hidden, output = capture(lm, inputs, layers, full=need_head)
            mask = inputs["attention_mask"]
            _store_pooled(hidden, mask, layers, pooled_views, rows, out, n)
            if full:
                _store_full(hidden, mask, layers, rows, full)
            if need_head:
                v, ix, pp = _lm_extras(lm, output, mask, inputs["input_ids"], logits_k, perplexity)
                if v is not None:
                    values[rows], indices[rows] = v, ix
                if pp is not None:
                    for j, i in enumerate(rows):
                        ppl[i] = pp[j]
            if on_batch:
                on_batch(len(rows), int(mask.sum()))
    stacked: dict[str, dict[int, Any]] = {p: {L: out[p][k] for k, L in enumerate(layers)} for p in out}
    if full:
        stacked["all"] = full
    # full sequences record their token masks (spec section 5c): every token is the prompt
    masks = {"prompt_tokens": lengths.tolist(), "special_first_token": special_first(lm, ids)} \
        if full else {}
    return GroupResult(stacked, lengths.tolist(), truncated, list(texts), list(range(n)),
                       (values, indices) if logits_k else None, ppl if perplexity else None,
                       masks=masks)
