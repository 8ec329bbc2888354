"""Pooling hidden states over tokens, correct for left and right padding alike.

Every function takes ``hidden`` of shape ``(batch, seq, dim)`` and the attention mask
``(batch, seq)``; positions are found from the mask, never assumed to be 0 or ``seq - 1``.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgumentError
from ..format.spec import POOLINGS  # the one list of pooling names

__all__ = ["POOLINGS", "pool"]


def pool(hidden: Any, mask: Any, how: str) -> Any:
    """Pool one batch; ``"all"`` returns a list of ``(n_tokens_i, dim)`` tensors."""
    import torch

    m = mask.to(hidden.device).bool()
    if how == "last_token":
        # last real token: the largest position whose mask is 1
        pos = torch.arange(m.shape[1], device=m.device).expand_as(m).masked_fill(~m, -1).amax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), pos]
    if how == "first_token":
        pos = torch.arange(m.shape[1], device=m.device).expand_as(m).masked_fill(~m, m.shape[1]).amin(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), pos]
    if how == "mean":
        # masked_fill, not a multiply: padded positions may hold NaN (fully masked attention
        # rows) and NaN * 0 is NaN
        summed = hidden.masked_fill(~m.unsqueeze(-1), 0).sum(1)
        return summed / m.sum(1, keepdim=True).clamp(min=1).to(hidden.dtype)
    if how == "all":
        return [hidden[i, m[i]] for i in range(hidden.shape[0])]
    raise InvalidArgumentError(f"Unknown pooling {how!r}; expected one of {', '.join(POOLINGS)}.")
