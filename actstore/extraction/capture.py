"""Capturing block outputs with forward hooks, stopping after the deepest layer needed."""

from __future__ import annotations

from typing import Any

from .layers import EMBEDDINGS
from .models import LoadedModel

__all__ = ["capture"]


class _StopForward(Exception):
    """Raised from the deepest hook: the rest of the model is not run."""


def capture(lm: LoadedModel, inputs: dict[str, Any], layers: list[int], *,
            full: bool = False) -> tuple[dict[int, Any], Any]:
    """Run ``lm.model(**inputs)``; return ``({layer: hidden (B, T, D)}, model output or None)``.

    Layer ``i`` is the output of block ``i``; layer ``-1`` the input of block 0 (the
    embedding output). Unless ``full``, the forward pass stops after the deepest layer.
    The blocks are the ones ``lm`` found once (:attr:`LoadedModel.blocks`).
    """
    blocks = lm.blocks
    saved: dict[int, Any] = {}
    deepest = max(layers)
    handles = []

    def post(layer: int):
        def hook(module: Any, args: Any, output: Any) -> None:
            saved[layer] = output[0] if isinstance(output, tuple) else output
            if layer == deepest and not full:
                raise _StopForward

        return hook

    def pre(module: Any, args: Any, kwargs: Any) -> None:
        saved[EMBEDDINGS] = args[0] if args else kwargs["hidden_states"]
        if deepest == EMBEDDINGS and not full:
            raise _StopForward

    try:
        for layer in layers:
            if layer == EMBEDDINGS:
                handles.append(blocks[0].register_forward_pre_hook(pre, with_kwargs=True))
            else:
                handles.append(blocks[layer].register_forward_hook(post(layer)))
        try:
            output = lm.model(**inputs)
        except _StopForward:
            output = None
    finally:
        for h in handles:
            h.remove()
    return saved, output
