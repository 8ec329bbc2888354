"""Layer numbering for extraction, following lmprobe: layer ``i`` is the output of block ``i``.

Negative numbers count from the end, ``"all"``, ``"middle"`` (the middle third) and
``"last"`` are accepted, duplicates are dropped. The embedding output (the input of block 0)
is asked for with the string ``"embeddings"`` and stored as layer ``-1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

from ..errors import InvalidArgumentError, LayerNotFoundError

__all__ = ["EMBEDDINGS", "resolve_model_layers"]

EMBEDDINGS = -1
LayerArg = Union[int, str, Sequence[Union[int, str]]]  # noqa: UP007


def resolve_model_layers(spec: LayerArg, num_layers: int) -> list[int]:
    """Absolute, unique, sorted-as-given block indices (``-1`` = embedding output).

    Examples
    --------
    >>> resolve_model_layers("middle", 12)
    [4, 5, 6, 7]
    >>> resolve_model_layers([4, 8, -1, 8], 12)
    [4, 8, 11]
    """
    if isinstance(spec, str) and spec in ("all", "middle", "last"):
        if spec == "all":
            return list(range(num_layers))
        if spec == "last":
            return [num_layers - 1]
        return list(range(num_layers // 3, num_layers - num_layers // 3))
    items = [spec] if isinstance(spec, (int, str)) else list(spec)
    out: list[int] = []
    for item in items:
        if item == "embeddings":
            layer = EMBEDDINGS
        elif isinstance(item, str) and item.lstrip("-").isdigit():
            layer = int(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            layer = item
        else:
            raise InvalidArgumentError(
                f"Unknown layer {item!r}; use ints (negatives count from the end), 'all', "
                "'middle', 'last' or 'embeddings'."
            )
        if item != "embeddings":
            if not -num_layers <= layer < num_layers:
                raise LayerNotFoundError(
                    f"Layer {item} is out of range for a model with {num_layers} layers "
                    f"(valid: 0..{num_layers - 1} or -{num_layers}..-1)."
                )
            layer %= num_layers
        if layer not in out:
            out.append(layer)
    if not out:
        raise InvalidArgumentError("layers is empty; name at least one layer.")
    return out
